"""Small helpers the tests share: waiting on the store, a Setvar over its own AMI session
(app.sim.client.AmiClient, which the tests also import from here), an SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from app.sim.client import AmiClient
from app.store import Publication, SnapshotStore

Snapshot = dict[str, Any]


async def wait_for_snapshot(
    store: SnapshotStore, predicate: Callable[[Snapshot], bool], timeout: float = 5.0
) -> Snapshot:
    """The first published snapshot for which `predicate` holds; fails after `timeout`."""

    async def watch() -> Snapshot:
        known: int | None = None
        while True:
            snapshot = await store.read_snapshot()
            if snapshot is not None and predicate(snapshot):
                return snapshot
            known = snapshot["version"] if snapshot else None
            await store.wait_for_version(known, poll_interval=0.01)

    try:
        return await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        last = await store.read_snapshot()
        raise AssertionError(f"no snapshot matched within {timeout}s; last: {summary(last)}") from None


def summary(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return "None"
    states = {k: v["state"] for k, v in snapshot["extensions"].items()}
    return f"version={snapshot['version']} pbx={snapshot['pbx']} states={states}"


def states_of(snapshot: Snapshot) -> dict[str, str]:
    return {v["exten"]: v["state"] for v in snapshot["extensions"].values()}


async def setvar(port: int, device: str, value: str) -> None:
    """One `Setvar DEVICE_STATE(device)` over its own AMI session, as a script would."""
    client = await AmiClient.login(port)
    try:
        await client.setvar(device, value)
    finally:
        await client.close()


@contextlib.contextmanager
def watching_logs(logger: str = "", level: int = logging.INFO) -> Iterator[LogWatch]:
    """A LogWatch on `logger` (the root by default) at `level` for the length of the block."""
    watch = LogWatch()
    target = logging.getLogger(logger)
    previous = target.level
    target.addHandler(watch)
    target.setLevel(level)
    try:
        yield watch
    finally:
        target.removeHandler(watch)
        target.setLevel(previous)


class LogWatch(logging.Handler):
    """Collects log records and lets a test await one, instead of polling with sleeps."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._new = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._new.set()

    def count(self, text: str) -> int:
        return sum(text in record.getMessage() for record in self.records)

    async def wait_for(self, text: str, count: int = 1, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.count(text) < count:
                self._new.clear()
                await self._new.wait()


class SseClient:
    """Reads Server-Sent Events over a real HTTP connection (httpx streaming)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        import httpx

        self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
        self._url, self._headers = url, headers or {}
        self._lines: Any = None
        self.response: Any = None

    async def __aenter__(self) -> SseClient:
        self._stream = self._client.stream("GET", self._url, headers=self._headers)
        self.response = await self._stream.__aenter__()
        self._lines = self.response.aiter_lines()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stream.__aexit__(*exc)
        await self._client.aclose()

    async def next(self, timeout: float = 5.0) -> dict[str, str]:
        """The next message as {"id": ..., "data": ...}; raises StopAsyncIteration at the end."""
        message: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if not line:
                    if message:
                        return message
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                message[name] = message[name] + "\n" + value if name in message else value
        raise StopAsyncIteration

    async def next_with(self, text: str, timeout: float = 5.0) -> dict[str, str]:
        """The next message whose data holds `text` (heartbeats and others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if text in message.get("data", ""):
                    return message


def tile_ids_in(html: str) -> list[str]:
    """The ids of the tiles (<article id=...>) in an HTML fragment, in order."""
    import re

    return re.findall(r'<article[^>]*\sid="([^"]+)"', html)


def named(hub: Any) -> bool:
    """The PBX's names are in (they follow the first picture, as one batch, and change
    every tile): wait for this before marking DOM nodes or counting messages."""
    return bool(hub.extensions) and all(ext.get("name") for ext in hub.extensions.values())


async def publish_to_hub(store: SnapshotStore, hub: Any, snapshot: dict[str, Any]) -> None:
    """Publish `snapshot` as the collector would and wait until `hub` has taken it in."""
    version = snapshot["version"]
    encoded = {k: json.dumps(v).encode() for k, v in snapshot["extensions"].items()}
    await store.publish(Publication(version, json.dumps(snapshot).encode(), encoded, ()))
    async with asyncio.timeout(5):
        while hub.version < version:
            await hub.head.ready.wait()


def extension_json(exten: str, state: str = "idle", **fields: Any) -> dict[str, Any]:
    """One extension as the store contract has it (app.schema.ExtensionJSON), every field
    present; `fields` override the defaults."""
    return {
        "exten": exten,
        "context": "ext-local",
        "hint": f"Custom:{exten}",
        "status": 0,
        "state": state,
        "changed_at": 1000.0,
        "version": 1,  # as the collector publishes it: the same until the state changes
        "name": "",
        "groups": [],
        "presence": None,
        "calls": [],
        "tenant": "",
        **fields,
    }

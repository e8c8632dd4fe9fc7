"""Viewers: the SSE and polling viewer protocols, held by the hundreds in client processes
(`python -m bench.fanout _viewers ...`), and the orchestrator's handle on each such process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from bench.common import ROOT, STOP_TIMEOUT, pin_to, use_uvloop
from bench.fanout.drive import Send, load_sends
from bench.fanout.report import (
    SNAPSHOT_VERSION_RE,
    Histogram,
    SendIndex,
    first_deliveries,
    first_poll_deliveries,
    snapshot_changes,
    sse_message_sends,
)

CONNECTS_IN_FLIGHT = 100  # per client process: the server's accept backlog stays short
SSE_VIEWERS_PER_CLIENT = 2500
POLL_VIEWERS_PER_CLIENT = 1500
TIMEOUT_SCALE = 1.0  # multiplies connect/report timeouts (raise on a slow machine)
CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


# --- inside a client process ---


class Shared:
    """What every viewer of one client process shares: the byte counter, whether the
    measurement window is open, and the distinct messages (bytes) seen so far."""

    def __init__(self) -> None:
        self.recording = False
        self.bytes = 0
        self.disconnects = 0
        self.errors = 0
        self.pieces: dict[bytes, int] = {}
        self.first_seen: list[float] = []
        self.bodies: dict[int, bytes] = {}
        self.version_seen: dict[int, float] = {}

    def piece_number(self, piece: bytes, now: float) -> int:
        number = self.pieces.get(piece)
        if number is None:
            number = self.pieces[piece] = len(self.first_seen)
            self.first_seen.append(now)
        return number


class Viewer(asyncio.Protocol):
    """What both kinds of viewer have: the process's `Shared`, arrival times, `ready` once
    the first message or answer is in, and how a failure or a lost connection counts."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.times = array("d")
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def _fail(self, why: str) -> None:
        self.shared.errors += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.shared.recording:
            self.shared.disconnects += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(str(exc or "closed")))


class SseViewer(Viewer):
    """One `/events` stream. Records (arrival time, message number) per SSE message; the
    bytes are matched to sends after the run, once per distinct message."""

    def __init__(self, shared: Shared, path: str = "/events") -> None:
        super().__init__(shared)
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        self.messages = array("l")
        self.in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        shared = self.shared
        if shared.recording:
            shared.bytes += len(data)
        buffer = self.buffer + data if self.buffer else data
        if not self.in_body:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 200"):
                self._fail(f"status {buffer[:12]!r}")
                return
            self.in_body = True
            buffer = buffer[end + 4 :]
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self.buffer = buffer
            return
        self.buffer = buffer[end + 2 :]
        for piece in buffer[:end].split(b"\n\n"):
            self.times.append(now)
            self.messages.append(shared.piece_number(piece, now))
        if not self.ready.done():
            self.ready.set_result(None)


class PollViewer(Viewer):
    """A page polling `/api/snapshot` every `interval` s over one keep-alive connection, on
    a fixed schedule (like setInterval; a late answer makes the next request go at once).
    Records (arrival time, snapshot version) per answer; each version's body is kept
    once per process and parsed after the run."""

    REQUEST = b"GET /api/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def __init__(self, shared: Shared, interval: float, phase: float) -> None:
        super().__init__(shared)
        self.interval = interval
        self.phase = phase
        self.versions = array("l")
        self.due = 0.0
        self.waiting = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.due = asyncio.get_running_loop().time()
        self._poll()

    def _poll(self) -> None:
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        self.waiting = True
        self.transport.write(self.REQUEST)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.shared.recording:
            self.shared.bytes += len(data)
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            match = CONTENT_LENGTH_RE.search(self.buffer, 0, end + 2)
            if match is None or not self.buffer.startswith(b"HTTP/1.1 200"):
                self._fail(f"bad answer {self.buffer[:40]!r}")
                return
            size = end + 4 + int(match.group(1))
            if len(self.buffer) < size:
                return
            body, self.buffer = self.buffer[end + 4 : size], self.buffer[size:]
            self._answered(body, now)

    def _answered(self, body: bytes, now: float) -> None:
        match = SNAPSHOT_VERSION_RE.search(body, 0, 64)
        if match is None:
            self._fail("snapshot without a version")
            return
        version = int(match.group(1))
        if version not in self.shared.bodies:
            self.shared.bodies[version] = body
            self.shared.version_seen[version] = now
        self.times.append(now)
        self.versions.append(version)
        self.waiting = False
        if not self.ready.done():
            self.ready.set_result(None)
        loop = asyncio.get_running_loop()
        if len(self.times) == 1:  # the first answer: spread the viewers over the interval
            self.due = loop.time() + self.phase
        else:
            self.due += self.interval
        self.timer = loop.call_at(max(self.due, loop.time()), self._poll)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        super().connection_lost(exc)


async def open_viewers(
    factory: Callable[[int], asyncio.Protocol], count: int, port: int, timeout: float
) -> list[Any]:
    """Open `count` viewers, CONNECTS_IN_FLIGHT at a time; a viewer counts once its first
    message (or answer) is in. Returns those that made it."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def one(number: int) -> Any:
        async with gate:
            try:
                _, viewer = await asyncio.wait_for(
                    loop.create_connection(lambda: factory(number), "127.0.0.1", port), timeout
                )
                await asyncio.wait_for(viewer.ready, timeout)  # type: ignore[attr-defined]
            except (OSError, TimeoutError, ConnectionError):
                return None
            return viewer

    opened = await asyncio.gather(*(one(number) for number in range(count)))
    return [viewer for viewer in opened if viewer is not None]


def sse_report(viewers: Sequence[SseViewer], shared: Shared, sends: Sequence[Send]) -> dict[str, Any]:
    index = SendIndex(sends)
    pieces = sorted(shared.pieces, key=shared.pieces.__getitem__)
    sends_of = sse_message_sends(pieces, shared.first_seen, index)
    firsts = [first_deliveries(v.times, v.messages, sends_of, index.times) for v in viewers]
    report = latency_report(firsts, len(index), shared)
    if index.pauses:  # --queue-rate: the pauses' own latencies beside the whole
        pauses = Histogram()
        for first in firsts:
            pauses.add_many(latency for number, latency in first.items() if number in index.pauses)
        report["pause_histogram"] = pauses.to_json()
    return report


def poll_report(viewers: Sequence[PollViewer], shared: Shared, sends: Sequence[Send]) -> dict[str, Any]:
    index = SendIndex(sends)
    changes_of = snapshot_changes(shared.bodies, shared.version_seen, index)
    return latency_report(
        (first_poll_deliveries(v.times, v.versions, changes_of, index.times) for v in viewers),
        len(index),
        shared,
    )


def latency_report(per_viewer: Iterable[dict[int, float]], sends: int, shared: Shared) -> dict[str, Any]:
    histogram = Histogram()
    viewers = lost = 0
    for first in per_viewer:
        viewers += 1
        histogram.add_many(first.values())
        lost += sends - len(first)
    return {
        "viewers": viewers,
        "histogram": histogram.to_json(),
        "lost": lost,
        "bytes": shared.bytes,
        "disconnects": shared.disconnects,
        "errors": shared.errors,
    }


async def viewer_process(args: argparse.Namespace) -> None:
    """A client process: open the viewers, say `ready`, then obey `start`, `stop` and
    `report FILE` on stdin (FILE holds the sends), answering on stdout."""
    shared = Shared()
    rng = random.Random(args.seed)
    timeout = (30.0 + args.count / 100) * TIMEOUT_SCALE
    if args.mode == "sse":
        # With --tokens, viewer n streams through the nth signed link in turn (--scopes K).
        paths = [f"/events?token={token}" for token in args.token_list] or ["/events"]
        viewers = await open_viewers(
            lambda n: SseViewer(shared, paths[n % len(paths)]), args.count, args.port, timeout
        )
    else:
        interval = args.poll_interval
        viewers = await open_viewers(
            lambda _n: PollViewer(shared, interval, rng.uniform(0, interval)), args.count, args.port, timeout
        )
    say(f"ready {len(viewers)} {args.count - len(viewers)}")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        command, _, argument = line.partition(" ")
        if command == "start":
            shared.recording = True
        elif command == "stop":
            shared.recording = False
            for viewer in viewers:
                viewer.transport.abort()
        elif command == "report":
            sends = load_sends(Path(argument))
            report = (
                sse_report(viewers, shared, sends)
                if args.mode == "sse"
                else poll_report(viewers, shared, sends)
            )
            say(json.dumps(report))
            return


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def viewer_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout _viewers")
    parser.add_argument("--mode", choices=("sse", "poll"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--tokens", help="a file of signed embed tokens, one a line (--scopes)")
    args = parser.parse_args(argv)
    args.token_list = Path(args.tokens).read_text().split() if args.tokens else []
    use_uvloop()
    asyncio.run(viewer_process(args))
    return 0


# --- the orchestrator's side ---


class ClientProcess:
    """The orchestrator's handle on one client process (its stdin and stdout)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.connected = 0
        self.failed = 0

    @classmethod
    async def start(
        cls,
        mode: str,
        port: int,
        count: int,
        seed: int,
        poll_interval: float,
        cpu: int | None,
        tokens: Path | None = None,
    ) -> ClientProcess:
        argv = [sys.executable, "-m", "bench.fanout", "_viewers", "--mode", mode, "--port", str(port)]
        argv += ["--count", str(count), "--seed", str(seed), "--poll-interval", str(poll_interval)]
        argv += ["--tokens", str(tokens)] if tokens else []
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,  # where `bench` is a package, whatever the orchestrator's directory
            start_new_session=True,
            preexec_fn=None if cpu is None else pin_to(cpu),
            limit=64 * 1024 * 1024,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self, timeout: float) -> None:
        line = await self._line(timeout)
        word, connected, failed = line.split()
        if word != "ready":
            raise RuntimeError(f"client process said {line!r}")
        self.connected, self.failed = int(connected), int(failed)

    async def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def report(self, sends_file: Path, timeout: float) -> dict[str, Any]:
        await self.tell(f"report {sends_file}")
        return json.loads(await self._line(timeout))

    async def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"client process {self.pid} ended (exit {await self.process.wait()})")
        return line.decode().strip()

    async def stop(self) -> None:
        """End of stdin ends the process; SIGTERM, then SIGKILL, to its group if it lingers."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        for signum in (None, signal.SIGTERM, signal.SIGKILL):
            if signum is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signum)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT / 2)
                return

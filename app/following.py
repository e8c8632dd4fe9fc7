"""The hub's reading side: follow the store's version, hand what is new to the hub, and
tell viewers when the store or the collector is lost. One of these per process (the hub's
`run`), however many viewers: the store sees one reader per web process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from app.schema import ChangesJSON, SnapshotJSON
from app.store import StoreError

if TYPE_CHECKING:
    from app.hub import Hub

log = logging.getLogger("app.hub")

STORE_RETRY = 1.0  # seconds between reads while the store is unreachable


async def run(hub: Hub) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(follow(hub), name="hub-follow")
        group.create_task(beat(hub), name="hub-heartbeat")
        if hub.check_collector:
            group.create_task(watch_collector(hub), name="hub-collector-check")


async def follow(hub: Hub) -> None:
    known: int | None = None
    first = True
    while True:
        try:
            if not first:
                await hub.store.wait_for_version(known, hub.poll_interval)
            first = False
            snapshot, partial = await read_since(hub, known if hub.store_ok else None)
        except StoreError as error:
            hub.store_failed(error)
            await asyncio.sleep(STORE_RETRY)
            first = True
            continue
        recovered = not hub.store_ok
        hub.store_ok = True
        if snapshot is None:  # nothing published yet (or memcached lost it)
            known = None
            if recovered:
                hub.publish(hub.version, link=True, full=True)
        else:
            known = snapshot["version"]
            hub.take(snapshot, resync=recovered, partial=partial)
        hub.ready.set()


async def read_since(hub: Hub, known: int | None) -> tuple[SnapshotJSON | ChangesJSON | None, bool]:
    """What is new since `known`: the small `changes` key when it covers everything since
    then (True), else the whole snapshot (False), whose JSON costs about 1 ms per 300
    extensions to decode: too much to read on every change."""
    if known is not None:
        changes = await hub.store.read_changes()
        if (
            changes is not None
            and int(changes.get("version", 0)) > known
            and int(changes.get("since", known + 1)) <= known
            and int(changes.get("whole_at", known + 1)) <= known
        ):
            return cast(ChangesJSON, changes), True
    return cast(SnapshotJSON | None, await hub.store.read_snapshot()), False


async def beat(hub: Hub) -> None:
    """Re-send the link banner now and then: it keeps proxies from cutting idle streams
    and restarts the page's CSS watchdog (a veil after silence)."""
    while True:
        await asyncio.sleep(hub.heartbeat)
        hub.publish(hub.version, heartbeat=True)


async def watch_collector(hub: Hub) -> None:
    """With a shared store, someone must hold the collector lease; if nobody does, the
    states stop moving and viewers must be told."""
    while True:
        await asyncio.sleep(max(hub.heartbeat / 2, 0.5))
        try:
            holder = await hub.store.lease.holder()
        except StoreError:
            continue  # follow() reports the store itself
        if (holder is not None) != hub.collector_ok:
            hub.collector_ok = holder is not None
            log.log(
                logging.INFO if hub.collector_ok else logging.ERROR,
                "collector %s",
                "running again" if hub.collector_ok else "not running",
            )
            hub.publish(hub.version, link=True)

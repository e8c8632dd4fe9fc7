"""Wiring settings into running parts: the store, the demo PBX and the collector.

Shared by the CLI and the web app so both start the same things the same way.
Every part lives inside an async context manager and is stopped when it exits; the
simulator (`app.sim`) is imported only here, and only when the demo PBX is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from app.ami import AmiTarget
from app.collector import Collector
from app.directory import DirectoryFile
from app.metrics import Metrics
from app.schema import clean_text
from app.settings import Settings, parse_extension_range
from app.store import SnapshotStore, StoreError, open_store
from app.tasks import Health, background, supervise

if TYPE_CHECKING:
    from app.action_session import ActionSession
    from app.sim import Simulator

log = logging.getLogger(__name__)


def store_from(settings: Settings) -> SnapshotStore:
    return open_store(settings.memcached_url, settings.store_prefix, settings.store_timeout)


def ami_target(settings: Settings, *, host: str | None = None, port: int | None = None) -> AmiTarget:
    return AmiTarget(
        host=host or settings.ami_host,
        port=port or settings.ami_port,
        username=settings.ami_username,
        secret=settings.ami_secret,
        events=settings.ami_events,
        ping_interval=settings.ami_ping_interval,
        ping_timeout=settings.ami_ping_timeout,
        reconnect_max=settings.ami_reconnect_max,
        auth_retry=settings.ami_auth_retry,
        boot_wait=settings.ami_boot_wait,
    )


DEMO_DIRECTORY = Path(__file__).parent / "demo-directory.csv"
# The secret of the demo PBX's manager user for the panel's actions when AMI_ACTION_SECRET sets
# none: made up once per process, the one that starts the demo PBX and acts on it.
_DEMO_ACTION_SECRET = secrets.token_urlsafe(18)


def directory_path(settings: Settings) -> Path | None:
    """DIRECTORY_FILE; the demo PBX brings its own groups so the demo shows them."""
    if settings.directory_file:
        return Path(settings.directory_file)
    return DEMO_DIRECTORY if settings.demo else None


@contextlib.asynccontextmanager
async def demo_pbx(settings: Settings) -> AsyncIterator[Simulator]:
    """The built-in simulator on a free loopback port, with churn, for the demo. Its manager
    users: the collector's (AMI_USERNAME) and the actions' (AMI_ACTION_USERNAME) with the
    write classes the README names."""
    from app.actions import WRITE_CLASSES  # the demo only, as the simulator
    from app.sim import Simulator  # the demo only: production never loads the simulator
    from app.sim.churn import demo_queues
    from app.sim.users import ManagerUser

    actions = ManagerUser(
        settings.ami_action_username, demo_action_secret(settings), read="none", write=WRITE_CLASSES
    )
    simulator = Simulator(
        parse_extension_range(settings.demo_extensions),
        host="127.0.0.1",
        port=0,
        username=settings.ami_username,
        secret=settings.ami_secret,
        churn=settings.demo_churn,
        # One named like the collector's would replace it: then the actions log in as that one.
        users=[actions] if actions.username.lower() != settings.ami_username.lower() else [],
    )
    if settings.demo_churn > 0:  # a still demo (the tests' fixed picture) has no queues
        demo_queues(simulator)
    await simulator.start()
    log.info("demo PBX (simulator) listening on 127.0.0.1:%d", simulator.port)
    try:
        yield simulator
    finally:
        await simulator.stop()


def demo_action_secret(settings: Settings) -> str:
    """The secret the panel's actions log in with on the demo PBX."""
    if settings.ami_action_username.lower() == settings.ami_username.lower():
        return settings.ami_secret
    return settings.ami_action_secret or _DEMO_ACTION_SECRET


@contextlib.asynccontextmanager
async def running_collector(
    settings: Settings,
    store: SnapshotStore,
    health: Health | None = None,
    metrics: Metrics | None = None,
    action_session: ActionSession | None = None,
) -> AsyncIterator[Collector]:
    """The collector as a supervised task, against the real PBX or the demo one: if it
    fails it starts again (a fresh login and full picture) and `health` says so meanwhile.
    `action_session` (ACTIONS=on) acts on the demo PBX once it listens."""
    async with contextlib.AsyncExitStack() as stack:
        target = ami_target(settings)
        if settings.demo:
            simulator = await stack.enter_async_context(demo_pbx(settings))
            target = ami_target(settings, host="127.0.0.1", port=simulator.port)
            if action_session is not None:
                action_session.reach("127.0.0.1", simulator.port, demo_action_secret(settings))
        collector = Collector(
            target,
            store,
            publish_window=settings.publish_window,
            directory=DirectoryFile(directory_path(settings), settings.tenant_from_context),
            show_numbers=settings.show_caller_numbers,
            metrics=metrics,
        )
        run = supervise("collector", collector.run, health or Health())
        await stack.enter_async_context(background(run, "collector-supervisor"))
        yield collector


def lease_owner() -> str:
    """An id for this process in the collector lease: host, pid and a random part."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "_", socket.gethostname())[:60] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"


async def lead_or_follow(
    settings: Settings,
    store: SnapshotStore,
    owner: str,
    health: Health | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Run the collector only while this process holds the lease in the shared store, so
    however many workers and hosts serve viewers, the PBX sees one AMI session. When the
    holder dies its lease expires and another process takes over (and resyncs).

    It says what it waits for, once each time that changes (not once per try): the store
    unreachable and back, the lease held by another process (named), the lease taken."""
    renew = max(settings.lease_ttl / 4, 0.5)
    metrics = metrics or Metrics()
    unreachable = False  # the store did not answer our last try
    waiting_for: str | None = None  # the other holder we said we wait for

    async def lease(holding: bool) -> bool:
        nonlocal unreachable, waiting_for
        try:
            holder = await _try_lease(store, owner, settings.lease_ttl)
        except StoreError as error:
            log.debug("collector lease: %s", error)
            # While the store is unreachable nobody can take the lease from us, so a holder
            # keeps collecting (into memory) and a follower keeps waiting.
            if not unreachable and holding:
                log.warning("store unreachable (%s); keeping the collector lease meanwhile", error)
            elif not unreachable:
                log.error("store unreachable (%s); no collector (no AMI login) here until it is back", error)
            unreachable = True
            return holding
        if unreachable:
            log.info("store reachable again for the collector lease")
            unreachable = False
        if holder == owner:
            waiting_for = None
            return True
        log.debug("collector lease held by %s", holder)
        if holder is not None and holder != waiting_for:
            found = re.fullmatch(r"(.+):([0-9]+):[0-9a-f]+", holder)
            who = f"process {found[2]} on {found[1]}" if found else "another process"
            log.info("waiting for the collector lease: %s holds it (%s)", who, holder)
            waiting_for = holder
        return False

    try:
        while True:
            if await lease(holding=False):
                log.info("holding the collector lease as %s", owner)
                metrics.lease_held.set(1)
                try:
                    async with running_collector(settings, store, health, metrics):
                        while True:  # renew well before the lease expires
                            await asyncio.sleep(renew)
                            if not await lease(holding=True):
                                break
                finally:
                    metrics.lease_held.set(0)
                log.warning("lost the collector lease; collector stopped here")
            await asyncio.sleep(renew)
    finally:
        with contextlib.suppress(StoreError, OSError, asyncio.CancelledError):
            async with asyncio.timeout(1.0):
                await store.lease.release(owner)


async def _try_lease(store: SnapshotStore, owner: str, ttl: int) -> str | None:
    """Take or renew the lease; who holds it now: `owner` if we do, None if nobody does (it
    lapsed between the two calls). StoreError when the store does not answer. The holder's
    id comes from the store: cleaned before it reaches a log line."""
    if await store.lease.acquire(owner, ttl):
        return owner
    holder = await store.lease.holder()
    return None if holder is None else clean_text(holder, 128)

"""Wiring settings into running parts: the demo PBX, the supervised collector, the lease;
and the simulator kept out of the production path."""

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.runtime import DEMO_DIRECTORY, directory_path, lead_or_follow, running_collector
from app.settings import Settings, load_settings
from app.sim import Simulator
from app.store import MemoryStore
from app.store.memcached import MemcachedStore
from tests.helpers import LogWatch, wait_for_snapshot, watching_logs

ROOT = Path(__file__).resolve().parent.parent


def settings_of(**values: str) -> Settings:
    return load_settings(environ={"LOG_LEVEL": "INFO", **values}, env_file=None)


def test_the_production_path_never_imports_the_simulator() -> None:
    """A fresh interpreter, as a web worker or `blf-panel collect` starts: the simulator
    (a third of the code) is loaded only where the demo PBX is asked for."""
    code = (
        "import sys, app.main, app.collector, app.cli, app.runtime, app.hub, app.sse\n"
        "app.main.create_app(app.settings.load_settings(environ={'AMI_HOST': 'pbx'}, env_file=None))\n"
        "loaded = sorted(m for m in sys.modules if m == 'app.sim' or m.startswith('app.sim.'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported by the production path: {result.stdout}"


def test_the_demo_brings_its_groups_and_a_directory_file_wins(tmp_path: Path) -> None:
    assert directory_path(settings_of()) == DEMO_DIRECTORY
    assert directory_path(settings_of(AMI_HOST="pbx")) is None
    mine = tmp_path / "directory.csv"
    assert directory_path(settings_of(DIRECTORY_FILE=str(mine))) == mine


async def test_the_demo_runs_the_simulator_and_the_collector_and_stops_both() -> None:
    store = MemoryStore()
    settings = settings_of(DEMO_EXTENSIONS="100-104", DEMO_CHURN="0")
    async with running_collector(settings, store) as collector:
        snapshot = await wait_for_snapshot(
            store, lambda s: s["pbx"]["connected"] and len(s["extensions"]) == 5
        )
        assert sorted(e["exten"] for e in snapshot["extensions"].values()) == [
            "100",
            "101",
            "102",
            "103",
            "104",
        ]
        port = collector.target.port
    with pytest.raises(OSError):  # the demo PBX stopped with the block
        await asyncio.open_connection("127.0.0.1", port)


async def test_one_of_two_processes_holds_the_lease_and_the_other_takes_over() -> None:
    """However many workers, the PBX sees one AMI session; when the holder goes, another
    process takes the lease and logs in (a full resync)."""
    store = MemoryStore()
    async with Simulator([str(n) for n in range(100, 105)], port=0) as sim:
        settings = settings_of(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), LEASE_TTL="2")
        tasks = {
            owner: asyncio.create_task(lead_or_follow(settings, store, owner), name=owner)
            for owner in ("a", "b")
        }
        try:
            await wait_for_snapshot(store, lambda s: s["pbx"]["connected"])
            holder = await store.lease.holder()
            assert holder in tasks and sim.sessions == 1 and sim.logins == 1
            tasks[holder].cancel()  # the holder goes away (and gives the lease up)
            await asyncio.gather(tasks[holder], return_exceptions=True)
            await wait_for_snapshot(store, lambda s: sim.logins == 2 and s["pbx"]["connected"], timeout=10)
            assert await store.lease.holder() == ({"a", "b"} - {holder}).pop()
            assert sim.peak_sessions == 1, "never two collectors logged in at once"
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)


# --- the lease loop says what it waits for (one line per change, not per try) ---


@pytest.fixture
def lease_log() -> Iterator[LogWatch]:
    """The lease loop's lines, DEBUG included: each try leaves a debug line, so a test can
    await a number of tries instead of sleeping."""
    with watching_logs("app.runtime", logging.DEBUG) as watch:
        yield watch


def said(watch: LogWatch, text: str, level: int = logging.INFO) -> list[str]:
    """The lines at `level` or above holding `text`."""
    return [r.getMessage() for r in watch.records if r.levelno >= level and text in r.getMessage()]


@pytest.fixture
async def lease_store(memcached) -> AsyncIterator[MemcachedStore]:
    store = MemcachedStore(memcached.host, memcached.port, prefix="lease:", timeout=0.5)
    try:
        yield store
    finally:
        await store.close()


async def test_the_lease_loop_says_once_that_the_store_is_gone_and_once_that_it_is_back(
    memcached, lease_store: MemcachedStore, lease_log: LogWatch
) -> None:
    """`blf-panel collect` with memcached unreachable printed nothing and never logged in:
    now one error line per outage (not one per try), one when it is back, then the lease."""
    memcached.stop()
    async with Simulator(["100", "101"], port=0) as sim:
        settings = settings_of(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), LEASE_TTL="2")
        task = asyncio.create_task(lead_or_follow(settings, lease_store, "here:1:abc"), name="lease")
        try:
            await lease_log.wait_for("collector lease: memcached at", count=3)  # three tries
            (line,) = said(lease_log, "store unreachable", logging.ERROR)
            assert f"127.0.0.1:{memcached.port}" in line and "no AMI login" in line
            assert sim.logins == 0
            memcached.start()
            await lease_log.wait_for("holding the collector lease as here:1:abc")
            assert len(said(lease_log, "store reachable again")) == 1
            await wait_for_snapshot(lease_store, lambda s: s["pbx"]["connected"] and sim.logins == 1)

            # The holder: the same, and it keeps the lease (nobody can take it meanwhile).
            memcached.stop()
            await lease_log.wait_for("collector lease: memcached at", count=6)
            (line,) = said(lease_log, "keeping the collector lease", logging.WARNING)
            memcached.start()
            await lease_log.wait_for("store reachable again", count=2)
            assert len(said(lease_log, "store unreachable", logging.WARNING)) == 2, "one per outage"
            assert not said(lease_log, "lost the collector lease") and sim.logins == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_follower_names_the_holder_once_and_says_when_it_takes_over(
    lease_store: MemcachedStore, lease_log: LogWatch
) -> None:
    other = "pbx-web2:4242:a1b2c3"
    assert await lease_store.lease.acquire(other, 30)
    async with Simulator(["100", "101"], port=0) as sim:
        settings = settings_of(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), LEASE_TTL="2")
        task = asyncio.create_task(lead_or_follow(settings, lease_store, "here:1:abc"), name="lease")
        try:
            await lease_log.wait_for(f"collector lease held by {other}", count=3)  # three tries
            (line,) = said(lease_log, "waiting for the collector lease")
            assert "process 4242 on pbx-web2" in line and other in line
            assert sim.logins == 0 and not said(lease_log, "holding")
            await lease_store.lease.release(other)  # the holder goes
            await lease_log.wait_for("holding the collector lease as here:1:abc")
            await wait_for_snapshot(lease_store, lambda s: s["pbx"]["connected"] and sim.logins == 1)
            assert len(said(lease_log, "waiting for the collector lease")) == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

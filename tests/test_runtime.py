"""Wiring settings into running parts: the demo PBX, the supervised collector, the lease;
and the simulator kept out of the production path."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from app.runtime import DEMO_DIRECTORY, directory_path, lead_or_follow, running_collector
from app.settings import Settings, load_settings
from app.sim import Simulator
from app.store import MemoryStore
from tests.helpers import wait_for_snapshot

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

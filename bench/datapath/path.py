"""The data path under test: memcached, then a fresh simulator and collector for each figure or
load, each pinned to its CPU; and the collector's CPU use, against that of its core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.sim.client import SECRET, USERNAME
from bench.common import (
    PREFIX,
    START_TIMEOUT,
    Child,
    Children,
    Memcache,
    app_cli,
    busy_seconds,
    cpu_seconds,
    cpu_times,
    free_port,
    memcached_argv,
    wait_for_port,
)

CONTEXT = "ext-local"
FIRST_EXTEN, LAST_EXTEN = 100, 149
EXTENSIONS = f"{FIRST_EXTEN}-{LAST_EXTEN}"
COLLECTOR_CPU, OTHERS_CPU = 0, 1  # the collector gets CPU 0; everything else, this included, CPU 1


@dataclass(frozen=True)
class CpuSample:
    """The collector's CPU time and the busy time of its core, at one instant."""

    at: float
    collector: float
    core: float

    @classmethod
    def take(cls, collector_pid: int) -> CpuSample:
        core = busy_seconds(cpu_times(COLLECTOR_CPU))
        return cls(time.perf_counter(), cpu_seconds(collector_pid), core)


def cpu_use(start: CpuSample, end: CpuSample) -> tuple[float, float]:
    """(collector CPU, other processes on its core), in % of that core, between two samples."""
    wall = end.at - start.at
    collector = end.collector - start.collector
    others = end.core - start.core - collector
    return 100 * collector / wall, max(0.0, 100 * others / wall)


async def read_snapshot(mc: Memcache) -> dict[str, Any] | None:
    """The snapshot JSON; plain when its first byte is `{`, else zlib-compressed."""
    raw = await mc.get(f"{PREFIX}snapshot")
    if raw is None:
        return None
    return json.loads(raw if raw[:1] == b"{" else zlib.decompress(raw))


def simulator_argv(port: int, churn: float) -> list[str]:
    argv = app_cli("simulate", "--port", str(port), "--extensions", EXTENSIONS)
    return argv + ["--churn", f"{churn:g}"] if churn else argv


def collector_env(ami_port: int, memcached_port: int, window: float) -> dict[str, str]:
    return {
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(ami_port),
        "AMI_USERNAME": USERNAME,
        "AMI_SECRET": SECRET,
        "MEMCACHED_URL": f"memcached://127.0.0.1:{memcached_port}",
        "STORE_PREFIX": PREFIX,
        "PUBLISH_WINDOW": f"{window:g}",
        "LOG_LEVEL": "INFO",
    }


async def wait_for_collector(child: Child, mc: Memcache) -> None:
    """Until the snapshot says the PBX is connected and holds every extension."""
    expected = LAST_EXTEN - FIRST_EXTEN + 1
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            child.check_alive()
            snapshot = await read_snapshot(mc)
            if snapshot and snapshot["pbx"]["connected"] and len(snapshot["extensions"]) == expected:
                return
            await asyncio.sleep(0.02)


@dataclass
class DataPath:
    """memcached and a connection to it; a simulator and a collector come and go on it."""

    children: Children
    memcached_port: int
    mc: Memcache
    window: float

    @contextlib.asynccontextmanager
    async def pbx_and_collector(self, churn: float) -> AsyncIterator[tuple[Child, Child, int]]:
        """A fresh store, simulator and collector, once the collector has synced; yields
        (simulator, collector, AMI port) and stops both at the end."""
        await self.mc.flush_all()
        ami_port = free_port()
        simulator = self.children.start("simulator", simulator_argv(ami_port, churn), cpu=OTHERS_CPU)
        try:
            await wait_for_port(simulator, ami_port)
            collector = self.children.start(
                "collector",
                app_cli("collect"),
                cpu=COLLECTOR_CPU,
                env=collector_env(ami_port, self.memcached_port, self.window),
            )
            try:
                await wait_for_collector(collector, self.mc)
                yield simulator, collector, ami_port
                collector.check_alive()
                simulator.check_alive()
            finally:
                self.children.stop(collector)
        finally:
            self.children.stop(simulator)


@contextlib.asynccontextmanager
async def running_memcached(children: Children, window: float) -> AsyncIterator[DataPath]:
    port = free_port()
    child = children.start("memcached", memcached_argv(port), cpu=OTHERS_CPU)
    try:
        await wait_for_port(child, port)
        mc = await Memcache.connect(port)
        try:
            yield DataPath(children, port, mc, window)
        finally:
            await mc.close()
    finally:
        children.stop(child)

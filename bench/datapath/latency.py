"""Figure 1: Setvar -> snapshot latency. One Setvar at a time over its own AMI session, each
timed from its write to the first version poll whose snapshot shows the extension's new state.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.sim.client import AmiClient, device_state
from bench.common import Memcache
from bench.datapath.path import CONTEXT, FIRST_EXTEN, LAST_EXTEN, CpuSample, DataPath, cpu_use, read_snapshot

SAMPLE_TIMEOUT = 2.0  # seconds one Setvar may take to show in the snapshot


@dataclass
class LatencyResult:
    count: int
    timeouts: int
    poll_interval_ms: float  # asked for
    poll_period_ms: float  # measured: mean time from one version poll to the next (the resolution)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    collector_cpu_percent: float
    others_on_collector_core_percent: float  # CPU 0 busy with anything but the collector
    samples_ms: list[float] = field(repr=False)


async def wait_for_state(
    mc: Memcache, key: str, state: str, version: int | None, interval: float
) -> tuple[float, int | None, int]:
    """Poll the version every `interval` s and read the snapshot when it changes, until the
    snapshot shows `key` in `state`. Returns (perf_counter of the poll that saw that
    version, the version, the number of polls)."""
    polls = 0
    async with asyncio.timeout(SAMPLE_TIMEOUT):
        while True:
            seen = await mc.version()
            at = time.perf_counter()
            polls += 1
            if seen != version:
                version = seen
                snapshot = await read_snapshot(mc)
                if snapshot and snapshot["extensions"].get(key, {}).get("state") == state:
                    return at, version, polls
            await asyncio.sleep(interval)


async def time_setvar(
    ami: AmiClient, mc: Memcache, exten: int, busy: bool, version: int | None, interval: float
) -> tuple[float | None, int | None, int]:
    """Set one device busy or idle and wait until the snapshot shows it. Returns (ms from
    writing the Setvar to the poll that saw it, or None after SAMPLE_TIMEOUT; the version
    seen last; polls made)."""
    value, state = ("INUSE", "inuse") if busy else ("NOT_INUSE", "idle")
    sent = time.perf_counter()
    action_id = ami.send("Setvar", **device_state(f"Custom:{exten}", value))
    ms: float | None
    try:
        seen_at, version, polls = await wait_for_state(mc, f"{exten}@{CONTEXT}", state, version, interval)
        ms = (seen_at - sent) * 1000
    except TimeoutError:
        ms, version, polls = None, await mc.version(), 0
    reply = await ami.reply(action_id)
    if reply.get("Response") != "Success":
        raise RuntimeError(f"Setvar refused: {reply}")
    return ms, version, polls


async def measure_latency(path: DataPath, count: int, interval: float, rng: random.Random) -> LatencyResult:
    """`count` Setvars, one at a time, 20-80 ms apart; each timed until the snapshot shows it."""
    samples: list[float] = []
    timeouts = polls = 0
    busy: dict[int, bool] = {}  # exten -> INUSE now; all start NOT_INUSE
    async with path.pbx_and_collector(churn=0) as (_, collector, ami_port):
        ami = await AmiClient.login(ami_port, events=False, timeout=SAMPLE_TIMEOUT)
        try:
            version = await path.mc.version()
            started = CpuSample.take(collector.pid)
            for _ in range(count):
                exten = rng.randint(FIRST_EXTEN, LAST_EXTEN)
                busy[exten] = not busy.get(exten, False)
                ms, version, n = await time_setvar(ami, path.mc, exten, busy[exten], version, interval)
                if ms is None:
                    timeouts += 1
                else:
                    samples.append(ms)
                    polls += n
                await asyncio.sleep(rng.uniform(0.020, 0.080))
            collector_cpu, others = cpu_use(started, CpuSample.take(collector.pid))
        finally:
            await ami.close()
    if not samples:
        raise RuntimeError("no Setvar ever showed in the snapshot")
    pct = percentiles(samples)
    return LatencyResult(
        count=len(samples),
        timeouts=timeouts,
        poll_interval_ms=interval * 1000,
        poll_period_ms=round(sum(samples) / polls, 3),
        p50_ms=pct[50],
        p90_ms=pct[90],
        p99_ms=pct[99],
        max_ms=round(max(samples), 3),
        min_ms=round(min(samples), 3),
        collector_cpu_percent=round(collector_cpu, 1),
        others_on_collector_core_percent=round(others, 1),
        samples_ms=[round(s, 3) for s in samples],
    )


def percentiles(values: Sequence[float]) -> dict[int, float]:
    """p50/p90/p99, interpolated between the closest ranks."""
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {p: round(cuts[p - 1], 3) for p in (50, 90, 99)}

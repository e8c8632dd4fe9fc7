"""Figure 2: collector capacity. For each load (the simulator's churn, or a Setvar flood) a fresh
simulator and collector; a listener counts the events sent, `ss` the bytes the collector read,
/proc its CPU time over a window.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from app.sim.client import AmiClient, device_state, encode
from bench.common import Child, Memcache, busy_seconds, cpu_seconds, cpu_times
from bench.datapath.path import FIRST_EXTEN, LAST_EXTEN, OTHERS_CPU, CpuSample, DataPath, cpu_use

WARMUP = 1.0  # seconds of load before a capacity window starts
SATURATED_CPU = 90.0  # collector CPU % of one core from which it counts as saturated
BEHIND_BYTES = 256 * 1024  # unread AMI bytes at the end of a window: the collector fell behind
CONTENDED_CPU = 10.0  # % of the collector's core other processes took: that point is not clean


# --- counting what an AMI connection receives ---


class Occurrences:
    """How often a byte pattern occurs in a stream fed in chunks (also across chunks)."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.count = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        self.count += data.count(self.pattern)
        self._tail = data[1 - len(self.pattern) :]  # too short to hold a whole match


@dataclass
class FrameTally:
    """What an AMI connection has received so far."""

    events: int = 0
    changes: int = 0  # DeviceStateChange events: one per device state change
    received_bytes: int = 0
    errors: int = 0  # `Response: Error` replies


async def count_frames(ami: AmiClient, tally: FrameTally) -> None:
    """Keep `tally` up to date with what arrives on `ami`, until cancelled or EOF. Counting
    substrings, not parsing frames, keeps this cheap next to the simulator it shares a core with."""
    events, changes = Occurrences(b"Event: "), Occurrences(b"Event: DeviceStateChange")
    errors = Occurrences(b"Response: Error")
    while chunk := await ami.reader.read(1 << 16):
        for occurrences in (events, changes, errors):
            occurrences.feed(chunk)
        tally.events, tally.changes, tally.errors = events.count, changes.count, errors.count
        tally.received_bytes += len(chunk)


@contextlib.asynccontextmanager
async def in_background(coroutine: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """`coroutine` runs as a task for the length of the block, and is cancelled at its end."""
    task = asyncio.create_task(coroutine, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task


@contextlib.asynccontextmanager
async def counting(ami: AmiClient) -> AsyncIterator[FrameTally]:
    """A tally of `ami`'s frames, kept by a task for the length of the block."""
    tally = FrameTally()
    async with in_background(count_frames(ami, tally), "count-ami-frames"):
        yield tally


# --- the collector's AMI socket, seen from the kernel ---


@dataclass(frozen=True)
class SocketBytes:
    """The collector's AMI socket: bytes it has read, and bytes waiting to be read."""

    read: int
    backlog: int


def ami_socket_bytes(pid: int, ami_port: int) -> SocketBytes | None:
    """From `ss -i` (tcp_info): bytes_received minus the receive queue = bytes the process
    has read. None when `ss` is missing or the socket is not found."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(
        ["ss", "-tinpOH", "dst", f"127.0.0.1:{ami_port}"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout
    for line in out.splitlines():
        received = re.search(r"\bbytes_received:(\d+)", line)
        if f"pid={pid}," in line and received is not None:
            backlog = int(line.split()[1])  # State, Recv-Q, Send-Q, ...
            return SocketBytes(read=int(received.group(1)) - backlog, backlog=backlog)
    return None


# --- the loads ---


@dataclass(frozen=True)
class Load:
    """What changes the device states: the simulator's own `--churn`, or a flood of Setvars
    from this benchmark ("setvar"), which reaches rates churn's millisecond timers cannot."""

    kind: str  # "churn" or "setvar"
    rate: float  # device state changes per second asked for

    def __str__(self) -> str:
        return f"{self.kind} {self.rate:g}/s"


def setvar_frames() -> dict[tuple[int, bool], bytes]:
    """The Setvar that makes each extension busy (True) or idle (False), encoded once."""
    return {
        (exten, busy): encode("Setvar", **device_state(f"Custom:{exten}", "INUSE" if busy else "NOT_INUSE"))
        for exten in range(FIRST_EXTEN, LAST_EXTEN + 1)
        for busy in (False, True)
    }


async def drive_setvars(ami: AmiClient, rate: float, rng: random.Random) -> None:
    """Setvars that each flip one device, paced at `rate` a second until cancelled. At most
    10 ms' worth go out at once, so a simulator that falls behind is not buried later."""
    frames = setvar_frames()
    busy = dict.fromkeys(range(FIRST_EXTEN, LAST_EXTEN + 1), False)
    burst = max(1, int(rate / 100))
    start, sent = time.perf_counter(), 0
    while True:
        due = int((time.perf_counter() - start) * rate)
        batch = []
        for _ in range(due - max(sent, due - burst)):
            exten = rng.randint(FIRST_EXTEN, LAST_EXTEN)
            busy[exten] = not busy[exten]
            batch.append(frames[exten, busy[exten]])
        sent = due
        ami.writer.write(b"".join(batch))
        await ami.writer.drain()
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def applying(load: Load, ami_port: int, rng: random.Random) -> AsyncIterator[FrameTally]:
    """Apply `load` for the block (churn runs by itself); yields the tally of Setvar replies."""
    if load.kind == "churn":
        yield FrameTally()
        return
    ami = await AmiClient.login(ami_port, events=False)
    try:
        async with counting(ami) as replies, in_background(drive_setvars(ami, load.rate, rng), "setvars"):
            yield replies
    finally:
        await ami.close()


# --- one capacity point ---


@dataclass(frozen=True)
class Reading:
    """Counters at one end of a capacity window."""

    cpu: CpuSample
    simulator_cpu: float
    load_core_busy: float  # CPU 1: simulator, memcached, this benchmark
    tally: FrameTally
    version: int
    socket: SocketBytes | None


@dataclass
class CapacityPoint:
    load: str  # "churn" or "setvar"
    rate_requested: float  # changes/s asked for
    seconds: float
    changes_per_s: float  # device state changes the simulator made
    events_per_s: float  # AMI events the simulator sent (counted by a listener)
    handled_events_per_s: float  # events the collector read off its AMI socket
    cpu_percent: float  # collector CPU time / wall time, % of one core
    events_per_cpu_second: float  # handled events / collector CPU seconds
    versions_per_s: float
    changes_per_version: float
    others_on_collector_core_percent: float  # CPU 0 busy with anything but the collector
    load_core_busy_percent: float  # CPU 1 (simulator, memcached, benchmark) busy
    simulator_cpu_percent: float
    backlog_end_bytes: int | None  # unread AMI bytes in the collector's socket at the end
    saturated: bool
    contended: bool  # other processes took a good part of the collector's core
    trouble: list[str]


async def read_counters(
    collector: Child, simulator: Child, mc: Memcache, tally: FrameTally, ami_port: int
) -> Reading:
    return Reading(
        cpu=CpuSample.take(collector.pid),
        simulator_cpu=cpu_seconds(simulator.pid),
        load_core_busy=busy_seconds(cpu_times(OTHERS_CPU)),
        tally=FrameTally(**asdict(tally)),
        version=await mc.version() or 0,
        socket=ami_socket_bytes(collector.pid, ami_port),
    )


def capacity_point(load: Load, start: Reading, end: Reading, trouble: list[str]) -> CapacityPoint:
    """Rates over one window, from the counters at its two ends. The collector's handled
    events are the bytes it read off its AMI socket over the listener's bytes per event
    (both connections get the same events); without `ss`, the events sent."""
    wall = end.cpu.at - start.cpu.at
    events = end.tally.events - start.tally.events
    changes = end.tally.changes - start.tally.changes
    bytes_per_event = (end.tally.received_bytes - start.tally.received_bytes) / max(events, 1)
    handled = float(events)
    if start.socket and end.socket:
        handled = (end.socket.read - start.socket.read) / bytes_per_event
    cpu = end.cpu.collector - start.cpu.collector
    cpu_percent, others_percent = cpu_use(start.cpu, end.cpu)
    versions = end.version - start.version
    backlog = end.socket.backlog if end.socket else None
    return CapacityPoint(
        load=load.kind,
        rate_requested=load.rate,
        seconds=round(wall, 3),
        changes_per_s=round(changes / wall, 1),
        events_per_s=round(events / wall, 1),
        handled_events_per_s=round(handled / wall, 1),
        cpu_percent=round(cpu_percent, 1),
        events_per_cpu_second=round(handled / cpu) if cpu > 0 else 0.0,
        versions_per_s=round(versions / wall, 1),
        changes_per_version=round(changes / versions, 2) if versions else 0.0,
        others_on_collector_core_percent=round(others_percent, 1),
        load_core_busy_percent=round(100 * (end.load_core_busy - start.load_core_busy) / wall, 1),
        simulator_cpu_percent=round(100 * (end.simulator_cpu - start.simulator_cpu) / wall, 1),
        backlog_end_bytes=backlog,
        saturated=cpu_percent >= SATURATED_CPU or (backlog or 0) > BEHIND_BYTES,
        contended=others_percent >= CONTENDED_CPU,
        trouble=trouble,
    )


async def measure_capacity(path: DataPath, load: Load, seconds: float, rng: random.Random) -> CapacityPoint:
    """One load on a fresh simulator and collector: WARMUP s, then a `seconds` window."""
    churn = load.rate if load.kind == "churn" else 0.0
    async with path.pbx_and_collector(churn) as (simulator, collector, ami_port):
        listener = await AmiClient.login(ami_port, events=True)
        try:
            async with counting(listener) as tally, applying(load, ami_port, rng) as replies:
                await asyncio.sleep(WARMUP)
                start = await read_counters(collector, simulator, path.mc, tally, ami_port)
                await asyncio.sleep(seconds)
                end = await read_counters(collector, simulator, path.mc, tally, ami_port)
        finally:
            await listener.close()
    trouble = collector.trouble() + simulator.trouble()
    if replies.errors:
        trouble.append(f"{replies.errors} Setvars refused")
    return capacity_point(load, start, end, trouble)


def saturation(points: Sequence[CapacityPoint]) -> dict[str, Any]:
    """The lowest event rate at which the collector's core is ~full (or it fell behind);
    else what one core would handle, from the events per CPU-second of the point closest to
    saturation (the highest collector CPU %): a low rate would mostly measure per-batch costs."""
    by_rate = sorted(points, key=lambda p: p.handled_events_per_s)
    for point in by_rate:
        if point.saturated:
            return {
                "reached": True,
                "load": f"{point.load} {point.rate_requested:g}/s",
                "events_per_s": point.handled_events_per_s,
                "cpu_percent": point.cpu_percent,
                "events_per_cpu_second": point.events_per_cpu_second,
            }
    top = max(points, key=lambda p: p.cpu_percent)
    return {
        "reached": False,
        "load": f"{top.load} {top.rate_requested:g}/s",
        "events_per_s": top.handled_events_per_s,
        "cpu_percent": top.cpu_percent,
        "load_core_busy_percent": top.load_core_busy_percent,
        "contended": top.contended,
        "one_core_estimate_events_per_s": top.events_per_cpu_second,
    }

"""Benchmark of the blf-panel data path: PBX (simulator) -> collector -> memcached.

Two figures, each from real processes talking over loopback TCP:

1. Setvar -> snapshot latency: the time from writing one `Setvar DEVICE_STATE(...)` to the
   simulator until memcached's snapshot shows that extension in its new state.
2. Collector capacity: AMI events per second the collector handles, its CPU use on its
   own pinned core, and the events it handles per CPU-second, at several load rates.

Run from the project root:  .venv/bin/python bench/datapath.py [--quick] [--json OUT]
bench/README.md says what each figure means and how it is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "bench:"
CONTEXT = "ext-local"
FIRST_EXTEN, LAST_EXTEN = 100, 149
EXTENSIONS = f"{FIRST_EXTEN}-{LAST_EXTEN}"
AMI_USER, AMI_SECRET = "blf", "blfsecret"
COLLECTOR_CPU, OTHERS_CPU = 0, 1  # the collector gets CPU 0; everything else, this included, CPU 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

START_TIMEOUT = 15.0  # seconds a process may take to come up (and the collector to sync)
STOP_TIMEOUT = 5.0  # seconds after SIGTERM before SIGKILL
SAMPLE_TIMEOUT = 2.0  # seconds one Setvar may take to show in the snapshot
WARMUP = 1.0  # seconds of load before a capacity window starts
SATURATED_CPU = 90.0  # collector CPU % of one core from which it counts as saturated
BEHIND_BYTES = 256 * 1024  # unread AMI bytes at the end of a window: the collector fell behind
CONTENDED_CPU = 10.0  # % of the collector's core other processes took: that point is not clean
TROUBLE = re.compile(r"lost|dropping|unreachable|Traceback|ERROR")


# --- processes ---


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def core_busy_seconds(cpu: int) -> float:
    """Time one CPU spent on anything but idle and iowait (any process, IRQs), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                user, nice, system, idle, iowait, irq, softirq = map(int, line.split()[1:8])
                return (user + nice + system + irq + softirq) / CLK_TCK
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


@dataclass(frozen=True)
class CpuSample:
    """The collector's CPU time and the busy time of its core, at one instant."""

    at: float
    collector: float
    core: float

    @classmethod
    def take(cls, collector_pid: int) -> CpuSample:
        return cls(time.perf_counter(), cpu_seconds(collector_pid), core_busy_seconds(COLLECTOR_CPU))


def cpu_use(start: CpuSample, end: CpuSample) -> tuple[float, float]:
    """(collector CPU, other processes on its core), in % of that core, between two samples."""
    wall = end.at - start.at
    collector = end.collector - start.collector
    others = end.core - start.core - collector
    return 100 * collector / wall, max(0.0, 100 * others / wall)


@dataclass
class Child:
    """A process the benchmark started, with its stdout and stderr in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def trouble(self) -> list[str]:
        """Log lines that say the AMI link or the store had a problem."""
        return [line for line in self.log.read_text(errors="replace").splitlines() if TROUBLE.search(line)]


class Children:
    """Every process the benchmark started. Each runs in its own session, so a Ctrl-C
    reaches only the benchmark, which then stops them; `stop_all` runs in a `finally`."""

    def __init__(self, log_dir: Path, pin: bool) -> None:
        self._log_dir = log_dir
        self._pin = pin
        self._running: list[Child] = []

    def start(
        self, name: str, argv: Sequence[str], *, cpu: int, env: Mapping[str, str] | None = None
    ) -> Child:
        log = self._log_dir / f"{name}-{time.monotonic_ns()}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        child = Child(name, popen, log)
        self._running.append(child)
        if self._pin:
            os.sched_setaffinity(popen.pid, {cpu})
        return child

    def stop(self, child: Child) -> None:
        """SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT."""
        if child in self._running:
            self._running.remove(child)
        if child.popen.poll() is None:
            child.popen.terminate()
            try:
                child.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait()

    def stop_all(self) -> None:
        for child in reversed(list(self._running)):  # stop() removes from the list
            self.stop(child)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM to the benchmark unwinds like Ctrl-C, so every child is stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- memcached and AMI: raw clients ---


async def open_tcp(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


class Memcache:
    """Just enough of the memcached text protocol: get and flush_all, one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Memcache:
        return cls(*await open_tcp(port))

    async def get(self, key: str) -> bytes | None:
        self._writer.write(f"get {key}\r\n".encode("ascii"))
        header = await self._reader.readline()
        if header == b"END\r\n":
            return None
        parts = header.split()
        if len(parts) < 4 or parts[0] != b"VALUE":
            raise RuntimeError(f"memcached answered {header!r} to get {key}")
        data = await self._reader.readexactly(int(parts[3]) + 2)
        if await self._reader.readline() != b"END\r\n":
            raise RuntimeError(f"memcached reply to get {key} lacks END")
        return data[:-2]

    async def version(self) -> int | None:
        raw = await self.get(f"{PREFIX}version")
        return None if raw is None else int(raw)

    async def snapshot(self) -> dict[str, Any] | None:
        """The snapshot JSON; plain when its first byte is `{`, else zlib-compressed."""
        raw = await self.get(f"{PREFIX}snapshot")
        if raw is None:
            return None
        return json.loads(raw if raw[:1] == b"{" else zlib.decompress(raw))

    async def flush_all(self) -> None:
        self._writer.write(b"flush_all\r\n")
        if await self._reader.readline() != b"OK\r\n":
            raise RuntimeError("memcached refused flush_all")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class Ami:
    """A bare AMI connection: CRLF `Key: Value` lines, a blank line ends a frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._ids = 0

    @classmethod
    async def login(cls, port: int, *, events: bool) -> Ami:
        ami = cls(*await open_tcp(port))
        await asyncio.wait_for(ami.reader.readline(), START_TIMEOUT)  # the banner
        ami.send("Login", Username=AMI_USER, Secret=AMI_SECRET, Events="on" if events else "off")
        reply = await ami.reply()
        if reply.get("Response") != "Success":
            raise RuntimeError(f"AMI login refused: {reply}")
        return ami

    def send(self, action: str, **fields: str) -> None:
        """Write one action with a fresh ActionID; `reply` reads its answer."""
        self._ids += 1
        lines = [f"Action: {action}", f"ActionID: bench-{self._ids}"]
        lines += [f"{key}: {value}" for key, value in fields.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def reply(self) -> dict[str, str]:
        """The answer to the last action sent (frames before it are skipped)."""
        while True:
            raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), SAMPLE_TIMEOUT)
            frame = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line)
            if frame.get("ActionID") == f"bench-{self._ids}":
                return frame

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


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


async def count_frames(ami: Ami, tally: FrameTally) -> None:
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
async def counting(ami: Ami) -> AsyncIterator[FrameTally]:
    """A tally of `ami`'s frames, kept by a task for the length of the block."""
    tally = FrameTally()
    task = asyncio.create_task(count_frames(ami, tally))
    try:
        yield tally
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task


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


# --- starting the data path ---


def memcached_argv(port: int) -> list[str]:
    return ["memcached", "-u", "nobody", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]


def simulator_argv(port: int, churn: float) -> list[str]:
    argv = [sys.executable, "-m", "app.cli", "simulate", "--port", str(port), "--extensions", EXTENSIONS]
    return argv + ["--churn", f"{churn:g}"] if churn else argv


def collector_env(ami_port: int, memcached_port: int, window: float) -> dict[str, str]:
    return {
        **os.environ,
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(ami_port),
        "AMI_USERNAME": AMI_USER,
        "AMI_SECRET": AMI_SECRET,
        "MEMCACHED_URL": f"memcached://127.0.0.1:{memcached_port}",
        "STORE_PREFIX": PREFIX,
        "PUBLISH_WINDOW": f"{window:g}",
        "LOG_LEVEL": "INFO",
    }


async def wait_for_port(child: Child, port: int) -> None:
    """Until `port` accepts a connection; fails if the process dies first."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            child.check_alive()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return


async def wait_for_collector(child: Child, mc: Memcache) -> None:
    """Until the snapshot says the PBX is connected and holds every extension."""
    expected = LAST_EXTEN - FIRST_EXTEN + 1
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            child.check_alive()
            snapshot = await mc.snapshot()
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
                [sys.executable, "-m", "app.cli", "collect"],
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


# --- figure 1: Setvar -> snapshot latency ---


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
                snapshot = await mc.snapshot()
                if snapshot and snapshot["extensions"].get(key, {}).get("state") == state:
                    return at, version, polls
            await asyncio.sleep(interval)


async def time_setvar(
    ami: Ami, mc: Memcache, exten: int, busy: bool, version: int | None, interval: float
) -> tuple[float | None, int | None, int]:
    """Set one device busy or idle and wait until the snapshot shows it. Returns (ms from
    writing the Setvar to the poll that saw it, or None after SAMPLE_TIMEOUT; the version
    seen last; polls made)."""
    value, state = ("INUSE", "inuse") if busy else ("NOT_INUSE", "idle")
    sent = time.perf_counter()
    ami.send("Setvar", Variable=f"DEVICE_STATE(Custom:{exten})", Value=value)
    ms: float | None
    try:
        seen_at, version, polls = await wait_for_state(mc, f"{exten}@{CONTEXT}", state, version, interval)
        ms = (seen_at - sent) * 1000
    except TimeoutError:
        ms, version, polls = None, await mc.version(), 0
    reply = await ami.reply()
    if reply.get("Response") != "Success":
        raise RuntimeError(f"Setvar refused: {reply}")
    return ms, version, polls


async def measure_latency(path: DataPath, count: int, interval: float, rng: random.Random) -> LatencyResult:
    """`count` Setvars, one at a time, 20-80 ms apart; each timed until the snapshot shows it."""
    samples: list[float] = []
    timeouts = polls = 0
    busy: dict[int, bool] = {}  # exten -> INUSE now; all start NOT_INUSE
    async with path.pbx_and_collector(churn=0) as (_, collector, ami_port):
        ami = await Ami.login(ami_port, events=False)
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


# --- figure 2: collector capacity ---


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
        (exten, busy): (
            f"Action: Setvar\r\nVariable: DEVICE_STATE(Custom:{exten})\r\n"
            f"Value: {'INUSE' if busy else 'NOT_INUSE'}\r\n\r\n"
        ).encode()
        for exten in range(FIRST_EXTEN, LAST_EXTEN + 1)
        for busy in (False, True)
    }


async def drive_setvars(ami: Ami, rate: float, rng: random.Random) -> None:
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
    ami = await Ami.login(ami_port, events=False)
    try:
        async with counting(ami) as replies:
            driver = asyncio.create_task(drive_setvars(ami, load.rate, rng))
            try:
                yield replies
            finally:
                driver.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await driver
    finally:
        await ami.close()


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
        load_core_busy=core_busy_seconds(OTHERS_CPU),
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
        listener = await Ami.login(ami_port, events=True)
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


# --- report ---


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memcached = subprocess.run(["memcached", "-V"], capture_output=True, text=True, check=False).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "memcached": memcached.strip(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def print_latency(result: LatencyResult, window: float) -> None:
    print(f"\nSetvar -> snapshot latency (PUBLISH_WINDOW {window * 1000:g} ms)")
    print(
        f"  {result.count} samples, {result.timeouts} timeouts; version polled every "
        f"{result.poll_interval_ms:g} ms, {result.poll_period_ms:.2f} ms measured (the resolution)"
    )
    print(
        f"  p50 {result.p50_ms:.1f} ms   p90 {result.p90_ms:.1f} ms   p99 {result.p99_ms:.1f} ms   "
        f"max {result.max_ms:.1f} ms   (min {result.min_ms:.1f} ms)"
    )
    print(
        f"  collector CPU {result.collector_cpu_percent:.1f} %; other processes used "
        f"{result.others_on_collector_core_percent:.1f} % of its core meanwhile"
    )


def print_capacity(points: Sequence[CapacityPoint], sat: dict[str, Any]) -> None:
    print(f"\nCollector capacity (collector alone on CPU {COLLECTOR_CPU}; rates per second)")
    print(
        f"{'load':>13} {'changes':>8} {'events':>7} {'handled':>8} {'CPU %':>6} {'ev/CPU-s':>9} "
        f"{'versions':>9} {'chg/ver':>8} {'others %':>9} {'load CPU %':>10} {'backlog':>8}"
    )
    for p in points:
        backlog = "?" if p.backlog_end_bytes is None else f"{p.backlog_end_bytes / 1024:.0f}K"
        print(
            f"{p.load + ' ' + format(p.rate_requested, 'g'):>13} {p.changes_per_s:>8.0f} "
            f"{p.events_per_s:>7.0f} {p.handled_events_per_s:>8.0f} {p.cpu_percent:>6.1f} "
            f"{p.events_per_cpu_second:>9.0f} {p.versions_per_s:>9.1f} {p.changes_per_version:>8.1f} "
            f"{p.others_on_collector_core_percent:>9.1f} {p.load_core_busy_percent:>10.1f} {backlog:>8}"
            + ("  saturated" if p.saturated else "")
            + ("  contended" if p.contended else "")
        )
        for line in p.trouble[:3]:
            print(f"{'':>13} log: {line[:140]}")
    print(
        f"  others %: CPU {COLLECTOR_CPU} time used by other processes; "
        f"load CPU %: CPU {OTHERS_CPU} (simulator, memcached, this benchmark);\n"
        f"  contended: others took >= {CONTENDED_CPU:g} % of the collector's core, so it batched more"
    )
    if sat["reached"]:
        print(
            f"  saturation: {sat['events_per_s']:.0f} events/s at {sat['cpu_percent']:.0f} % of the "
            f"collector's core ({sat['load']}); {sat['events_per_cpu_second']:.0f} events per CPU-second"
        )
    else:
        print(
            f"  saturation not reached; closest: {sat['events_per_s']:.0f} events/s took "
            f"{sat['cpu_percent']:.0f} % of the collector's core ({sat['load']}, load core "
            f"{sat['load_core_busy_percent']:.0f} % busy{', contended' if sat['contended'] else ''}): "
            f"one core would handle about {sat['one_core_estimate_events_per_s']:.0f} events/s"
        )


# --- main ---


@dataclass(frozen=True)
class Config:
    samples: int
    poll_interval: float
    window: float
    loads: list[Load]
    seconds: float
    seed: int | None
    pin: bool


def rate_list(text: str) -> list[float]:
    return [float(rate) for rate in text.split(",") if rate.strip()]


def parse_args(argv: Sequence[str] | None) -> tuple[Config, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--samples", type=int, default=200, help="Setvars to time (200)")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="version poll interval, ms (1)")
    parser.add_argument("--window", type=float, default=0.02, help="collector PUBLISH_WINDOW, s (0.02)")
    parser.add_argument(
        "--rates",
        type=rate_list,
        default="100,400,1000,2000",
        help="simulator --churn rates, changes/s (100,400,1000,2000)",
    )
    parser.add_argument(
        "--setvar-rates",
        type=rate_list,
        default="4000,8000,16000",
        help="Setvar flood rates, changes/s, past what churn reaches (4000,8000,16000; '' for none)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each capacity window (10)")
    parser.add_argument("--seed", type=int, help="seed of the Setvar sequences")
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.seconds, args.rates, args.setvar_rates = 20, 2.0, [1000.0], [8000.0]
    loads = [Load("churn", rate) for rate in args.rates]
    loads += [Load("setvar", rate) for rate in args.setvar_rates]
    config = Config(
        samples=args.samples,
        poll_interval=args.poll_ms / 1000,
        window=args.window,
        loads=loads,
        seconds=args.seconds,
        seed=args.seed,
        pin=len(os.sched_getaffinity(0)) >= 2 and {COLLECTOR_CPU, OTHERS_CPU} <= os.sched_getaffinity(0),
    )
    return config, args.json


async def run(config: Config, children: Children) -> dict[str, Any]:
    """Both figures, one after the other, on one memcached."""
    rng = random.Random(config.seed)
    async with running_memcached(children, config.window) as path:
        latency = await measure_latency(path, config.samples, config.poll_interval, rng)
        print_latency(latency, config.window)
        points = []
        for load in config.loads:
            points.append(await measure_capacity(path, load, config.seconds, rng))
            print(f"  {load} measured", file=sys.stderr)
    figures: dict[str, Any] = {"latency": asdict(latency), "capacity": [asdict(p) for p in points]}
    if points:
        figures["saturation"] = saturation(points)
        print_capacity(points, figures["saturation"])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    config, json_out = parse_args(argv)
    if shutil.which("memcached") is None:
        print("datapath: memcached is not installed", file=sys.stderr)
        return 2
    if config.pin:
        os.sched_setaffinity(0, {OTHERS_CPU})  # keep this process off the collector's core
    else:
        print("fewer than 2 CPUs: nothing pinned, CPU % is shared with the load", file=sys.stderr)
    info = machine_info()
    load = " ".join(info["loadavg_at_start"])
    print(f"{info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}, load average {load}")
    with tempfile.TemporaryDirectory(prefix="blf-bench-") as logs, terminate_as_interrupt():
        children = Children(Path(logs), pin=config.pin)
        try:
            figures = asyncio.run(run(config, children))
        except KeyboardInterrupt:
            print("datapath: interrupted; every process it started is stopped", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
    if json_out is not None:
        report = {"machine": info, "config": asdict(config), **figures}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

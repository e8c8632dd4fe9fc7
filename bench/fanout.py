"""Fan-out benchmark: how fast one panel server brings a state change to N viewers, and at what cost.

Every part is a real process on loopback: memcached, the simulator (`blf-panel simulate`), the
panel (`blf-panel serve`, W workers) and client processes that hold the N viewers. The driver
sends R `Setvar DEVICE_STATE(Custom:N)` a second to the simulator over AMI on an open-loop
schedule (it never waits for deliveries) and stamps each one. For every change and every
viewer it takes the time from that Setvar to the tile's bytes arriving on `/events`
(`--mode sse`), or to the first `/api/snapshot` poll that shows it (`--mode poll`, the old
design: each viewer fetches the snapshot every second). docs/benchmarks.md has the results.

    .venv/bin/python bench/fanout.py --viewers 1000 --rate 50 --workers 1 --mode sse --json OUT
    .venv/bin/python bench/fanout.py --smoke --json OUT          # both modes, small, seconds
    .venv/bin/python bench/fanout.py --sweep --json docs/benchmarks.json --plot docs/benchmarks.png
    .venv/bin/python bench/fanout.py --table docs/benchmarks.json   # the markdown table again

Options taking a list (`--viewers 100,1000`) run every combination. Linux only (/proc).
Only the standard library is needed (uvloop is used when installed); `--plot` needs
matplotlib (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

THIS = Path(__file__).resolve()
ROOT = THIS.parent.parent
PREFIX = "bench:"
AMI_USER, AMI_SECRET = "blf", "blfsecret"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATE_CLASS = {"INUSE": "inuse", "NOT_INUSE": "idle"}  # Setvar value -> the tile's state class

START_TIMEOUT = 30.0  # seconds for memcached, the simulator and the server to come up
STOP_TIMEOUT = 8.0  # seconds after SIGTERM before SIGKILL
SETTLE = 1.0  # seconds between the last viewer connecting and the first change
SSE_DRAIN = 3.0  # seconds after the last change that deliveries may still arrive
CONNECTS_IN_FLIGHT = 100  # per client process: the server's accept backlog stays short
CLIENT_CPU_LIMIT = 0.8  # a client process busier than this (of one core) makes the run invalid
SSE_VIEWERS_PER_CLIENT = 2500
POLL_VIEWERS_PER_CLIENT = 1500
TIMEOUT_SCALE = 1.0  # multiplies connect/report timeouts (raise on a slow machine)
STORE_WATCH = 0.005  # seconds between the store watcher's reads of the version key
VERBOSE = False

Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter
TILE_RE = re.compile(rb'id="ext-([^"@]+)" class="tile state-([a-z_]+)"')
SNAPSHOT_VERSION_RE = re.compile(rb'"version":\s*(\d+)')
CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
USERS_RE = re.compile(r"(\d+) users? connected\.")
TROUBLE_RE = re.compile(r"Traceback|ERROR|CRITICAL|lost|unreachable|dropping")


# --- readings from /proc ---


def progress(message: str) -> None:
    """A time-stamped line on stderr with --verbose."""
    if VERBOSE:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (proc(5) fields 14 and 15); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, name: str) -> int:
    """A `VmHWM`/`VmRSS` line of /proc/PID/status, in kB; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (uvicorn's workers are children of `serve`)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(tree)


MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_cpu() -> dict[str, float]:
    """CPU seconds of the whole machine so far by kind (the `cpu` line of /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) / CLK_TCK for v in stat.readline().split()[1:9]]
    return dict(zip(MACHINE_FIELDS, values, strict=True))


def machine_info() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = status_kb_of_meminfo("MemTotal")
    memcached = shutil.which("memcached") or "/usr/bin/memcached"
    version = subprocess.run([memcached, "-V"], capture_output=True, text=True, check=False).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memcached": version.strip(),
        "loadavg_at_start": os.getloadavg()[0],
    }


def status_kb_of_meminfo(name: str) -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


# --- child processes ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def trouble(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if TROUBLE_RE.search(line)][:10]


class Children:
    """Processes started for one run, each in its own session; all stopped at the end."""

    def __init__(self, log_dir: Path, app_root: Path) -> None:
        self.log_dir = log_dir
        self.app_root = app_root
        self.started: list[Child] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cpu: int | None = None
    ) -> Child:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=self.app_root,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if cpu is None else _pin_to(cpu),
            )
        child = Child(name, popen, log)
        self.started.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.started):
            began = time.monotonic()
            stop_process_group(child.popen.pid, child.popen.poll)
            progress(f"{child.name} stopped in {time.monotonic() - began:.1f}s")
        for child in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(STOP_TIMEOUT)
        self.started.clear()


def stop_process_group(pid: int, poll: Callable[[], int | None]) -> None:
    """SIGTERM to the process group we created for `pid`; SIGKILL if it lingers."""
    if poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _pin_to(cpu: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, {cpu})


def python_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


async def wait_for_port(child: Child, port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        child.check_alive()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not listen on {port}:\n{child.log_tail()}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


async def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One request on its own connection: (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = await reader.read()
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def wait_until_healthy(child: Child, port: int, workers: int) -> None:
    """Every worker answers `/healthz` 200 (PBX linked, store ok, a collector running):
    several answers in a row, since each connection may land on any worker."""
    deadline = time.monotonic() + START_TIMEOUT
    good = 0
    while good < 4 * workers:
        child.check_alive()
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            status, _ = await http_get(port, "/healthz")
            good = good + 1 if status == 200 else 0
        if time.monotonic() > deadline:
            raise RuntimeError(f"the panel did not become healthy:\n{child.log_tail()}")
        await asyncio.sleep(0.05 if good else 0.2)


# --- memcached ---


MEMCACHED_OPS = (
    "cmd_get",  # one per key asked for (get/gets)
    "cmd_set",  # set, add, replace, cas, append, prepend
    "cmd_touch",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
)


async def memcached_stats(port: int) -> dict[str, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"stats\r\n")
        data = await asyncio.wait_for(reader.readuntil(b"END\r\n"), 5.0)
    finally:
        writer.close()
    stats = {}
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
            stats[parts[1]] = int(parts[2])
    return stats


def memcached_ops(stats: dict[str, int]) -> int:
    return sum(stats.get(name, 0) for name in MEMCACHED_OPS)


class StoreWatcher:
    """Reads the version key every STORE_WATCH s during the drive and each new snapshot
    once, stamping when it appeared: the PBX -> store share of the latency. Its own
    memcached operations are counted, to be left out of the server's."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ops = 0
        self.bodies: dict[int, bytes] = {}
        self.seen: dict[int, float] = {}
        self.times: list[float] = []
        self.versions: list[int] = []

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while True:
                raw = await self._get(reader, writer, f"{PREFIX}version")
                version = int(raw) if raw and raw.isdigit() else None
                if version is not None and version not in self.bodies:
                    body = await self._get(reader, writer, f"{PREFIX}snapshot")
                    if body is not None and body[:1] == b"{":
                        self._note(time.monotonic(), body)
                await asyncio.sleep(STORE_WATCH)
        finally:
            writer.close()

    def _note(self, now: float, body: bytes) -> None:
        match = SNAPSHOT_VERSION_RE.search(body, 0, 64)
        if match is None:
            return
        version = int(match.group(1))
        self.bodies.setdefault(version, body)
        self.seen.setdefault(version, now)
        self.times.append(now)
        self.versions.append(version)

    async def _get(self, reader: Reader, writer: Writer, key: str) -> bytes | None:
        self.ops += 1
        writer.write(f"get {key}\r\n".encode())
        header = await reader.readline()
        if header == b"END\r\n":
            return None
        size = int(header.split()[3])
        data = await reader.readexactly(size + 2)
        await reader.readline()  # END
        return data[:-2]

    def latencies(self, sends: Sequence[Send]) -> Histogram:
        """Setvar -> the first snapshot in the store that shows it, per send."""
        index = SendIndex(sends)
        changes_of = snapshot_changes(self.bodies, self.seen, index)
        histogram = Histogram()
        if self.times:
            first = first_poll_deliveries(self.times, self.versions, changes_of, index.times)
            histogram.add_many(first.values())
        return histogram


# --- the AMI driver ---


class AmiDriver:
    """One AMI session with events off: Setvars written without waiting, replies read by a
    task (so the socket never backs up), CLI commands answered by ActionID."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.errors = 0
        self.pending: dict[str, asyncio.Future[list[str]]] = {}
        self.task = asyncio.create_task(self._read_replies())

    @classmethod
    async def login(cls, port: int) -> AmiDriver:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(reader.readline(), 5.0)  # the banner
        driver = cls(reader, writer)
        reply = await driver.request("Login", "login", Username=AMI_USER, Secret=AMI_SECRET, Events="off")
        if "Response: Success" not in reply:
            raise RuntimeError(f"AMI login refused: {reply}")
        return driver

    def send(self, action: str, **fields: str) -> None:
        lines = [f"Action: {action}", *(f"{key}: {value}" for key, value in fields.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def setvar(self, exten: str, value: str) -> None:
        self.send("Setvar", Variable=f"DEVICE_STATE(Custom:{exten})", Value=value)

    async def request(self, action: str, action_id: str, **fields: str) -> list[str]:
        """Send an action and wait for the reply that carries its ActionID."""
        future = asyncio.get_running_loop().create_future()
        self.pending[action_id] = future
        self.send(action, ActionID=action_id, **fields)
        return await asyncio.wait_for(future, 10.0)

    async def sessions(self) -> int:
        """Logged-in AMI sessions at the PBX, as `manager show connected` counts them."""
        reply = await self.request("Command", f"show-{time.monotonic_ns()}", Command="manager show connected")
        for line in reply:
            if match := USERS_RE.search(line):
                return int(match.group(1))
        raise RuntimeError(f"no user count in the reply to `manager show connected`: {reply}")

    async def _read_replies(self) -> None:
        while True:
            frame = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = frame.split("\r\n")
            if "Response: Error" in lines:
                self.errors += 1
            action_id = next((line[10:] for line in lines if line.startswith("ActionID: ")), None)
            future = self.pending.pop(action_id, None) if action_id else None
            if future is not None and not future.done():
                future.set_result(lines)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.IncompleteReadError, ConnectionError):
            await self.task
        self.writer.close()


@dataclass(frozen=True)
class Send:
    """One state change as sent: when (time.monotonic, the same clock in every process),
    which extension, and the state class its tile must show."""

    at: float
    exten: str
    state: str


def plan_changes(extensions: Sequence[str], count: int, seed: int) -> list[tuple[str, str]]:
    """Round robin over the extensions in a shuffled order, each alternating INUSE and
    NOT_INUSE (all start idle): every Setvar is a change, and the same extension changes
    again only after all others did, so no change hides another inside a batch."""
    order = list(extensions)
    random.Random(seed).shuffle(order)
    values = ("INUSE", "NOT_INUSE")
    return [(order[i % len(order)], values[(i // len(order)) % 2]) for i in range(count)]


async def drive(driver: AmiDriver, plan: Sequence[tuple[str, str]], rate: float) -> tuple[list[Send], float]:
    """Send the plan at `rate` a second on a fixed schedule; a late Setvar goes at once and
    is stamped when it really went. Returns the sends and the worst lateness (s)."""
    start = time.monotonic() + 0.02
    sends: list[Send] = []
    worst = 0.0
    for number, (exten, value) in enumerate(plan):
        due = start + number / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        driver.setvar(exten, value)
        sends.append(Send(now, exten, STATE_CLASS[value]))
        worst = max(worst, now - due)
    return sends, worst


# --- latencies ---


class Histogram:
    """Latencies in 0.1 ms bins: exact enough percentiles for millions of samples."""

    UNIT = 1e-4

    def __init__(self) -> None:
        self.bins: Counter[int] = Counter()
        self.max = 0.0

    def add_many(self, seconds: Iterable[float]) -> None:
        values = list(seconds)
        if values:
            self.bins.update(int(v / self.UNIT) for v in values)
            self.max = max(self.max, max(values))

    @property
    def count(self) -> int:
        return sum(self.bins.values())

    def merge(self, other: dict[str, Any]) -> None:
        self.bins.update({int(k): v for k, v in other["bins"].items()})
        self.max = max(self.max, other["max"])

    def to_json(self) -> dict[str, Any]:
        return {"bins": {str(k): v for k, v in self.bins.items()}, "max": self.max}

    def percentile_ms(self, q: float) -> float | None:
        total = self.count
        if not total:
            return None
        rank = math.ceil(q / 100 * total)
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return round((key + 0.5) * self.UNIT * 1000, 1)
        return round(self.max * 1000, 1)


class SendIndex:
    """The sends by (extension, state), to tell which send a tile seen at time t shows: the
    latest one of that extension and state before t. The same extension takes the same
    state again only two rounds later (seconds), so this cannot pick a wrong one."""

    def __init__(self, sends: Sequence[Send]) -> None:
        self.times = [send.at for send in sends]
        self._by_key: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
        for number, send in enumerate(sends):
            times, numbers = self._by_key.setdefault((send.exten, send.state), ([], []))
            times.append(send.at)
            numbers.append(number)

    def __len__(self) -> int:
        return len(self.times)

    def latest_before(self, exten: str, state: str, at: float) -> int | None:
        times, numbers = self._by_key.get((exten, state), ((), ()))
        position = bisect.bisect_right(times, at)  # type: ignore[arg-type]
        return numbers[position - 1] if position else None


def sse_message_sends(
    pieces: Sequence[bytes], first_seen: Sequence[float], index: SendIndex
) -> list[list[int]]:
    """For each distinct SSE message: the sends its tiles show, judged at the moment the
    first viewer of this process got it."""
    result = []
    for piece, seen in zip(pieces, first_seen, strict=True):
        found = (index.latest_before(e.decode(), s.decode(), seen) for e, s in TILE_RE.findall(piece))
        result.append([number for number in found if number is not None])
    return result


def first_deliveries(
    times: Sequence[float],
    messages: Sequence[int],
    sends_of: Sequence[Sequence[int]],
    send_times: Sequence[float],
) -> dict[int, float]:
    """One viewer: send number -> latency (s) of the first message that showed it."""
    first: dict[int, float] = {}
    for at, message in zip(times, messages, strict=True):
        for number in sends_of[message]:
            if number not in first:
                first[number] = at - send_times[number]
    return first


def snapshot_changes(
    bodies: dict[int, bytes], first_seen: dict[int, float], index: SendIndex
) -> dict[int, list[tuple[int, int]]]:
    """For each snapshot version a viewer fetched: (change version, send) of every extension
    whose current state came from one of our sends, newest change first. A change is
    matched to its send at the moment this process first saw it."""
    parsed: dict[int, list[tuple[str, str, int]]] = {}
    for version, body in bodies.items():
        extensions = json.loads(body)["extensions"].values()
        parsed[version] = [(e["exten"], e["state"], int(e["version"])) for e in extensions]
    change_seen: dict[tuple[str, int], float] = {}
    for version in sorted(parsed, key=first_seen.__getitem__):
        for exten, _state, changed in parsed[version]:
            change_seen.setdefault((exten, changed), first_seen[version])
    result = {}
    for version, items in parsed.items():
        matched = [
            (changed, index.latest_before(exten, state, change_seen[exten, changed]))
            for exten, state, changed in items
        ]
        result[version] = sorted(((c, n) for c, n in matched if n is not None), reverse=True)
    return result


def first_poll_deliveries(
    times: Sequence[float],
    versions: Sequence[int],
    changes_of: dict[int, list[tuple[int, int]]],
    send_times: Sequence[float],
) -> dict[int, float]:
    """One polling viewer: send number -> latency (s) of the first poll that showed it. The
    first poll is the baseline (before any change); each later one shows the changes
    newer than the version of the poll before it."""
    first: dict[int, float] = {}
    previous: int | None = None
    for at, version in zip(times, versions, strict=True):
        if previous is not None and version != previous:
            for changed, number in changes_of[version]:
                if changed <= previous:
                    break
                if number not in first:
                    first[number] = at - send_times[number]
        previous = version if previous is None else max(previous, version)
    return first


# --- viewers (run inside the client processes) ---


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


class SseViewer(asyncio.Protocol):
    """One `/events` stream. Records (arrival time, message number) per SSE message; the
    bytes are matched to sends after the run, once per distinct message."""

    REQUEST = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.times = array("d")
        self.messages = array("l")
        self.buffer = b""
        self.in_body = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.write(self.REQUEST)

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


class PollViewer(asyncio.Protocol):
    """A page polling `/api/snapshot` every `interval` s over one keep-alive connection, on
    a fixed schedule (like setInterval; a late answer makes the next request go at once).
    Records (arrival time, snapshot version) per answer; each version's body is kept
    once per process and parsed after the run."""

    REQUEST = b"GET /api/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def __init__(self, shared: Shared, interval: float, phase: float) -> None:
        self.shared = shared
        self.interval = interval
        self.phase = phase
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.times = array("d")
        self.versions = array("l")
        self.buffer = b""
        self.due = 0.0
        self.waiting = False
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
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

    def _fail(self, why: str) -> None:
        self.shared.errors += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.shared.recording:
            self.shared.disconnects += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(str(exc or "closed")))


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
    return latency_report(
        (first_deliveries(v.times, v.messages, sends_of, index.times) for v in viewers), len(index), shared
    )


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
        viewers = await open_viewers(lambda _n: SseViewer(shared), args.count, args.port, timeout)
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


def load_sends(path: Path) -> list[Send]:
    return [Send(*item) for item in json.loads(path.read_text())]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class ClientProcess:
    """The orchestrator's handle on one client process (its stdin and stdout)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.connected = 0
        self.failed = 0

    @classmethod
    async def start(
        cls, mode: str, port: int, count: int, seed: int, poll_interval: float, cpu: int | None
    ) -> ClientProcess:
        argv = [sys.executable, str(THIS), "_viewers", "--mode", mode, "--port", str(port), "--count"]
        argv += [str(count), "--seed", str(seed), "--poll-interval", str(poll_interval)]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=None if cpu is None else _pin_to(cpu),
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


# --- one run ---


@dataclass(frozen=True)
class RunSpec:
    mode: str
    viewers: int
    rate: float
    workers: int
    seconds: float
    clients: int
    extensions: str
    poll_interval: float
    pin: bool
    seed: int
    profile_dir: Path | None = None
    server_env: tuple[tuple[str, str], ...] = ()
    label: str | None = None
    collector: str = "serve"  # "process": `blf-panel collect` alone, web workers COLLECTOR=off


@dataclass
class Readings:
    """CPU seconds per process and of the machine at one moment, plus memcached's ops."""

    at: float
    cpu: dict[int, float]
    machine: dict[str, float]
    memcached_ops: int

    @classmethod
    async def take(cls, pids: Iterable[int], memcached_port: int) -> Readings:
        ops = memcached_ops(await memcached_stats(memcached_port))
        return cls(time.monotonic(), {pid: cpu_seconds(pid) for pid in pids}, machine_cpu(), ops)


@dataclass
class Parts:
    """The processes of one run and their ports."""

    memcached: Child
    simulator: Child
    server: Child
    memcached_port: int
    ami_port: int
    web_port: int
    collector: Child | None = None  # with --collector process
    clients: list[ClientProcess] = field(default_factory=list)

    def server_pids(self) -> list[int]:
        """The serve process and everything below it: uvicorn's workers (and, with more
        than one, multiprocessing's resource tracker), and the collector when it runs alone."""
        return process_tree(self.server.pid) + ([self.collector.pid] if self.collector else [])


def extension_list(text: str) -> list[str]:
    first, _, last = text.partition("-")
    return [str(n) for n in range(int(first), int(last or first) + 1)]


async def start_parts(children: Children, spec: RunSpec) -> Parts:
    server_cpu = 0 if spec.pin else None
    memcached_port, ami_port, web_port = free_port(), free_port(), free_port()
    memcached = children.start(
        "memcached",
        [shutil.which("memcached") or "/usr/bin/memcached", "-u", "nobody", "-l", "127.0.0.1"]
        + ["-p", str(memcached_port), "-U", "0", "-m", "64", "-c", "4096"],
        cpu=server_cpu,
    )
    simulator = children.start(
        "simulator",
        python_argv("simulate", "--port", str(ami_port), "--extensions", spec.extensions),
        env={"LOG_LEVEL": "WARNING"},
        cpu=server_cpu,
    )
    await wait_for_port(memcached, memcached_port)
    await wait_for_port(simulator, ami_port)
    env = {
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(ami_port),
        "MEMCACHED_URL": f"memcached://127.0.0.1:{memcached_port}",
        "STORE_PREFIX": PREFIX,
        "LOG_LEVEL": "WARNING",
        **dict(spec.server_env),
    }
    collector = None
    if spec.collector == "process":
        collector = children.start("collector", python_argv("collect"), env=env, cpu=server_cpu)
        env["COLLECTOR"] = "off"
    argv = python_argv("serve", "--host", "127.0.0.1", "--port", str(web_port), "--workers")
    server = children.start("serve", [*argv, str(spec.workers)], env=env, cpu=server_cpu)
    await wait_until_healthy(server, web_port, spec.workers)
    return Parts(memcached, simulator, server, memcached_port, ami_port, web_port, collector)


async def start_clients(parts: Parts, spec: RunSpec) -> float:
    """Start the client processes and wait until each has its viewers; returns seconds taken."""
    began = time.monotonic()
    shares = [spec.viewers // spec.clients + (i < spec.viewers % spec.clients) for i in range(spec.clients)]
    client_cpu = 1 if spec.pin else None
    for number, share in enumerate(shares):
        client = await ClientProcess.start(
            spec.mode, parts.web_port, share, spec.seed + number, spec.poll_interval, client_cpu
        )
        parts.clients.append(client)
    timeout = (60.0 + spec.viewers / 50) * TIMEOUT_SCALE
    await asyncio.gather(*(client.wait_ready(timeout) for client in parts.clients))
    return time.monotonic() - began


def rss_kb(pids: Iterable[int], name: str = "VmRSS") -> int:
    return sum(status_kb(pid, name) for pid in pids)


@contextlib.contextmanager
def profiling(spec: RunSpec, pids: Sequence[int], seconds: float) -> Iterator[None]:
    """py-spy on every server process for the drive window, when --profile is given."""
    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if spec.profile_dir is None or py_spy is None:
        yield
        return
    spec.profile_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in pids:
        out = spec.profile_dir / f"{spec.mode}-n{spec.viewers}-r{spec.rate:g}-w{spec.workers}-{pid}.txt"
        argv = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
        argv += ["--format", "raw", "--nonblocking", "--output", str(out)]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for spy in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(seconds + 10)


async def run_one(spec: RunSpec, log_dir: Path, app_root: Path) -> dict[str, Any]:
    """Start everything, connect the viewers, drive the changes, collect the figures."""
    children = Children(log_dir, app_root)
    parts: Parts | None = None
    try:
        progress(f"{spec.mode} N={spec.viewers} R={spec.rate:g} W={spec.workers}: starting")
        parts = await start_parts(children, spec)
        progress("server healthy; connecting viewers")
        server_pids = parts.server_pids()
        rss_before = rss_kb(server_pids)
        connect_s = await start_clients(parts, spec)
        progress(f"viewers connected in {connect_s:.1f}s")
        await asyncio.sleep(SETTLE)
        rss_after = rss_kb(server_pids)
        watcher = StoreWatcher(parts.memcached_port)
        watch_task = asyncio.create_task(watcher.run())
        await asyncio.sleep(0.2)  # the watcher's baseline: the snapshot before any change
        driver = await AmiDriver.login(parts.ami_port)
        plan = plan_changes(extension_list(spec.extensions), int(spec.rate * spec.seconds), spec.seed)
        clients = [c.pid for c in parts.clients]
        watched = [*server_pids, parts.memcached.pid, parts.simulator.pid, *clients, os.getpid()]
        for client in parts.clients:
            await client.tell("start")
        before = await Readings.take(watched, parts.memcached_port)
        ops_before = watcher.ops
        with profiling(spec, server_pids, spec.seconds):
            sessions_task = asyncio.create_task(sessions_midway(driver, spec.seconds / 2))
            sends, lateness = await drive(driver, plan, spec.rate)
            after = await Readings.take(watched, parts.memcached_port)
            after.memcached_ops -= watcher.ops - ops_before
            rss_end = rss_kb(server_pids)
            ami_sessions = await sessions_task
        progress("changes sent; draining")
        await asyncio.sleep(SSE_DRAIN + (spec.poll_interval if spec.mode == "poll" else 0.0))
        peak_rss = {pid: status_kb(pid, "VmHWM") for pid in server_pids}
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, ValueError, IndexError):
            await watch_task
        for client in parts.clients:
            await client.tell("stop")
        await driver.close()
        sends_file = log_dir / "sends.json"
        sends_file.write_text(json.dumps([[s.at, s.exten, s.state] for s in sends]))
        report_timeout = (60.0 + spec.viewers * spec.rate * spec.seconds / 200_000) * TIMEOUT_SCALE
        reports = await asyncio.gather(*(c.report(sends_file, report_timeout) for c in parts.clients))
        progress("reports in; stopping")
        logs = [parts.server, parts.simulator, *([parts.collector] if parts.collector else [])]
        trouble = [f"{c.name}: {line}" for c in logs for line in c.trouble()]
        return summarize(
            spec,
            parts,
            Window(before, after, sends, lateness, driver.errors, ami_sessions, watcher.latencies(sends)),
            reports,
            Memory(rss_before, rss_after, rss_end, peak_rss),
            connect_s,
            trouble,
        )
    finally:
        if parts is not None:
            await asyncio.gather(*(client.stop() for client in parts.clients))
        children.stop_all()
        progress("stopped")


async def sessions_midway(driver: AmiDriver, delay: float) -> int:
    """AMI sessions at the PBX halfway through the drive, less the driver's own."""
    await asyncio.sleep(delay)
    return await driver.sessions() - 1


@dataclass
class Window:
    before: Readings
    after: Readings
    sends: list[Send]
    lateness: float
    setvar_errors: int
    ami_sessions: int
    store: Histogram  # Setvar -> snapshot in memcached


@dataclass
class Memory:
    rss_before_kb: int  # server, before the viewers connect
    rss_after_kb: int  # with the viewers connected
    rss_end_kb: int  # at the end of the drive
    peak_kb: dict[int, int]


def summarize(
    spec: RunSpec,
    parts: Parts,
    window: Window,
    reports: Sequence[dict[str, Any]],
    memory: Memory,
    connect_s: float,
    trouble: list[str],
) -> dict[str, Any]:
    """The run's figures, in the JSON shape of the issue plus details."""
    before, after = window.before, window.after
    span = after.at - before.at

    def cpu(pids: Iterable[int]) -> float:
        return sum(after.cpu.get(pid, 0.0) - before.cpu.get(pid, 0.0) for pid in pids)

    server_pids = [pid for pid in memory.peak_kb]
    histogram = Histogram()
    for report in reports:
        histogram.merge(report["histogram"])
    connected = sum(report["viewers"] for report in reports)
    changes = len(window.sends)
    client_cpu = [cpu([c.pid]) / span for c in parts.clients]
    machine = {kind: after.machine[kind] - before.machine[kind] for kind in MACHINE_FIELDS}
    busy = sum(machine[kind] for kind in ("user", "nice", "system", "irq", "softirq"))
    ours = cpu(after.cpu)
    viewers_bytes = sum(report["bytes"] for report in reports)
    notes = []
    if max(client_cpu) > CLIENT_CPU_LIMIT:
        notes.append(
            f"client CPU {max(client_cpu):.0%} of a core: the clients, not the server, may be the limit"
        )
    if connected < spec.viewers:
        notes.append(f"only {connected} of {spec.viewers} viewers connected")
    return {
        "mode": spec.mode,
        "viewers": spec.viewers,
        "rate": spec.rate,
        "workers": spec.workers,
        "p50_ms": histogram.percentile_ms(50),
        "p95_ms": histogram.percentile_ms(95),
        "p99_ms": histogram.percentile_ms(99),
        "max_ms": round(histogram.max * 1000, 1),
        "lost": sum(report["lost"] for report in reports),
        "server_cpu_s": round(cpu(server_pids), 2),
        "server_rss_mb": round(sum(memory.peak_kb.values()) / 1024, 1),
        "memcached_ops_per_s": round((after.memcached_ops - before.memcached_ops) / span, 1),
        "bytes_per_viewer_per_change": round(viewers_bytes / max(connected * changes, 1), 1),
        "ami_sessions": window.ami_sessions,
        "valid": not notes,
        "notes": notes,
        "seconds": round(span, 2),
        "changes": changes,
        "deliveries": histogram.count,
        "viewers_connected": connected,
        "connect_s": round(connect_s, 1),
        "server_cpu_pct": round(100 * cpu(server_pids) / span, 1),
        "server_processes": [
            {"pid": pid, "cpu_s": round(cpu([pid]), 2), "peak_rss_mb": round(kb / 1024, 1)}
            for pid, kb in memory.peak_kb.items()
        ],
        # steady state: the server's RSS at the end of the drive less before the viewers came
        "rss_per_viewer_kb": per_viewer_kb(memory.rss_end_kb - memory.rss_before_kb, connected),
        "rss_per_viewer_at_connect_kb": per_viewer_kb(memory.rss_after_kb - memory.rss_before_kb, connected),
        "clients": spec.clients,
        "client_cpu_max": round(max(client_cpu), 3),
        "client_cpu": [round(c, 3) for c in client_cpu],
        "memcached_cpu_s": round(cpu([parts.memcached.pid]), 2),
        "simulator_cpu_s": round(cpu([parts.simulator.pid]), 2),
        "machine_busy": round(busy / max(sum(machine.values()), 1e-9), 3),
        "machine_steal_pct": round(100 * machine["steal"] / span, 1),
        "machine_softirq_pct": round(100 * machine["softirq"] / span, 1),
        "others_cpu_pct": round(100 * max(busy - ours, 0.0) / span, 1),
        "store_p50_ms": window.store.percentile_ms(50),
        "store_p99_ms": window.store.percentile_ms(99),
        "rss_growth_mb": round((memory.rss_end_kb - memory.rss_after_kb) / 1024, 1),
        "send_lateness_max_ms": round(window.lateness * 1000, 1),
        "setvar_errors": window.setvar_errors,
        "disconnects": sum(report["disconnects"] for report in reports),
        "client_errors": sum(report["errors"] for report in reports),
        "poll_interval_s": spec.poll_interval if spec.mode == "poll" else None,
        "extensions": spec.extensions,
        "pinned": spec.pin,
        "server_env": dict(spec.server_env),
        "collector": spec.collector,
        "label": spec.label,
        "series": spec.label is None,
        "trouble": trouble,
    }


def stack_summary(path: Path, top: int = 25) -> str:
    """The hottest functions of a py-spy `--format raw` file: own samples and inclusive
    (the function or anything it called), in % of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r"\(\S*?(site-packages|lib/python3\.\d+)/", "(", f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{path.name}: {total} samples", "own:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def per_viewer_kb(kb: int, viewers: int) -> float:
    return round(kb / max(viewers, 1), 2)


# --- output ---


COLUMNS = (
    ("mode", "mode", "{}"),
    ("viewers", "N", "{:,}"),
    ("rate", "R/s", "{:g}"),
    ("workers", "W", "{}"),
    ("p50_ms", "p50 ms", "{:,.1f}"),
    ("p95_ms", "p95 ms", "{:,.1f}"),
    ("p99_ms", "p99 ms", "{:,.1f}"),
    ("max_ms", "max ms", "{:,.1f}"),
    ("lost", "lost", "{:,}"),
    ("server_cpu_pct", "server CPU %", "{:.0f}"),
    ("server_rss_mb", "RSS MB", "{:.0f}"),
    ("rss_per_viewer_kb", "KB/viewer", "{:.1f}"),
    ("memcached_ops_per_s", "mc ops/s", "{:,.0f}"),
    ("bytes_per_viewer_per_change", "B/viewer/chg", "{:,.0f}"),
    ("ami_sessions", "AMI", "{}"),
    ("client_cpu_max", "client CPU", "{:.0%}"),
    ("valid", "valid", "{}"),
)


# Where the time goes and what else ran: the second table of docs/benchmarks.md.
DETAIL_COLUMNS = (
    ("mode", "mode", "{}"),
    ("viewers", "N", "{:,}"),
    ("rate", "R/s", "{:g}"),
    ("workers", "W", "{}"),
    ("store_p50_ms", "store p50 ms", "{:,.1f}"),
    ("store_p99_ms", "store p99 ms", "{:,.1f}"),
    ("machine_busy", "machine busy", "{:.0%}"),
    ("machine_softirq_pct", "softirq %", "{:.1f}"),
    ("others_cpu_pct", "others %", "{:.1f}"),
    ("viewers_connected", "connected", "{:,}"),
    ("connect_s", "connect s", "{:.1f}"),
    ("rss_growth_mb", "RSS growth MB", "{:.1f}"),
    ("trouble", "trouble lines", "{}"),
)


def markdown_table(runs: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """One row per run; a first column with the label when any run has one."""
    columns = ((("label", "run", "{}"),) if any(run.get("label") for run in runs) else ()) + tuple(columns)
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" if key in ("mode", "label") else "--:" for key, _, _ in columns) + "|")
    for run in runs:
        lines.append("| " + " | ".join(cell(run.get(key), fmt) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):  # e.g. trouble: the lines, counted
        return f"{len(value):,}"
    return fmt.format(value)


def write_json(path: Path, machine: dict[str, Any], runs: list[dict[str, Any]], command: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, "command": command, "runs": runs}, indent=1) + "\n")


# --- command line ---


def number_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(item) for item in text.split(",") if item.strip()]

    return parse


SWEEP = {
    "viewers": [100, 1000, 5000, 10000],
    "rate": [10.0, 100.0],
    "workers": [1, 2],
    "mode": ["sse", "poll"],
}
SMOKE = {"viewers": [40], "rate": [10.0], "workers": [2], "mode": ["sse", "poll"], "seconds": 3.0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=number_list(int), default=[1000], help="N, or a list: 100,1000")
    parser.add_argument("--rate", type=number_list(float), default=[10.0], help="changes a second (list)")
    parser.add_argument("--workers", type=number_list(int), default=[1], help="uvicorn workers (list)")
    parser.add_argument("--mode", default="sse", help="sse, poll, or sse,poll")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the changes are driven")
    parser.add_argument("--clients", type=int, default=0, help="client processes (default: by N)")
    parser.add_argument("--extensions", default="100-399", help="the simulator's extensions, a range")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="--mode poll: seconds between polls")
    parser.add_argument("--pin", action="store_true", help="server side on CPU 0, clients on CPU 1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--append", action="store_true", help="add to the runs already in --json")
    parser.add_argument("--plot", type=Path, help="draw p99 and server CPU against N (needs matplotlib)")
    parser.add_argument("--profile", type=Path, help="py-spy (raw stacks) of the server processes into DIR")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="a setting for serve (repeat)"
    )
    parser.add_argument(
        "--collector",
        choices=("serve", "process"),
        default="serve",
        help="serve: where `blf-panel serve` runs it (its own child process with memcached); "
        "process: `blf-panel collect` started here, web workers COLLECTOR=off",
    )
    parser.add_argument("--label", help="name these runs (labelled runs stay out of the plot's lines)")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the tree whose app/ is benchmarked")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="say what happens, on stderr")
    parser.add_argument("--smoke", action="store_true", help="both modes, 40 viewers, 3 s (CI)")
    parser.add_argument("--sweep", action="store_true", help="N 100-10,000 x R 10,100 x W 1,2 x both modes")
    parser.add_argument("--table", type=Path, help="print the markdown table of a results JSON and exit")
    parser.add_argument("--stacks", type=Path, help="print the hot spots of a --profile file and exit")
    args = parser.parse_args(argv)
    args.mode = [mode.strip() for mode in args.mode.split(",")]
    preset = SMOKE if args.smoke else SWEEP if args.sweep else {}
    for key, value in preset.items():
        setattr(args, key, value)
    if any(mode not in ("sse", "poll") for mode in args.mode):
        parser.error("--mode is sse, poll or sse,poll")
    return args


def specs_from(args: argparse.Namespace) -> list[RunSpec]:
    specs = []
    for viewers, rate, workers, mode in itertools.product(args.viewers, args.rate, args.workers, args.mode):
        per_client = SSE_VIEWERS_PER_CLIENT if mode == "sse" else POLL_VIEWERS_PER_CLIENT
        clients = args.clients or max(1, math.ceil(viewers / per_client))
        spec = RunSpec(
            mode, viewers, rate, workers, args.seconds, clients, args.extensions, args.poll_interval,
            args.pin, args.seed, args.profile, server_env(args.server_env), args.label, args.collector,
        )  # fmt: skip
        specs.append(spec)
    return specs


def server_env(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs = [item.partition("=") for item in items]
    if any(not name or not sep for name, sep, _ in pairs):
        raise SystemExit("--server-env takes NAME=VALUE")
    return tuple((name, value) for name, _, value in pairs)


def print_run(run: dict[str, Any]) -> None:
    print(markdown_table([run]).splitlines()[-1], flush=True)
    for note in run["notes"] + run["trouble"]:
        print(f"    ! {note}", flush=True)


def interrupt_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


async def run_all(args: argparse.Namespace, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    machine = machine_info()
    command = "python bench/fanout.py " + " ".join(sys.argv[1:])
    runs: list[dict[str, Any]] = []
    if args.append and args.json and args.json.exists():
        runs = json.loads(args.json.read_text())["runs"]
    print(markdown_table([]), flush=True)
    for spec in specs:
        log_dir = Path(tempfile.mkdtemp(prefix="blf-fanout-"))
        try:
            run = await run_one(spec, log_dir, args.app_root.resolve())
        finally:
            if not args.keep_logs:
                shutil.rmtree(log_dir, ignore_errors=True)
        run["log_dir"] = str(log_dir) if args.keep_logs else None
        runs.append(run)
        print_run(run)
        if args.json:
            write_json(args.json, machine, runs, command)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_viewers":
        return viewer_main(sys.argv[2:])
    args = parse_args(argv)
    if args.table:
        runs = json.loads(args.table.read_text())["runs"]
        print(markdown_table(runs) + "\n\n" + markdown_table(runs, DETAIL_COLUMNS))
        return 0
    if args.stacks:
        print(stack_summary(args.stacks))
        return 0
    global VERBOSE
    VERBOSE = args.verbose
    if args.pin:
        os.sched_setaffinity(0, {1})
    interrupt_on_sigterm()
    use_uvloop()
    try:
        runs = asyncio.run(run_all(args, specs_from(args)))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    if args.plot:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import plot  # matplotlib only when a plot is asked for

        plot.draw(runs, args.plot)
    return 0


def viewer_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="fanout.py _viewers")
    parser.add_argument("--mode", choices=("sse", "poll"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    use_uvloop()
    asyncio.run(viewer_process(args))
    return 0


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    sys.exit(main())

"""What both benchmarks share: child processes on free ports and how they are stopped, CPU and
memory readings from /proc, machine info, a raw memcached client and a bare HTTP GET.
Linux only (/proc) and standard library only, like the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the project: `app` and `bench` are below it
PREFIX = "bench:"  # STORE_PREFIX of every panel and collector a benchmark starts
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0  # seconds a process may take to come up
STOP_TIMEOUT = 8.0  # seconds after SIGTERM before SIGKILL
TROUBLE_RE = re.compile(r"Traceback|ERROR|CRITICAL|lost|unreachable|dropping")
VERBOSE = False  # progress() prints; the fan-out's --verbose sets it


def progress(message: str) -> None:
    """A time-stamped line on stderr when VERBOSE."""
    if VERBOSE:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_cli(*args: str) -> list[str]:
    """The argv of `blf-panel ARGS` run from this interpreter."""
    return [sys.executable, "-m", "app.cli", *args]


def memcached_argv(port: int) -> list[str]:
    return [
        MEMCACHED,
        "-u",
        "nobody",
        "-l",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "0",
        "-m",
        "64",
        "-c",
        "4096",
    ]


# --- readings from /proc ---


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (proc(5) fields 14 and 15); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")  # any process, and IRQs


def cpu_times(cpu: int | None = None) -> dict[str, float]:
    """CPU seconds so far by kind, of the whole machine or of one CPU (/proc/stat)."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.split(maxsplit=1)[0] == name:
                values = [int(v) / CLK_TCK for v in line.split()[1:9]]
                return dict(zip(CPU_FIELDS, values, strict=True))
    raise RuntimeError(f"no {name} in /proc/stat")


def busy_seconds(times: Mapping[str, float]) -> float:
    return sum(times[kind] for kind in BUSY_FIELDS)


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


def rss_kb(pids: Iterable[int], name: str = "VmRSS") -> int:
    return sum(status_kb(pid, name) for pid in pids)


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


def machine_info() -> dict[str, Any]:
    """What the figures were taken on."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")), 0)
    version = subprocess.run([MEMCACHED, "-V"], capture_output=True, text=True, check=False).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memcached": version.strip(),
        "loadavg_at_start": os.getloadavg()[0],
    }


# --- child processes ---


@dataclass
class Child:
    """A process a benchmark started, with its stdout and stderr in a log file."""

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
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def trouble(self) -> list[str]:
        """Log lines that say the AMI link, the store or the process had a problem."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if TROUBLE_RE.search(line)][:10]


class Children:
    """Every process a benchmark started. Each runs in its own session (process group), so a
    Ctrl-C reaches only the benchmark, which then stops them, and a stop reaches a process's
    own children too (uvicorn's workers); `stop_all` runs in a `finally`. With `pin`, a
    process started with a `cpu` runs on that CPU only."""

    def __init__(self, log_dir: Path, *, cwd: Path = ROOT, pin: bool = True) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.pin = pin
        self.running: list[Child] = []
        self._started = 0

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cpu: int | None = None
    ) -> Child:
        """Start `argv` with `env` added to this process's environment."""
        self._started += 1
        log = self.log_dir / f"{self._started:02d}-{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=self.cwd,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pin_to(cpu) if self.pin and cpu is not None else None,
            )
        child = Child(name, popen, log)
        self.running.append(child)
        return child

    def stop(self, child: Child) -> None:
        """SIGTERM to its process group, then SIGKILL if it is still there after STOP_TIMEOUT."""
        if child in self.running:
            self.running.remove(child)
        if child.popen.poll() is not None:
            return
        began = time.monotonic()
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(STOP_TIMEOUT)
                break
        progress(f"{child.name} stopped in {time.monotonic() - began:.1f}s")

    def stop_all(self) -> None:
        for child in reversed(list(self.running)):  # stop() removes from the list
            self.stop(child)


def pin_to(cpu: int) -> Callable[[], None]:
    """A `preexec_fn` that puts the new process on one CPU."""
    return lambda: os.sched_setaffinity(0, {cpu})


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


def use_uvloop() -> None:
    """uvloop's event loop when it is installed (the panel runs on it too)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- talking to the processes ---


async def wait_for_port(child: Child, port: int, timeout: float = START_TIMEOUT) -> None:
    """Until `port` accepts a connection; fails if the process dies first."""
    deadline = time.monotonic() + timeout
    while True:
        child.check_alive()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not listen on {port}:\n{child.log_tail()}") from None
            await asyncio.sleep(0.02)
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


class Memcache:
    """Just enough of the memcached text protocol, one command at a time; `ops` counts the
    keys asked for, so a benchmark can leave its own reads out of the server's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.ops = 0

    @classmethod
    async def connect(cls, port: int) -> Memcache:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def get(self, key: str) -> bytes | None:
        self.ops += 1
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
        """The snapshot version a panel or collector with STORE_PREFIX=PREFIX published last."""
        raw = await self.get(f"{PREFIX}version")
        return int(raw) if raw and raw.isdigit() else None

    async def stats(self) -> dict[str, int]:
        """The numeric lines of `stats`."""
        self._writer.write(b"stats\r\n")
        data = await asyncio.wait_for(self._reader.readuntil(b"END\r\n"), 5.0)
        stats = {}
        for line in data.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
                stats[parts[1]] = int(parts[2])
        return stats

    async def flush_all(self) -> None:
        self._writer.write(b"flush_all\r\n")
        if await self._reader.readline() != b"OK\r\n":
            raise RuntimeError("memcached refused flush_all")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

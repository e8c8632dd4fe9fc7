"""Shared pytest fixtures. Keep each group of fixtures under its own heading."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import IO, Any

import pytest
import uvicorn
from sse_starlette.sse import AppStatus

from app.main import create_app
from app.settings import Settings, load_settings
from tests.helpers import LogWatch, watching_logs

# --------------------------------------------------------------------------------------
# Logs: every record at INFO and above, to await a line instead of sleeping (fixture `logs`).
# --------------------------------------------------------------------------------------


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    with watching_logs() as watch:
        yield watch


# --------------------------------------------------------------------------------------
# memcached: a real server per test (fixture `memcached`), never a fake.
#
# The store's traps (timeouts, poisoned connections, restarts) only show against the real
# thing. The binary must be installed (CI installs it): a missing binary fails the tests
# that need it instead of skipping them, so they cannot silently stop running.
# --------------------------------------------------------------------------------------

MEMCACHED_START_TIMEOUT = 10.0


class MemcachedStartError(RuntimeError):
    """memcached exited or did not answer in time; the message carries its stderr."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Memcached:
    """One memcached process on 127.0.0.1, restartable on the same port.

    `pause`/`resume` send SIGSTOP/SIGCONT: the port keeps accepting connections (the
    kernel does that) but nothing answers, like a frozen server.
    """

    host = "127.0.0.1"

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"memcached://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start memcached and return once it answers `version` (no fixed sleep)."""
        if self.running:
            raise RuntimeError("memcached is already running")
        cmd = [self.binary, "-l", self.host, "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "nobody"]  # memcached refuses to run as root otherwise
        self._stderr = tempfile.NamedTemporaryFile(prefix="memcached-", suffix=".log")
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self._paused = False
        deadline = time.monotonic() + MEMCACHED_START_TIMEOUT
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                error = MemcachedStartError(
                    f"memcached on port {self.port} did not start: {self._stderr_text()!r}"
                )
                self.stop()
                raise error
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill the process (also a paused one); its connections close at once. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # SIGKILL: nothing to save, and SIGTERM costs memcached 0.7 s (also when paused).
            proc.kill()
            proc.wait()
        self._paused = False
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def restart(self) -> None:
        """Stop and start again on the same port: every stored key is gone."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP, and return only once the process is really stopped."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        os.waitpid(self._proc.pid, os.WUNTRACED)  # a signal is asynchronous
        self._paused = True

    def resume(self) -> None:
        """SIGCONT, and return once the process runs again."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)
        os.waitpid(self._proc.pid, os.WCONTINUED)
        self._paused = False

    def stats(self) -> dict[str, str]:
        """The server's `stats` over a fresh connection of our own."""
        reply = self._roundtrip(b"stats\r\n", b"END\r\n")
        lines = reply.decode("ascii").split("\r\n")
        return {
            parts[1]: parts[2] if len(parts) > 2 else ""
            for parts in (line.split(" ", 2) for line in lines)
            if parts[0] == "STAT"
        }

    def _answers(self) -> bool:
        try:
            return self._roundtrip(b"version\r\n", b"\r\n", timeout=0.5).startswith(b"VERSION ")
        except OSError:
            return False

    def _roundtrip(self, request: bytes, end: bytes, timeout: float = 5.0) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(end):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("memcached closed the connection")
                reply += chunk
            return reply

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()


def require_binary(name: str, why: str) -> str:
    """The path of a program the tests need; fails (never skips) when it is missing, so a
    machine without it cannot pass by running fewer tests. scripts/test installs it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} not found: install it (apt-get install {name}); {why}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def memcached_binary() -> str:
    return require_binary("memcached", "the store tests need a real server")


@pytest.fixture
def memcached(memcached_binary: str) -> Iterator[Memcached]:
    """A fresh memcached for one test, stopped afterwards even if the test fails."""
    for attempt in range(3):
        server = Memcached(memcached_binary, _free_port())
        try:
            server.start()
            break
        except MemcachedStartError as exc:
            # Another process may have taken the free port before memcached bound it.
            if attempt == 2 or "in use" not in str(exc):
                raise
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------
# blf-panel processes: the CLI run as a real process (fixture `blf`), always stopped.
# --------------------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BlfProcess:
    """`python -m app.cli ARGS` with its own environment; stdout is a pipe to read from."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def readline(self, timeout: float = 10.0) -> str:
        """The next stdout line; fails after `timeout` instead of hanging."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"blf-panel {self.args}: no output within {timeout}s")
        return self.proc.stdout.readline()

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def blf() -> Iterator[Callable[..., BlfProcess]]:
    """Start blf-panel commands: `blf("collect", env={...})`; all are killed afterwards."""
    started: list[BlfProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> BlfProcess:
        process = BlfProcess(list(args), env or {})
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def free_port() -> Callable[[], int]:
    return _free_port


# --------------------------------------------------------------------------------------
# The web panel in this process: a real uvicorn on a free port (fixture `panel`).
# --------------------------------------------------------------------------------------


class PanelServer:
    """A real uvicorn.Server serving create_app(settings) on 127.0.0.1."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> PanelServer:
        AppStatus.should_exit = False  # a previous server's shutdown must not end our streams
        self.task = asyncio.create_task(self.server.serve(), name=f"uvicorn-{self.port}")
        async with asyncio.timeout(15):
            while not self.server.started:
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.01)
        return self

    async def healthy(self, timeout: float = 10.0) -> PanelServer:
        """Wait until the hub shows a connected PBX with extensions (awaits the hub's own
        updates, no polling)."""
        return await self.until(lambda hub: hub.link.ok and bool(hub.extensions), timeout)

    async def until(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> PanelServer:
        """Wait until `predicate(hub)` holds, on the hub's own updates (no polling)."""
        hub = self.app.state.hub
        async with asyncio.timeout(timeout):
            while not predicate(hub):
                await hub.head.ready.wait()
        return self

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        try:
            async with asyncio.timeout(15):
                await self.task
        finally:
            AppStatus.should_exit = False


@pytest.fixture
async def panel() -> AsyncIterator[Callable[..., Awaitable[PanelServer]]]:
    """`await panel(AMI_HOST="127.0.0.1", ...)`: settings are the defaults (not settings.env)
    plus these; the server is stopped after the test."""
    servers: list[PanelServer] = []

    async def start(**environ: str) -> PanelServer:
        settings = load_settings(environ={"LOG_LEVEL": "WARNING", **environ}, env_file=None)
        server = PanelServer(settings)
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.stop()


# --------------------------------------------------------------------------------------
# A real browser: Debian's chromium driven by Playwright (fixture `browser`).
#
# Playwright never downloads a browser here: it starts the system chromium (apt package
# `chromium`, installed by scripts/test). A missing binary fails the browser tests
# instead of skipping them, so they cannot silently stop running.
# --------------------------------------------------------------------------------------

CHROMIUM = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """A headless chromium (playwright.async_api.Browser) for one test, closed afterwards."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"chromium not found at {CHROMIUM}: install it (apt-get install chromium); "
            "the browser tests need it",
            pytrace=False,
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


# --------------------------------------------------------------------------------------
# No process left behind: the run fails if a process it started outlives it.
#
# Every process the tests start inherits RUN_MARKER through the environment (set here, at
# import, before any test starts one), and keeps it when its parent dies and it is
# reparented to init. At the end of the session (after every other fixture is torn down),
# any live process that carries this run's marker or descends from this pytest process
# counts as left behind: the check waits up to LEFTOVER_TIMEOUT for them to end (a worker
# told of its parent's death shuts down gracefully), then kills them and fails the run.
# Processes of other, concurrent runs carry other markers and are not looked at.
# --------------------------------------------------------------------------------------

RUN_MARKER_NAME = "BLF_TEST_RUN"
RUN_MARKER = f"{os.getpid()}-{os.urandom(6).hex()}"
os.environ[RUN_MARKER_NAME] = RUN_MARKER
LEFTOVER_TIMEOUT = 20.0


def _proc_read(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as file:
        return file.read()


def processes_of_this_run(marker: str = RUN_MARKER, root: int | None = None) -> dict[int, str]:
    """pid -> command line of every live process (zombies have ended) that carries `marker`
    in its environment or descends from `root` (default: this process), `root` excepted."""
    root = os.getpid() if root is None else root
    needle = f"{RUN_MARKER_NAME}={marker}".encode()
    parents: dict[int, int] = {}
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == root:
            continue
        pid = int(name)
        try:
            state, ppid = _proc_read(pid, "stat").rsplit(b")", 1)[1].split()[:2]
            if state == b"Z":
                continue
            parents[pid] = int(ppid)
            if needle in _proc_read(pid, "environ").split(b"\0"):
                found[pid] = ""
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended while we looked, or not ours to read
    for pid in parents:
        ancestor, seen = parents.get(pid), set()
        while ancestor is not None and ancestor not in seen:
            if ancestor == root:
                found[pid] = ""
                break
            seen.add(ancestor)
            ancestor = parents.get(ancestor)
    for pid in found:
        try:
            found[pid] = _proc_read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Session teardown: fails (an error at the last test's teardown) when a process this
    run started is still alive; such processes are then killed, by pid."""
    yield
    deadline = time.monotonic() + LEFTOVER_TIMEOUT
    while (left := processes_of_this_run()) and time.monotonic() < deadline:
        time.sleep(0.05)  # other processes' ends cannot be awaited: a bounded poll of /proc
    if not left:
        return
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    listing = "\n".join(f"  {pid}: {command[:300]}" for pid, command in sorted(left.items()))
    pytest.fail(
        f"{len(left)} process(es) started by this test run outlived it by {LEFTOVER_TIMEOUT:g}s "
        f"(killed now):\n{listing}",
        pytrace=False,
    )

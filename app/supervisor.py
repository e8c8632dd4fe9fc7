"""`blf-panel collect` as a child process of `blf-panel serve`, kept running.

Why: a collector inside a web worker shares that worker's event loop with the fan-out to
every viewer, and with thousands of viewers each state change waits its turn
(docs/benchmarks.md). As a process of its own next to the workers it has a loop to itself,
and it still takes the lease in memcached, so of all hosts one process holds the AMI session.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from app.metrics import forget_process

log = logging.getLogger(__name__)

COLLECT = (sys.executable, "-m", "app.cli", "collect")
# Exits that mean "asked to stop", as systemd's Restart=on-failure sees them: collect exits
# 0 on SIGINT and SIGTERM, and dies by them while it is still starting.
STOPPED_ON_PURPOSE = (0, -signal.SIGINT, -signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class CollectorProcess:
    """Runs `command` as a child process and starts it again when it dies, until `stop()`.

    A restart waits 1 s, doubling up to 10 s while the process keeps dying within `settle`
    seconds of its start. A process that was asked to stop (see STOPPED_ON_PURPOSE) is not
    restarted: Ctrl-C sends SIGINT to the whole process group and a service manager may
    signal every process of the service, so that exit means serve is stopping too.

    The child dies with this process even when it is SIGKILLed: on Linux the kernel sends it
    SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG). Every child is started
    by the supervising thread, which outlives it, so that moment is the death of serve.
    """

    def __init__(
        self,
        command: Sequence[str] = COLLECT,
        env: Mapping[str, str] | None = None,
        *,
        stop_timeout: float = 5.0,
        min_backoff: float = 1.0,
        max_backoff: float = 10.0,
        settle: float = 60.0,
    ) -> None:
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.stop_timeout = stop_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.settle = settle
        self._preexec = die_with_parent()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # `_process` is replaced by the thread, read by stop()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="collector-process", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop restarting; SIGTERM the child, SIGKILL it after `stop_timeout`, wait for it."""
        self._stopping.set()
        with self._lock:  # no new child after this: _spawn checks `_stopping` under the lock
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
        self._thread.join(self.stop_timeout)
        if process is not None and self._thread.is_alive():
            log.warning(
                "collector process %d did not stop within %gs; killing it", process.pid, self.stop_timeout
            )
            process.kill()
            self._thread.join(self.stop_timeout)

    def __enter__(self) -> CollectorProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _supervise(self) -> None:
        delay = self.min_backoff
        while not self._stopping.is_set():
            started = time.monotonic()
            process = self._spawn()
            if process is not None:  # else it could not start (logged): try again later
                code = process.wait()
                forget_process(process.pid)  # its "live" gauges (lease held) end with it
                if self._stopping.is_set():
                    return
                if code in STOPPED_ON_PURPOSE:
                    log.info("collector process %d stopped (%s); not restarting it", process.pid, _how(code))
                    return
                if time.monotonic() - started >= self.settle:
                    delay = self.min_backoff  # it ran fine for a while: a new trouble, not the same
                log.error("collector process %d %s; restarting it in %gs", process.pid, _how(code), delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.max_backoff)

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            try:
                self._process = subprocess.Popen(
                    self.command, env=self.env, stdin=subprocess.DEVNULL, preexec_fn=self._preexec
                )
            except (OSError, subprocess.SubprocessError) as error:
                log.error("cannot start the collector process: %s", error)
                return None
            log.info("collector process %d started", self._process.pid)
            return self._process


def _how(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def die_with_parent(parent: int | None = None) -> Callable[[], None] | None:
    """A function that has the kernel SIGTERM the process calling it when its parent dies
    (PR_SET_PDEATHSIG; Linux only, elsewhere None), even when the parent is SIGKILLed.

    Two uses: as the `preexec_fn` of a child this process starts (`parent` left out: this
    process), and called first thing in a child started some other way, e.g. a uvicorn
    worker (`parent`: the pid its parent had, `multiprocessing.parent_process().pid`).
    A parent that died before the call sends no signal any more: the caller then exits
    at once (status 1) instead of living on as an orphan.

    Strictly, the signal comes when the parent *thread* that started the child ends: start
    children from a thread that lives as long as the process (the main thread, or a
    supervising thread like CollectorProcess's).

    Everything is looked up here, before the call: between fork and exec a child must not
    do more than the two calls (other threads may hold locks it would wait on forever)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid() if parent is None else parent
    sigterm = int(signal.SIGTERM)

    def die_with_it() -> None:
        prctl(PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return die_with_it

"""app/supervisor.py on its own: CollectorProcess restarts a failing child with back-off,
leaves one that was asked to stop, stops it on stop(), and the kernel ends the child when
its parent dies (die_with_parent), with small Python children instead of the collector."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from app.supervisor import CollectorProcess, die_with_parent
from tests.conftest import ROOT

PYTHON = sys.executable


def child(code: str) -> list[str]:
    return [PYTHON, "-c", code]


class Log(logging.Handler):
    """The supervisor's log lines as they come, with a wait for the nth that matches."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.lines.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.matching(text)) >= count, timeout):
                raise AssertionError(f"not {count} x {text!r} within {timeout}s: {self.lines}")
            return self.matching(text)

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


@pytest.fixture
def log() -> Iterator[Log]:
    handler = Log()
    logger = logging.getLogger("app.supervisor")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def supervised() -> Iterator[Callable[..., CollectorProcess]]:
    """`supervised(command, **options)`: a started CollectorProcess, stopped afterwards."""
    started: list[CollectorProcess] = []

    def start(command: list[str], **options: float) -> CollectorProcess:
        process = CollectorProcess(command, **options)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


def running(pid: int) -> bool:
    """A zombie counts as ended (an orphan's may never be reaped here)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_ended(pid: int, timeout: float = 10.0) -> None:
    """Another process's end cannot be awaited from here: a bounded poll of /proc."""
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still runs after {timeout}s")
        time.sleep(0.02)


def pid_of(line: str) -> int:
    """The pid in `collector process 123 ...`."""
    return int(line.split("collector process ", 1)[1].split()[0])


# --- restarts --------------------------------------------------------------------------


def test_a_failing_child_is_restarted_with_doubling_backoff(supervised, log: Log) -> None:
    supervised(child("raise SystemExit(3)"), min_backoff=0.05, max_backoff=0.2, settle=60)
    restarts = log.wait_for("restarting it in", count=5)
    assert [line.rsplit(" ", 1)[1] for line in restarts[:5]] == ["0.05s", "0.1s", "0.2s", "0.2s", "0.2s"]
    assert all("exited with code 3" in line for line in restarts)
    assert len({pid_of(line) for line in restarts}) == len(restarts), "a new process each time"


def test_a_child_that_ran_a_while_restarts_after_the_shortest_wait(supervised, log: Log) -> None:
    """Dying after `settle` seconds of running is a new trouble: the back-off starts over."""
    supervised(child("raise SystemExit(1)"), min_backoff=0.05, max_backoff=0.2, settle=0)
    restarts = log.wait_for("restarting it in", count=4)
    assert {line.rsplit(" ", 1)[1] for line in restarts} == {"0.05s"}


def test_a_sigkilled_child_is_restarted(supervised, log: Log) -> None:
    supervised(child("import time; time.sleep(60)"), min_backoff=0.05)
    first = pid_of(log.wait_for("started")[0])
    os.kill(first, signal.SIGKILL)
    assert f"{first} was killed by SIGKILL" in log.wait_for("restarting it in")[0]
    second = pid_of(log.wait_for("started", count=2)[1])
    assert second != first and running(second)


@pytest.mark.parametrize(
    ("code", "how"),
    [("raise SystemExit(0)", "exited with code 0"), ("import os; os.kill(os.getpid(), 15)", "SIGTERM")],
    ids=["exit-0", "sigterm"],
)
def test_a_child_that_was_asked_to_stop_stays_stopped(supervised, log: Log, code: str, how: str) -> None:
    """Ctrl-C or a service manager signals every process: that exit means stop, for good."""
    process = supervised(child(code), min_backoff=0.05)
    assert how in log.wait_for("not restarting it")[0]
    process._thread.join(10)
    assert not process._thread.is_alive(), "the supervising thread ended"
    assert len(log.matching("started")) == 1 and not log.matching("restarting it in")


# --- stop ------------------------------------------------------------------------------


def test_stop_ends_the_child_and_restarts_nothing(supervised, log: Log) -> None:
    process = supervised(child("import time; time.sleep(60)"), min_backoff=0.05)
    pid = pid_of(log.wait_for("started")[0])
    began = time.monotonic()
    process.stop()
    assert time.monotonic() - began < 5, "SIGTERM ends it at once"
    assert not running(pid) and not process._thread.is_alive()
    assert len(log.matching("started")) == 1 and not log.matching("restarting")


def test_stop_kills_a_child_that_ignores_sigterm(supervised, log: Log) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    process = supervised(child(code), stop_timeout=0.5)
    pid = pid_of(log.wait_for("started")[0])
    deadline = time.monotonic() + 10  # stop() must not come before the child ignores SIGTERM
    while not ignores_sigterm(pid):
        assert time.monotonic() < deadline, "the child never ignored SIGTERM"
        time.sleep(0.02)
    process.stop()
    assert not running(pid) and not process._thread.is_alive()
    assert log.wait_for("did not stop within 0.5s; killing it")


def ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        ignored = next(line for line in status if line.startswith("SigIgn:")).split()[1]
    return bool(int(ignored, 16) & (1 << (signal.SIGTERM - 1)))


def test_stop_during_the_backoff_wait_returns_at_once(supervised, log: Log) -> None:
    process = supervised(child("raise SystemExit(1)"), min_backoff=30)
    log.wait_for("restarting it in 30s")
    began = time.monotonic()
    process.stop()
    assert time.monotonic() - began < 5 and not process._thread.is_alive()
    assert len(log.matching("started")) == 1


# --- parent death ----------------------------------------------------------------------

PARENT = """
import sys, threading
from app.supervisor import CollectorProcess
process = CollectorProcess([sys.executable, "-c", sys.argv[1]], min_backoff=0.05)
process.start()
threading.Event().wait()
"""
REPORTS_PID = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"


def test_the_child_dies_with_a_sigkilled_parent() -> None:
    """The parent cannot act on SIGKILL: the kernel signals the child (PR_SET_PDEATHSIG)."""
    parent = subprocess.Popen(
        [PYTHON, "-c", PARENT, REPORTS_PID], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        pid = int(parent.stdout.readline())
        assert running(pid)
        parent.kill()
        parent.wait(10)
        wait_ended(pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def test_a_process_whose_parent_is_already_gone_exits_at_once() -> None:
    """Called in a child whose parent died before the call (it has been reparented), no
    signal would ever come: die_with_parent's function ends the process instead."""
    code = (
        "import os; from app.supervisor import die_with_parent; "
        "die_with_parent(os.getppid())(); print('kept', flush=True); "
        "die_with_parent(os.getppid() + 1)(); print('orphan lives on', flush=True)"
    )
    done = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (1, "kept\n"), done.stderr


def test_not_linux_means_no_parent_death_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert die_with_parent() is None

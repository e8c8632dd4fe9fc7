"""Background tasks with an owner: supervised restarts with back-off, health, crash logs."""

import asyncio

import pytest

from app.tasks import Health, background, supervise
from tests.helpers import LogWatch


class Flaky:
    """A task body that fails `failures` times, then runs until cancelled."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts = 0
        self.running = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise RuntimeError(f"boom {self.starts}")
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_a_failing_task_is_restarted_and_named_unhealthy_until_it_settles(logs: LogWatch) -> None:
    health, flaky = Health(), Flaky(failures=3)
    run = supervise("hub", flaky, health, min_backoff=0.01, max_backoff=0.02, settle=0.2)
    async with background(run, "hub-supervisor"):
        async with asyncio.timeout(5):
            await flaky.running.wait()
        assert flaky.starts == 4
        assert health.failing == {"hub": "RuntimeError: boom 3"} and not health.ok
        await logs.wait_for("hub running again")  # once it has run `settle` seconds
        assert health.ok and flaky.starts == 4
    assert flaky.cancelled.is_set(), "cancelling the supervisor must cancel the task"
    failures = [r for r in logs.records if "hub failed" in r.getMessage()]
    assert len(failures) == 3
    assert failures[0].exc_info is not None, "the first failure of a streak shows its traceback"
    assert all(r.exc_info is None for r in failures[1:]), "the others are one line each"


async def test_a_task_that_returns_is_a_failure_too(logs: LogWatch) -> None:
    health = Health()
    ended = asyncio.Event()

    async def returns() -> None:
        ended.set()

    async with background(supervise("watch", returns, health, min_backoff=10), "watch-supervisor"):
        await logs.wait_for("watch failed")
    assert ended.is_set() and health.failing["watch"] == "RuntimeError: stopped by itself"


async def test_background_logs_a_crash_at_once_and_raises_it_to_its_owner(logs: LogWatch) -> None:
    async def crash() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        async with background(crash(), "crasher"):
            await logs.wait_for("crasher stopped: ValueError('bad')")

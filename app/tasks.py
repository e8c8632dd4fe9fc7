"""Background tasks with an owner: a name, a reference, a crash that is logged, and a
supervisor that restarts a failed task with back-off while the process says it is unhealthy.

Never start a task with a bare `asyncio.create_task` and forget it: asyncio keeps only a
weak reference, and an exception nobody retrieves is reported (if at all) when it is
garbage-collected, long after the panel silently stopped moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Health:
    """Which supervised tasks are failing now, for `/healthz`: a process whose hub or
    collector keeps crashing must not say it is fine."""

    def __init__(self) -> None:
        self.failing: dict[str, str] = {}  # task name -> its last error

    @property
    def ok(self) -> bool:
        return not self.failing


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run `work` as a named task for the length of the block; a crash is logged at once,
    and leaving the block cancels the task and waits for it to end."""
    task = asyncio.create_task(work, name=name)
    task.add_done_callback(log_crash)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def supervise(
    name: str,
    start: Callable[[], Coroutine[Any, Any, None]],
    health: Health,
    *,
    min_backoff: float = 1.0,
    max_backoff: float = 30.0,
    settle: float = 60.0,
) -> None:
    """Run `start()` as the task `name` until cancelled, and start it again when it fails
    (or returns, which a task meant to run forever must not do), after 1 s doubling to 30 s.
    From its failure until it has run `settle` seconds again, `health` names it. The first
    failure of a streak is logged with its traceback, the others in one line."""
    backoff = min_backoff
    while True:
        task = asyncio.create_task(start(), name=name)
        try:
            if name in health.failing:
                done, _ = await asyncio.wait({task}, timeout=settle)
                if not done:
                    log.info("%s running again", name)
                    health.failing.pop(name, None)
                    backoff = min_backoff
            await task
            error: Exception = RuntimeError("stopped by itself")
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        except Exception as exc:  # a bug or an outage: restart it, say so
            error = exc
        first = name not in health.failing
        health.failing[name] = f"{type(error).__name__}: {error}"[:200]
        log.error(
            "%s failed (%s); restarting in %gs",
            name,
            health.failing[name],
            backoff,
            exc_info=error if first else None,
        )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


def log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())


def raise_if_cancelled() -> None:
    """Raise the cancellation a failed connect swallowed. Seen on Python 3.11: a cancel that
    reaches `create_connection` while the peer refuses comes back as the OSError, and the
    loop went on reconnecting for ever (a stopped collector that never stopped, 1 run in 2)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

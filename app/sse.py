"""One Server-Sent Events stream per viewer: the first message brings the viewer's view
(or what changed since its Last-Event-ID), then only the tiles that changed.

A stream never reads the store and never renders: it walks the hub's chain of updates
and sends bytes the hub built. A viewer that falls behind skips ahead (latest state
wins); one that stops reading is dropped after the send timeout.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette.sse import AppStatus
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.hub import Hub, Update, View

log = logging.getLogger(__name__)

MAX_CHAIN = 256  # a viewer further behind than this gets its whole view again
_VERSION = re.compile(r"\d{1,18}")


def resume_point(request: Request) -> int | None:
    """The version the viewer already has: `Last-Event-ID`, else `?since=N`; anything
    that is not a plain number is ignored (the viewer then gets its whole view)."""
    for value in (request.headers.get("last-event-id"), request.query_params.get("since")):
        if value is not None and _VERSION.fullmatch(value.strip()):
            return int(value)
    return None


async def viewer_stream(hub: Hub, view: View, since: int | None) -> AsyncIterator[bytes]:
    hub.viewers += 1
    view = hub.canonical(view)
    try:
        first, position = hub.first_message(view, since)
        changes = _changes(hub, view, position)
        # Hold neither the whole view nor the chain's start for the life of the stream:
        # a long-lived viewer would keep every update since it connected alive.
        del position
        yield first
        del first
        async for message in changes:
            yield message
    finally:
        hub.viewers -= 1


async def _changes(hub: Hub, view: View, position: Update) -> AsyncIterator[bytes]:
    while True:
        await position.ready.wait()
        chain: list[Update] = []
        while position.next is not None and len(chain) <= MAX_CHAIN:
            position = position.next
            if position.closing:
                return
            chain.append(position)
        if len(chain) > MAX_CHAIN:  # far behind: the whole view, from the newest update
            first, position = hub.first_message(view, None)
            yield first
            continue
        message = hub.message(view, chain)
        if message is not None:
            yield message


def event_stream(request: Request, hub: Hub, view: View, *, watch: SendWatch) -> EventStream:
    return EventStream(viewer_stream(hub, view, resume_point(request)), watch)


class EventStream:
    """A viewer's stream as a plain ASGI response.

    Not sse-starlette's EventSourceResponse: its task group and the anyio cancel scope
    around every send cost about a third of each delivery, measured at 1,000 viewers
    (docs/benchmarks.md). What we need of it is small: the messages are SSE bytes
    already; a viewer that stops reading is dropped by the process's `SendWatch`; a
    disconnect is noticed by one task waiting on `receive`; at shutdown the hub's
    closing update ends the stream (see `server_stopping`).
    """

    HEADERS: list[tuple[bytes, bytes]] = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"),  # nginx: pass each message on at once
    ]

    def __init__(self, messages: AsyncIterator[bytes], watch: SendWatch) -> None:
        self.messages = messages
        self.watch = watch
        self.headers = self.HEADERS
        self.sending_since = 0.0  # when the send in progress began; 0: none
        self.dropped = False
        self.task: asyncio.Task[Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        messages = self.messages
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            self.task = asyncio.current_task()
            gone = asyncio.ensure_future(_disconnected(receive))
            self.watch.streams.add(self)
            try:
                async for message in messages:
                    if gone.done():
                        return
                    self.sending_since = time.monotonic()
                    await send({"type": "http.response.body", "body": message, "more_body": True})
                    self.sending_since = 0.0
                await send({"type": "http.response.body", "body": b""})
            except asyncio.CancelledError:
                if not self.dropped or self.task is None:
                    raise
                self.task.uncancel()
                log.warning("dropped a viewer that read nothing for %g s", self.watch.timeout)
                # returning mid-stream: uvicorn closes the connection
            finally:
                self.watch.streams.discard(self)
                gone.cancel()
        finally:
            await messages.aclose()  # type: ignore[attr-defined]

    def drop(self) -> None:
        if self.task is not None and not self.dropped:
            self.dropped = True
            self.task.cancel()


class SendWatch:
    """Drops the viewers that stopped reading: a send blocked for `timeout` seconds is
    cancelled. One check now and then for the whole process, because a timer around
    every send (asyncio.timeout) cost a tenth of each delivery (docs/benchmarks.md)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.streams: set[EventStream] = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(max(self.timeout / 4, 0.1), 1.0))
            late = time.monotonic() - self.timeout
            for stream in [s for s in self.streams if 0 < s.sending_since < late]:
                stream.drop()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def server_stopping(poll: float = 0.5) -> None:
    """Returns once uvicorn begins to shut down: it waits for open responses before it
    stops, so the streams must be told. sse-starlette patches uvicorn's exit handler to
    set `AppStatus.should_exit`; a server stopped without a signal shows it on itself."""
    while not (AppStatus.should_exit or _uvicorn_exiting()):  # noqa: ASYNC110 - flags, not events
        await asyncio.sleep(poll)


def _uvicorn_exiting() -> bool:
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))

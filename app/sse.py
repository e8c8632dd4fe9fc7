"""The wire: Server-Sent Events framing, one stream per viewer, resume, slow viewers
dropped, shutdown. The first message brings the viewer's view (or what changed since its
Last-Event-ID), then only the tiles that changed.

A stream never reads the store and never renders: it walks the hub's chain of updates
and sends bytes built once per view and update with `encode`. A viewer that falls behind
skips ahead (latest state wins); one that stops reading holds a few send buffers' worth
of bytes at most, and after the send timeout is dropped, its connection cut at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from typing import Any

from sse_starlette.sse import AppStatus, ServerSentEvent
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.hub import Hub
from app.metrics import Metrics
from app.transport import abort, limit_queue, transport_of
from app.updates import Update
from app.view import View

log = logging.getLogger(__name__)

MAX_CHAIN = 256  # a viewer further behind than this gets its whole view again
_VERSION = re.compile(r"\d{1,18}")


def encode(version: int, html: str) -> bytes:
    """One message: `id:` the snapshot version (what a reconnect sends back as
    Last-Event-ID), `data:` the HTML htmx swaps in. sse-starlette's encoder splits any line
    break in the data into `data:` lines, so no byte of a tile can end the message early;
    "\n" as the separator keeps each message a few bytes shorter than "\r\n". It runs once
    per view and update (the hub caches the bytes), never per viewer."""
    return ServerSentEvent(data=html, id=str(version), sep="\n").encode()


def resume_point(request: Request) -> int | None:
    """The version the viewer already has: `Last-Event-ID`, else `?since=N`; anything
    that is not a plain number is ignored (the viewer then gets its whole view)."""
    for value in (request.headers.get("last-event-id"), request.query_params.get("since")):
        if value is not None and _VERSION.fullmatch(value.strip()):
            return int(value)
    return None


def catch_up(hub: Hub, view: View, position: Update) -> tuple[bytes | None, Update | None]:
    """The message that brings a viewer from `position` to the newest update (None when
    nothing in it is for this view), and the viewer's new position (None: the server is
    closing). A viewer too far behind gets its whole view again (latest state wins)."""
    chain: list[Update] = []
    while position.next is not None and len(chain) <= MAX_CHAIN:
        position = position.next
        if position.closing:
            return None, None
        chain.append(position)
    if len(chain) > MAX_CHAIN:
        return hub.first_message(view, None)
    return hub.message(view, chain), position


def event_stream(request: Request, hub: Hub, view: View, *, viewers: Viewers) -> EventStream:
    return EventStream(hub, view, resume_point(request), viewers)


class EventStream:
    """A viewer's stream as a plain ASGI response: the first message brings the view (or
    what changed since `since`), then every update of the hub that touches the view.

    Not sse-starlette's EventSourceResponse: its task group and the anyio cancel scope
    around every send cost about a third of each delivery, measured at 1,000 viewers
    (docs/benchmarks.md); for the same reason the loop below walks the hub's updates
    itself rather than through async generators. What we need is small: the messages are
    SSE bytes already; a viewer that stops reading is dropped by the process's `Viewers`;
    a disconnect is noticed by one task waiting on `receive`; at shutdown the hub's
    closing update ends the stream (see `end_streams_at_shutdown`).
    """

    HEADERS: list[tuple[bytes, bytes]] = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"),  # nginx: pass each message on at once
    ]

    def __init__(self, hub: Hub, view: View, since: int | None, viewers: Viewers) -> None:
        self.hub = hub
        self.view = view
        self.since = since
        self.viewers = viewers
        self.headers = self.HEADERS
        self.sending_since = 0.0  # when the send in progress began; 0: none
        self.dropped = False
        self.task: asyncio.Task[Any] | None = None
        self.transport: asyncio.Transport | None = None  # None: not under uvicorn's own send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        hub, view, piece = self.hub, self.view, self.viewers.send_buffer
        self.task = asyncio.current_task()
        # Once per viewer, off the hot path: the bytes it may have queued are bounded.
        self.transport = transport_of(send)
        if self.transport is not None:
            limit_queue(self.transport, piece)
        gone = asyncio.ensure_future(_disconnected(receive))
        self.viewers.streams.add(self)
        # One object per view while it is streamed; its cached messages go with its last viewer.
        self.view = view = hub.join(view)
        try:
            message, position = hub.first_message(view, self.since)
            # Only `position` is kept, and it moves on: a long-lived viewer must hold
            # neither its first (whole) view nor every update since it connected.
            while position is not None and not gone.done():
                if message is not None:
                    self.sending_since = time.monotonic()
                    if len(message) <= piece:
                        await send({"type": "http.response.body", "body": message, "more_body": True})
                    else:
                        await _send_in_pieces(send, message, piece)
                    self.sending_since = 0.0
                    self.viewers.sent += 1
                    self.viewers.sent_bytes += len(message)
                    message = None
                await position.ready.wait()
                message, position = catch_up(hub, view, position)
            if position is None:  # the server is closing: end the response properly
                await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not self.dropped or self.task is None:
                raise
            self.task.uncancel()
            log.warning("dropped a viewer that read nothing for %g s", self.viewers.timeout)
            if self.transport is not None:
                # The abort in `drop` reaches uvicorn on the loop's next turn; once it
                # knows, our return mid-stream is a disconnect, not an incomplete response.
                await asyncio.wait([gone], timeout=1.0)
            # else: returning mid-stream, uvicorn closes the connection (gracefully)
        finally:
            hub.leave(view)
            self.viewers.streams.discard(self)
            gone.cancel()

    def drop(self) -> None:
        if self.task is not None and not self.dropped:
            self.dropped = True
            self.viewers.metrics.viewers_dropped.inc()
            if self.transport is not None:
                abort(self.transport)  # frees what it holds now, not when it reads again
            self.task.cancel()


class Viewers:
    """The open streams of this process (the one count of viewers), and the watch that
    drops the ones that stopped reading: a send blocked for `timeout` seconds is
    cancelled. One check now and then for the whole process, because a timer around
    every send (asyncio.timeout) cost a tenth of each delivery (docs/benchmarks.md).
    Before that, a viewer's sends block once about `send_buffer` bytes wait for it."""

    def __init__(self, timeout: float, send_buffer: int, metrics: Metrics | None = None) -> None:
        self.timeout = timeout
        self.send_buffer = send_buffer
        self.streams: set[EventStream] = set()
        self.metrics = metrics or Metrics()
        # Messages and bytes sent since the last tick: plain integers on the hot path,
        # handed to the metrics once a tick (a counter per send would cost every delivery).
        self.sent = self.sent_bytes = 0

    def __len__(self) -> int:
        return len(self.streams)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(max(self.timeout / 4, 0.1), 1.0))
            self.count()
            late = time.monotonic() - self.timeout
            for stream in [s for s in self.streams if 0 < s.sending_since < late]:
                stream.drop()

    def count(self) -> None:
        """Hand what was sent since the last tick to the metrics."""
        self.metrics.viewers.set(len(self.streams))
        self.metrics.messages_sent.inc(self.sent)
        self.metrics.bytes_sent.inc(self.sent_bytes)
        self.sent = self.sent_bytes = 0


async def _send_in_pieces(send: Send, message: bytes, piece: int) -> None:
    """A message bigger than the send buffer (a whole view: 610 KB at 2,000 tiles) goes
    out a buffer's worth at a time: uvicorn waits for room before each piece, so a viewer
    that stops reading holds a piece in the server, not a copy of the whole message."""
    for start in range(0, len(message), piece):
        await send({"type": "http.response.body", "body": message[start : start + piece], "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def end_streams_at_shutdown(hub: Hub) -> None:
    """uvicorn waits for open responses before it stops (and before the lifespan ends):
    when it begins to shut down, the hub's closing update ends every stream at once."""
    await server_stopping()
    hub.close()


async def server_stopping(poll: float = 0.5) -> None:
    """Returns once uvicorn begins to shut down: it waits for open responses before it
    stops, so the streams must be told. sse-starlette patches uvicorn's exit handler to
    set `AppStatus.should_exit`; a server stopped without a signal shows it on itself."""
    while not (AppStatus.should_exit or _uvicorn_exiting()):  # noqa: ASYNC110 - flags, not events
        await asyncio.sleep(poll)


def _uvicorn_exiting() -> bool:
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))

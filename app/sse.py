"""One Server-Sent Events stream per viewer: the first message brings the viewer's view
(or what changed since its Last-Event-ID), then only the tiles that changed.

A stream never reads the store and never renders: it walks the hub's chain of updates
and sends bytes the hub built. A viewer that falls behind skips ahead (latest state
wins); one that stops reading is dropped after the send timeout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.requests import Request

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


def event_stream(request: Request, hub: Hub, view: View, *, send_timeout: float) -> EventSourceResponse:
    return EventSourceResponse(
        viewer_stream(hub, view, resume_point(request)),
        ping=0,  # the hub's heartbeat message keeps the stream alive for everyone at once
        send_timeout=send_timeout,
        shutdown_event=hub.shutdown,  # shared: the first stream to see the signal ends them all
        shutdown_grace_period=2.0,
        headers={"Cache-Control": "no-store"},
    )

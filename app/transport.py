"""The TCP connections under the ASGI app: a viewer's byte bound, the abort that frees a
dropped one at once, one log line per episode out of file descriptors. Keep the one uvicorn
internal (the transport behind `send`) in `transport_of`: tests/test_transport.py watches it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Linux keeps a socket writable only while fewer than this many bytes wait unsent (25: its
# number in <linux/tcp.h>, should this Python's socket module not name it).
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, keeps nothing


def transport_of(send: Callable[..., Any]) -> asyncio.Transport | None:
    """The asyncio transport of the connection a raw uvicorn `send` writes to, or None.

    ASGI gives the app no socket (uvicorn 0.54.0 sets no `extensions` for http), and the
    bytes a viewer may have queued can only be bounded on the socket. uvicorn 0.54.0's
    httptools and h11 protocols both pass `RequestResponseCycle.send`, a bound method
    whose `transport` is the connection's transport (checked against 0.54.0; the test of
    this room fails when it moves). Behind a middleware `send` is a plain function: None,
    and the stream goes on without the bound, as before.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    needed = ("get_extra_info", "abort", "set_write_buffer_limits", "get_write_buffer_size")
    if transport is None or not all(hasattr(transport, name) for name in needed):
        return None
    return transport  # type: ignore[no-any-return]


def limit_queue(transport: asyncio.Transport, limit: int) -> bool:
    """At most about `limit` bytes wait for a reader in the kernel, and as many in the
    transport, before a send blocks. False when the socket would not take the bound.

    Unbounded, Linux grows the send buffer of a viewer that stopped reading up to 4 MB
    (tcp_wmem; 2.8 MB measured, tests/test_slow_viewers.py); 5,000 of them took the
    host's TCP memory to the pressure threshold (1.5 GB) in 75 s. TCP_NOTSENT_LOWAT bounds
    only the bytes not yet sent, not those in flight, so a reader that keeps up, near or
    far, is not slowed (SO_SNDBUF would cap both, and stop the kernel's tuning of the
    buffer for a long, fast path).
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, limit)
    except OSError:
        return False
    # Above `limit` uvicorn's flow control (pause_writing) makes the next send wait.
    transport.set_write_buffer_limits(high=limit)
    return True


def abort(transport: asyncio.Transport) -> None:
    """Cut the connection now and free what it held. A graceful close (what uvicorn does
    when a response ends early) waits for the buffer to drain, which a viewer that does
    not read never lets happen: its socket stayed ESTABLISHED, holding 2.8 MB, until the
    client went away. With SO_LINGER 0 the kernel sends RST and drops its queue at once."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except OSError:
            pass  # already closed by the peer: nothing is queued any more
    transport.abort()


ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's text (selector_events.py)


class DescriptorWatch:
    """One clear line when this process runs out of file descriptors, and one when it has
    them again: each new connection needs one, and at the limit they are refused.

    Neither loop says so usefully: uvloop (uvicorn's loop in production) accepts and
    closes the excess connections itself (libuv's EMFILE trick) and logs nothing; asyncio
    logs a traceback per failed accept, thousands a second (seen: 42,993 lines in 4 s).
    So a probe (open one descriptor) every `period` seconds, and asyncio's reports taken
    over. At the limit a probe can find the one descriptor a leaving viewer has just
    freed: the episode ends only after `quiet` seconds without a sign of it.
    """

    def __init__(self, period: float = 1.0, quiet: float = 10.0) -> None:
        self.period = period
        self.quiet = quiet
        self.since: float | None = None  # start of the episode in progress
        self.last_seen = 0.0

    def exhausted(self) -> None:
        now = time.monotonic()
        self.last_seen = now
        if self.since is None:
            self.since = now
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            log.error(
                "out of file descriptors: all %d (RLIMIT_NOFILE) are open, new connections are "
                "refused; raise LimitNOFILE (deploy/blf-panel.service) or spread viewers over more workers",
                limit,
            )

    def check(self) -> None:
        if not _descriptor_free():
            self.exhausted()
        elif self.since is not None and time.monotonic() - self.last_seen >= self.quiet:
            log.info("file descriptors available again (ran out for %.0f s)", self.last_seen - self.since)
            self.since = None

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> bool:
        """Takes asyncio's report of a failed accept (True); anything else is not ours."""
        error = context.get("exception")
        if context.get("message") != ACCEPT_FAILED or not isinstance(error, OSError):
            return False
        if error.errno not in (errno.EMFILE, errno.ENFILE):
            return False
        self.exhausted()
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if self.handle(loop, context):
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        try:
            while True:
                self.check()
                await asyncio.sleep(self.period)
        finally:
            if loop.get_exception_handler() is handler:  # not if another took over since
                loop.set_exception_handler(previous)


def _descriptor_free() -> bool:
    try:
        os.close(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as error:
        if error.errno in (errno.EMFILE, errno.ENFILE):
            return False
        raise
    return True

"""The connections under the app, on a real uvicorn (both of its HTTP protocols) and both
event loops it runs on: the transport behind `send` (a uvicorn internal: these tests fail
when it moves), the byte bound, the abort, and running out of file descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvicorn
import uvloop

from app.transport import TCP_NOTSENT_LOWAT, DescriptorWatch, abort, limit_queue, transport_of
from tests.helpers import LogWatch

LOOPS: dict[str, Callable[[Awaitable[Any]], Any]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@contextlib.asynccontextmanager
async def serving(app: Any, http: str = "auto"):
    """A real uvicorn.Server on a free port of 127.0.0.1 in this loop; yields the port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=http, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        async with asyncio.timeout(10):
            while not server.started:  # uvicorn has no event for it
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_stream_reaches_its_socket_bounds_it_and_cuts_it(http: str, loop: str) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        transport = transport_of(send)
        assert transport is not None, f"uvicorn {uvicorn.__version__} no longer shows its transport"
        seen["limited"] = limit_queue(transport, 32768)
        sock = transport.get_extra_info("socket")
        seen["lowat"] = sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)
        seen["high"] = transport.get_write_buffer_limits()[1]
        await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        abort(transport)
        while (await receive())["type"] != "http.disconnect":  # what uvicorn tells after the cut
            pass
        seen["disconnected"] = True

    async def scenario() -> None:
        async with serving(app, http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                # A reset, not an orderly end (b""): the kernel dropped what it held.
                with pytest.raises(ConnectionResetError):
                    while await reader.read(65536):
                        pass
            writer.close()

    LOOPS[loop](scenario())
    assert seen == {"limited": True, "lowat": 32768, "high": 32768, "disconnected": True}


def test_behind_a_middleware_there_is_no_transport() -> None:
    async def wrapped_send(message: Any) -> None:
        pass

    assert transport_of(wrapped_send) is None


def room_for(more: int) -> int:
    """The descriptor limit that leaves `more` free: a new descriptor takes the lowest free
    number, and the limit is on numbers (this process's open ones have gaps)."""
    used = set(map(int, os.listdir("/proc/self/fd")))
    free = [number for number in range(len(used) + more + 1) if number not in used]
    return free[more - 1] + 1


async def hold_open(scope: Any, receive: Any, send: Any) -> None:
    """A viewer's connection: a response that stays open until the client leaves."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b":\n\n", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass


@pytest.mark.parametrize("loop", LOOPS)
def test_running_out_of_descriptors_is_one_line_per_episode(loop: str) -> None:
    """uvloop closes the connections it cannot accept and says nothing; asyncio logs a
    traceback per failed accept. Either way: one line when it starts, one when it ends."""
    ours, theirs = LogWatch(), LogWatch()
    logging.getLogger("app.transport").addHandler(ours)
    logging.getLogger("asyncio").addHandler(theirs)
    watch = DescriptorWatch(period=0.05, quiet=0.5)

    async def scenario() -> None:
        async with serving(hold_open) as port, asyncio.TaskGroup() as group:
            watching = group.create_task(watch.run(), name="descriptor-watch")
            clients = [socket.socket() for _ in range(60)]  # their descriptors exist already
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (room_for(10), hard))  # a few accepts, then out
            try:
                for client in clients:
                    client.setblocking(False)
                    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
                await ours.wait_for("out of file descriptors", timeout=5)
                # While it lasts, no second line (an absence: watched for 10 probes).
                with pytest.raises(TimeoutError):
                    await ours.wait_for("out of file descriptors", count=2, timeout=10 * watch.period)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                for client in clients:
                    client.close()
            await ours.wait_for("file descriptors available again", timeout=5)
            watching.cancel()

    try:
        LOOPS[loop](scenario())
    finally:
        logging.getLogger("app.transport").removeHandler(ours)
        logging.getLogger("asyncio").removeHandler(theirs)
    assert ours.count("out of file descriptors") == 1
    assert "RLIMIT_NOFILE" in ours.records[0].getMessage() and ours.records[0].levelname == "ERROR"
    assert theirs.count("out of system resource") == 0, "asyncio's traceback per accept came through"

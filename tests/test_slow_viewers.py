"""Viewers that never read, against a real uvicorn: what they may hold while connected
(bytes in the kernel and in the server), and that once dropped they leave nothing behind
(server memory and sockets back where they were), while a reader that keeps up sees all."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from app.sim import Simulator
from tests.helpers import LogWatch, SseClient, named, tile_ids_in

EXTENSIONS = [str(n) for n in range(1000, 3000)]  # the whole view: about 610 KB
STALLED = 40
SEND_BUFFER = 65536
CHUNK_FRAMING = 16  # what uvicorn's chunked encoding adds to a piece: b"10000\r\n" ... b"\r\n"


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with Simulator(EXTENSIONS, port=0) as sim:
        yield sim


@pytest.fixture
def uvicorn_errors() -> Iterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)


def server_sockets(port: int) -> list[int]:
    """The bytes the kernel holds (unsent or unacknowledged) for each TCP socket of the
    server on `port` but its listener, whatever its state, from /proc/net/tcp."""
    queued = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.rsplit(":", 1)[1], 16) == port and state != "0A":  # 0A: LISTEN
            queued.append(int(queues.split(":")[0], 16))
    return queued


def held_kb() -> int:
    """This process's resident memory (the server runs in it), once glibc has handed its
    free heap back: it keeps freed memory for reuse (seen: 7 MB of it after the drops),
    which would hide whether anything is still held."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def stalled_viewer(port: int) -> socket.socket:
    """A viewer whose receive window shuts at once: a 4 KB receive buffer, never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    return sock


async def on_each_beat(server, condition: Callable[[], bool], timeout: float) -> None:
    """Wait until `condition()` holds, checked at every update of the hub (HEARTBEAT=1)."""
    hub = server.app.state.hub
    async with asyncio.timeout(timeout):
        while not condition():
            await hub.head.ready.wait()


async def flip_every_tile(sim: Simulator, reader: SseClient, round_: int) -> None:
    """Every tile changes (a message of about 610 KB); the reader must see the last one."""
    state = "INUSE" if round_ % 2 == 0 else "NOT_INUSE"
    for exten in EXTENSIONS:
        sim.set_device_state(f"Custom:{exten}", state)
    shown = "inuse" if state == "INUSE" else "idle"
    await reader.next_with(f'id="ext-2999" class="tile state-{shown}"', timeout=15)


async def test_viewers_that_never_read_hold_little_and_leave_nothing(
    simulator, panel, uvicorn_errors
) -> None:
    server = await panel(
        AMI_HOST="127.0.0.1",
        AMI_PORT=str(simulator.port),
        HEARTBEAT="1",
        SEND_TIMEOUT="3",
        SEND_BUFFER=str(SEND_BUFFER),
    )
    await server.until(named, timeout=30)
    viewers = server.app.state.viewers
    async with SseClient(f"{server.url}/events") as reader:
        first = await reader.next_with('id="ext-2999"', timeout=15)
        assert tile_ids_in(first["data"]) == [f"ext-{n}" for n in EXTENSIONS], "sent in pieces, intact"
        sockets_before, held_before = len(server_sockets(server.port)), held_kb()
        stalled = [stalled_viewer(server.port) for _ in range(STALLED)]
        try:
            # Their first message, the whole view, fills what they may hold: their sends
            # block. (Unbounded, the kernel took it all and more: 2.8 MB each, measured.)
            await on_each_beat(server, lambda: len(viewers) == STALLED + 1, timeout=10)
            blocked = lambda: [stream for stream in viewers.streams if stream.sending_since]  # noqa: E731
            await on_each_beat(server, lambda: len(blocked()) == STALLED, timeout=10)
            assert max(server_sockets(server.port)) <= 2 * SEND_BUFFER
            in_server = [stream.transport.get_write_buffer_size() for stream in blocked()]
            assert max(in_server) <= 2 * SEND_BUFFER + CHUNK_FRAMING
            # Dropped after SEND_TIMEOUT: their connections are cut at once.
            await on_each_beat(server, lambda: len(viewers) == 1, timeout=10)
            await on_each_beat(server, lambda: len(server_sockets(server.port)) == sockets_before, 5)
            left = held_kb() - held_before
            assert left < 2048, f"{left} KB still held after the drops"
            await flip_every_tile(simulator, reader, 0)  # the reader that kept up goes on
        finally:
            for sock in stalled:
                sock.close()
    assert uvicorn_errors.count("without completing response") == 0, "a drop is a disconnect"

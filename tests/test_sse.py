"""The event stream end to end: simulator over TCP, real memcached, a real uvicorn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from app.settings import SettingsError, load_settings
from app.sim import Simulator
from tests.helpers import SseClient, named, setvar, tile_ids_in

EXTENSIONS = [str(n) for n in range(100, 110)]


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with Simulator(EXTENSIONS, port=0) as sim:
        yield sim


def pbx(simulator: Simulator, memcached, **more: str) -> dict[str, str]:
    return {
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(simulator.port),
        "MEMCACHED_URL": memcached.url,
        "STORE_PREFIX": "sse:",
        "HEARTBEAT": "1",
        **more,
    }


async def test_full_view_then_only_the_changed_tile(simulator, memcached, panel) -> None:
    server = await (await panel(**pbx(simulator, memcached))).healthy()
    await server.until(named)
    async with SseClient(f"{server.url}/events") as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        first = await stream.next_with('id="ext-109"', timeout=10)
        assert tile_ids_in(first["data"]) == [f"ext-{n}" for n in EXTENSIONS]
        assert 'id="link"' in first["data"] and 'id="tiles"' in first["data"]
        await setvar(simulator.port, "Custom:105", "INUSE")
        change = await stream.next_with('id="ext-105"')
    assert tile_ids_in(change["data"]) == ["ext-105"], "unchanged tiles must not travel"
    assert "state-inuse" in change["data"] and 'hx-swap-oob="true"' in change["data"]
    assert int(change["id"]) > int(first["id"])


async def test_reconnect_gets_only_what_changed_since(simulator, memcached, panel) -> None:
    server = await (await panel(**pbx(simulator, memcached))).healthy()
    await server.until(named)
    async with SseClient(f"{server.url}/events") as stream:
        first = await stream.next_with('id="ext-109"', timeout=10)
        await setvar(simulator.port, "Custom:103", "BUSY")
        await stream.next_with('id="ext-103"')
        await setvar(simulator.port, "Custom:104", "RINGING")
        last = await stream.next_with('id="ext-104"')
    async with SseClient(f"{server.url}/events", {"Last-Event-ID": first["id"]}) as again:
        resumed = await again.next()
    assert sorted(tile_ids_in(resumed["data"])) == ["ext-103", "ext-104"]
    assert 'id="tiles"' not in resumed["data"] and resumed["id"] == last["id"]
    async with SseClient(f"{server.url}/events?since={last['id']}") as up_to_date:
        nothing_new = await up_to_date.next()
    assert tile_ids_in(nothing_new["data"]) == [] and 'id="link"' in nothing_new["data"]
    async with SseClient(f"{server.url}/events", {"Last-Event-ID": "999999"}) as unknown:
        whole = await unknown.next()
    assert len(tile_ids_in(whole["data"])) == 10, "an id we do not know gets the whole view"


async def test_embed_stream_carries_only_its_tiles(simulator, memcached, panel) -> None:
    server = await (await panel(**pbx(simulator, memcached))).healthy()
    await server.until(named)
    async with SseClient(f"{server.url}/events?ext=101,102") as stream:
        first = await stream.next_with('id="ext-102"', timeout=10)
        assert tile_ids_in(first["data"]) == ["ext-101", "ext-102"]
        await setvar(simulator.port, "Custom:108", "INUSE")  # not in this view
        await setvar(simulator.port, "Custom:102", "ONHOLD")
        change = await stream.next_with("<article")
    assert tile_ids_in(change["data"]) == ["ext-102"] and "state-hold" in change["data"]


async def test_a_viewer_that_stops_reading_is_dropped_and_slows_nobody(memcached, panel) -> None:
    extensions = [str(n) for n in range(1000, 3000)]
    async with Simulator(extensions, port=0) as sim:
        server = await (await panel(**pbx(sim, memcached, SEND_TIMEOUT="1"))).healthy()
        await server.until(named, timeout=30)
        hub, viewers = server.app.state.hub, server.app.state.viewers
        async with SseClient(f"{server.url}/events") as healthy:
            await healthy.next_with('id="ext-2999"', timeout=15)
            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(("127.0.0.1", server.port))
            stalled.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            try:
                async with asyncio.timeout(5):  # the hub beats every second: check then
                    while len(viewers) < 2:
                        await hub.head.ready.wait()
                for round_ in range(40):  # every tile changes: about 500 KB per message
                    state = "INUSE" if round_ % 2 == 0 else "NOT_INUSE"
                    for exten in extensions:
                        sim.set_device_state(f"Custom:{exten}", state)
                    shown = "inuse" if state == "INUSE" else "idle"
                    await healthy.next_with(f'id="ext-2999" class="tile state-{shown}"', timeout=10)
                    if len(viewers) == 1:
                        break
                assert len(viewers) == 1, "the viewer that stopped reading was not dropped"
            finally:
                stalled.close()


async def test_shutdown_ends_streams(simulator, memcached, panel) -> None:
    server = await (await panel(**pbx(simulator, memcached))).healthy()
    await server.until(named)
    async with SseClient(f"{server.url}/events") as stream:
        await stream.next_with('id="ext-109"', timeout=10)
        stopping = asyncio.create_task(server.stop())
        # The response ends properly (the last chunk is sent), not by a cut connection,
        # which httpx would raise as a RemoteProtocolError.
        with pytest.raises(StopAsyncIteration):
            while True:
                await stream.next(timeout=10)
        await asyncio.wait_for(stopping, 10)


async def test_hostile_hint_is_escaped_in_stream_and_page(simulator, memcached, panel) -> None:
    import httpx

    server = await (await panel(**pbx(simulator, memcached))).healthy()
    await server.until(named)
    async with SseClient(f"{server.url}/events") as stream:
        await stream.next_with('id="ext-109"', timeout=10)
        simulator.inject(
            b"Event: ExtensionStatus\r\nPrivilege: call,all\r\nExten: 105\r\nContext: ext-local\r\n"
            b'Hint: Custom:105"><script>alert(1)</script>\r\nStatus: 1\r\nStatusText: InUse\r\n\r\n'
        )
        change = await stream.next_with('id="ext-105"')
    assert "<script>" not in change["data"] and "&lt;script&gt;" in change["data"]
    async with httpx.AsyncClient() as client:
        page = (await client.get(f"{server.url}/")).text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


async def test_head_answers_without_opening_a_stream(simulator, memcached, panel) -> None:
    import httpx

    server = await (await panel(**pbx(simulator, memcached))).healthy()
    async with httpx.AsyncClient() as client, asyncio.timeout(10):
        response = await client.head(f"{server.url}/events")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"].startswith("text/event-stream")
    assert len(server.app.state.viewers) == 0


async def test_a_viewer_that_leaves_is_forgotten(simulator, memcached, panel) -> None:
    server = await (await panel(**pbx(simulator, memcached))).healthy()
    hub, viewers = server.app.state.hub, server.app.state.viewers
    async with SseClient(f"{server.url}/events") as stream:
        await stream.next_with('id="ext-109"', timeout=10)
        assert len(viewers) == 1
    async with asyncio.timeout(5):  # noticed at the next message at the latest (HEARTBEAT=1)
        while len(viewers):
            await hub.head.ready.wait()


@pytest.mark.parametrize("value", ["64k", "1024", "99999999", ""])
def test_a_bad_send_buffer_is_named(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^SEND_BUFFER: .* is not a number of bytes"):
        load_settings(environ={"SEND_BUFFER": value}, env_file=None)
    assert load_settings(environ={"SEND_BUFFER": "131072"}, env_file=None).send_buffer == 131072

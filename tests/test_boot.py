"""A panel running through a PBX restart: the simulator boots like Asterisk 22 (logins taken
before FullyBooted, module actions unknown, hints appearing one by one), and the panel never
shows fewer tiles, never says healthy before the whole picture, and ends with names, presence
and calls as they were. Real uvicorn, the simulator over real TCP, a real event stream."""

from __future__ import annotations

from typing import Any

import httpx

from app.hub import Hub
from app.sim import Simulator
from app.tasks import background
from tests.helpers import SseClient, named, tile_ids_in

EXTENSIONS = [str(n) for n in range(100, 112)]
NAMES = {exten: f"Colleague {exten}" for exten in EXTENSIONS}


async def follow(hub: Hub, seen: list[tuple[str, int, bool]]) -> None:
    """At every update of the hub: the link as viewers are told it, the tiles, the names."""
    update = hub.head
    while True:
        await update.ready.wait()
        assert update.next is not None
        update = update.next
        seen.append((hub.link.state, len(hub.extensions), named(hub)))


def whole(hub: Any) -> bool:
    return hub.link.ok and named(hub) and len(hub.extensions) == len(EXTENSIONS)


async def test_a_panel_runs_through_a_pbx_restart(panel) -> None:
    async with Simulator(EXTENSIONS, names=NAMES) as sim:
        sim.set_presence("104", "dnd", "", "in a meeting")
        server = await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")
        await server.until(lambda hub: whole(hub) and hub.extensions["104@ext-local"]["presence"])
        hub: Hub = server.app.state.hub
        seen: list[tuple[str, int, bool]] = []
        async with (
            background(follow(hub, seen), "restart-follow"),
            SseClient(f"{server.url}/events") as stream,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            await stream.next()  # the whole view
            await sim.restart(boot=3600)  # booting until the test steps it on, by hand
            await stream.next_with("PBX starting")
            health, page = await http.get("/healthz"), await http.get("/")
            assert health.status_code == 503 and health.json()["pbx_connected"] is False
            assert "PBX starting" in page.text and len(tile_ids_in(page.text)) == len(EXTENSIONS)
            sim.load_hints(5)  # the hints come back as events: a dialplan loading
            sim.load_modules()
            assert not hub.link.ok
            seen.append(("FullyBooted", 0, False))
            sim.finish_boot()
            await server.until(whole)
            assert (await http.get("/healthz")).status_code == 200
            sim.place_call("100", "101").answer()  # the PBX runs calls again: they are followed
            tile = await stream.next_with("Colleague 100")
    restarted = seen.index(next(s for s in seen if s[0] == "pbx-starting"))
    booted = seen.index(("FullyBooted", 0, False))
    assert min(tiles for state, tiles, _ in seen if state != "FullyBooted") == len(EXTENSIONS), seen
    assert all(names for state, _, names in seen if state != "FullyBooted"), "no name lost"
    assert not any(state == "ok" for state, _, _ in seen[restarted:booted]), seen
    assert all(tiles == len(EXTENSIONS) for state, tiles, _ in seen if state == "ok")
    assert hub.extensions["104@ext-local"]["presence"]["state"] == "dnd", "presence kept"
    assert [call["party_name"] for call in hub.extensions["101@ext-local"]["calls"]] == ["Colleague 100"]
    assert 'id="ext-101"' in tile["data"]

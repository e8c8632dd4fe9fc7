"""The routes of the app with a real uvicorn: pages, embed, API, health, bad input."""

from __future__ import annotations

import json

import httpx
import pytest

from app.sim import Simulator
from tests.helpers import tile_ids_in

DEMO = {"AMI_HOST": "", "MEMCACHED_URL": "", "DEMO_EXTENSIONS": "100-109", "DEMO_CHURN": "0"}

SCRIPT_POLICY = "script-src 'self'; object-src 'none'; base-uri 'none'"


@pytest.fixture
async def demo(panel):
    server = await (await panel(**DEMO)).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield client


async def test_page_holds_every_tile_and_says_demo(demo: httpx.AsyncClient) -> None:
    response = await demo.get("/")
    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("frame-ancestors 'self'")
    assert tile_ids_in(response.text) == [f"ext-{n}" for n in range(100, 110)]
    assert "demo PBX" in response.text
    assert 'hx-sse:connect="events?since=' in response.text
    assert "static/htmx.min.js" in response.text and "//cdn" not in response.text


async def test_static_files_are_ours(demo: httpx.AsyncClient) -> None:
    for name in ("htmx.min.js", "hx-sse.min.js", "panel.css"):
        response = await demo.get(f"/static/{name}")
        assert response.status_code == 200 and len(response.content) > 1000, name


async def test_embed_shows_only_the_listed_tiles(demo: httpx.AsyncClient) -> None:
    response = await demo.get("/embed", params={"ext": "102,101,999"})
    assert response.status_code == 200
    # A view is canonical: every order of the same list is one view (one cached message).
    assert tile_ids_in(response.text) == ["ext-101", "ext-102", "ext-999"]
    assert "Not on this PBX" in response.text, "an unknown extension is shown as unknown"
    assert 'class="legend"' not in response.text
    assert 'hx-sse:connect="events?ext=101,102,999&amp;since=' in response.text


@pytest.mark.parametrize(
    "ext",
    ["<script>", "101,,102", "1 01", "x" * 65, ",".join(["1"] * 501), "1" * 4001, "101;rm -rf"],
)
async def test_malformed_extension_lists_are_400(demo: httpx.AsyncClient, ext: str) -> None:
    for path in ("/embed", "/", "/events"):
        response = await demo.get(path, params={"ext": ext})
        assert response.status_code == 400, (path, ext)
        assert "ext list" in response.json()["error"]
        assert "<script>" not in response.text
    page = await demo.get("/embed", params={"ext": ext}, headers={"Accept": "text/html"})
    assert page.status_code == 400 and "<script>" not in page.text and "ext list" in page.text


async def test_unknown_routes_are_404(demo: httpx.AsyncClient) -> None:
    assert (await demo.get("/nope")).status_code == 404
    assert (await demo.get("/static/../app/main.py")).status_code == 404
    assert (await demo.post("/")).status_code == 405


async def test_snapshot_api_follows_the_contract(demo: httpx.AsyncClient) -> None:
    response = await demo.get("/api/snapshot")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    snapshot = json.loads(response.content)
    assert set(snapshot) == {"version", "updated_at", "pbx", "extensions", "queues"}
    assert snapshot["pbx"]["connected"] is True
    assert snapshot["extensions"]["105@ext-local"]["state"] == "idle"


async def test_healthz_ok(demo: httpx.AsyncClient) -> None:
    response = await demo.get("/healthz")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ok" and body["pbx_connected"] and body["store_ok"] and body["version"] >= 1


async def test_healthz_degraded_when_the_pbx_is_down(panel) -> None:
    sim = Simulator(["100"], port=0)
    await sim.start()
    server = await (await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")).healthy()
    hub = server.app.state.hub
    await sim.stop()
    while hub.link.ok:
        await hub.head.ready.wait()
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/healthz")
        page = await client.get("/")
    assert response.status_code == 503
    assert response.json() == {**response.json(), "status": "degraded", "pbx_connected": False}
    assert "link-pbx-down" in page.text and "PBX connection lost" in page.text


async def test_a_pbx_never_reached_is_named_with_the_reason(panel, free_port) -> None:
    port = free_port()  # nothing listens there
    server = await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(port), AMI_SECRET="s3cret", MEMCACHED_URL="")
    hub = server.app.state.hub
    await server.until(lambda hub: hub.link.state == "pbx-unreachable")
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/healthz")
        page = await client.get("/")
        api = await client.get("/api/snapshot")
    assert response.status_code == 503 and response.json()["pbx_connected"] is False
    assert f"Cannot reach the PBX at 127.0.0.1:{port} (connection refused)" in page.text
    assert "connection lost" not in page.text and hub.link.error == "connection refused"
    assert "s3cret" not in page.text + api.text


async def test_healthz_degraded_when_memcached_is_down(panel, memcached) -> None:
    url = memcached.url
    memcached.stop()
    server = await panel(MEMCACHED_URL=url, STORE_TIMEOUT="0.3", COLLECTOR="off")
    hub = server.app.state.hub
    while hub.store_ok:
        await hub.head.ready.wait()
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/healthz")
        api = await client.get("/api/snapshot")
        page = await client.get("/")
    assert response.status_code == 503 and response.json()["store_ok"] is False
    assert api.status_code == 503 and "store unreachable" in api.json()["error"]
    assert "link-store-down" in page.text


async def test_frame_ancestors_setting_becomes_the_header(panel) -> None:
    server = await panel(**DEMO, FRAME_ANCESTORS="'self' https://crm.example.com")
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/", "/embed?ext=100", "/healthz", "/nope"):
            response = await client.get(path)
            assert response.headers["content-security-policy"] == (
                "frame-ancestors 'self' https://crm.example.com; " + SCRIPT_POLICY
            ), path


def test_serve_refuses_workers_without_memcached(blf) -> None:
    serve = blf("serve", "--workers", "2", env={"MEMCACHED_URL": ""})
    _, err = serve.proc.communicate(timeout=15)
    assert serve.proc.returncode == 2
    assert err.count("\n") == 1 and "MEMCACHED_URL" in err


async def test_group_and_search_views(demo: httpx.AsyncClient) -> None:
    """The demo ships groups: 100-103 Reception, 104-109 Sales (app/demo-directory.csv)."""
    page = await demo.get("/", params={"group": "reception"})
    assert page.status_code == 200
    assert tile_ids_in(page.text) == ["ext-100", "ext-101", "ext-102", "ext-103"]
    assert 'hx-sse:connect="events?group=reception&amp;since=' in page.text
    assert 'aria-current="page">Reception<' in page.text
    embed = await demo.get("/embed", params={"group": "Sales"})  # a name works like its slug
    assert tile_ids_in(embed.text) == [f"ext-{n}" for n in range(104, 110)]
    search = await demo.get("/", params={"q": "10"})
    assert len(tile_ids_in(search.text)) == 10
    none = await demo.get("/", params={"q": "no such colleague"})
    assert tile_ids_in(none.text) == [] and 'value="no such colleague"' in none.text
    bad = await demo.get("/", params={"group": "!!!"})  # no letter or digit at all
    assert bad.status_code == 400


async def test_the_stream_carries_the_security_headers_once(demo: httpx.AsyncClient) -> None:
    """The stream skips the middleware stack (app.main.Panel): it sets the headers itself."""
    async with demo.stream("GET", "/events", params={"ext": "101"}) as response:
        assert response.status_code == 200
        policy = response.headers.get_list("content-security-policy")
        assert policy == ["frame-ancestors 'self'; " + SCRIPT_POLICY]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
    assert (await demo.post("/events")).status_code == 405


async def test_the_api_and_the_hub_do_not_share_memcached_connections(panel, memcached) -> None:
    """Thousands polling /api/snapshot once starved the hub's reads: the panel went grey
    (docs/benchmarks.md). Each has its own client now."""
    server = await panel(MEMCACHED_URL=memcached.url, COLLECTOR="off")
    assert server.app.state.hub.store is not server.app.state.store

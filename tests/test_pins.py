"""Pinned colleagues: kept in a cookie (or the URL), shown first, and the only ones whose
changes a viewer's screen reader hears."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.hub import Hub
from app.pins import COOKIE, MAX_PINS, parse_pins, toggled
from app.sse import encode
from app.store import MemoryStore
from app.tasks import background
from app.tiles import Renderer
from app.view import View
from tests.helpers import extension_json, publish_to_hub, setvar


def test_pins_are_checked_extensions_each_once_and_few() -> None:
    assert parse_pins("101~105~101~<script>~~x y") == ("101", "105")
    assert parse_pins(",".join(str(n) for n in range(100, 150)), ",") == tuple(
        str(n) for n in range(100, 100 + MAX_PINS)
    )
    assert parse_pins("1" * 10_000) == (), "an over-long cookie is dropped whole"
    assert parse_pins(None) == ()


def test_toggling_pins_and_unpins_and_keeps_the_newest() -> None:
    assert toggled(("101",), "105") == ("101", "105")
    assert toggled(("101", "105"), "101") == ("105",)
    full = tuple(str(n) for n in range(100, 100 + MAX_PINS))
    assert toggled(full, "999") == (*full[1:], "999")


def snapshot(version: int, **states: str) -> dict:
    extensions = {
        f"{exten}@ext-local": extension_json(exten, state, name=f"Person {exten}")
        for exten, state in states.items()
    }
    return {"version": version, "pbx": {"connected": True, "since": 1.0}, "extensions": extensions}


async def test_only_a_viewer_who_pinned_a_colleague_hears_of_them() -> None:
    store = MemoryStore()
    hub = Hub(store, Renderer(languages=("en", "ru")), encode, heartbeat=3600)
    async with background(hub.run(), "hub-under-test"):
        await publish_to_hub(store, hub, snapshot(1, **{"101": "idle", "102": "idle"}))
        pinned, other = hub.join(View(pins=("101",))), hub.join(View())
        russian = hub.join(View(pins=("101",), lang="ru"))
        start = hub.head
        await publish_to_hub(store, hub, snapshot(2, **{"101": "ringing", "102": "inuse"}))
        chain = [start.next]
        said = hub.message(pinned, chain).decode()
        assert 'id="announce" hx-swap-oob="innerHTML"' in said and "Person 101: Ringing" in said
        assert "Person 102" not in said.split('id="announce"')[1], "102 is not pinned: not announced"
        assert 'id="announce"' not in hub.message(other, chain).decode()
        assert "Person 101: Звонит" in hub.message(russian, chain).decode(), "in the viewer's language"
        start = hub.head
        await publish_to_hub(store, hub, snapshot(3, **{"101": "ringing", "102": "idle"}))
        assert 'id="announce"' not in hub.message(pinned, [start.next]).decode(), "101 did not change"


async def test_pinning_sets_a_cookie_and_the_panel_shows_the_pinned_first(panel) -> None:
    from app.sim import Simulator

    async with Simulator([str(n) for n in range(100, 110)], port=0) as sim:
        server = await (await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")).healthy()
        async with httpx.AsyncClient(base_url=server.url) as client:
            answer = await client.post(
                "/pins", data={"exten": "107"}, headers={"Referer": f"{server.url}/?q=1"}
            )
            assert answer.status_code == 303 and answer.headers["location"] == "/?q=1"
            assert client.cookies[COOKIE] == "107"
            page = (await client.get("/")).text
            assert page.index('id="ext-107"') < page.index('id="ext-100"'), "the pinned colleague first"
            assert 'id="announce"' in page and "panel=1" in page
            bad = await client.post("/pins", data={"exten": "<x>"})
            assert bad.status_code == 400 and "extension" in bad.text
            again = await client.post("/pins", data={"exten": "107"})
            assert again.status_code == 303 and again.headers["location"] == "./"
            assert COOKIE not in client.cookies, "unpinning the last one clears the cookie"
            foreign = await client.post(
                "/pins", data={"exten": "105"}, headers={"Origin": "https://evil.example"}
            )
            assert foreign.status_code == 403 and COOKIE not in client.cookies
            url = (await client.get("/", params={"pins": "105,109"})).text
            assert url.index('id="ext-109"') < url.index('id="ext-100"'), "pins in the URL (a wallboard)"


async def test_a_pinned_colleague_is_announced_in_chromium(panel, browser) -> None:
    from playwright.async_api import expect

    from app.sim import Simulator

    async with Simulator([str(n) for n in range(100, 110)], port=0) as sim:
        server = await (await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")).healthy()
        context = await browser.new_context(locale="en-GB")
        page = await context.new_page()
        await page.goto(server.url + "/")
        tile = page.locator("#ext-104")
        await tile.focus()  # the keyboard's way: the controls show on a focused tile
        await tile.locator("form.pin button").click()
        await expect(page.locator("section.group").first.locator("h2")).to_have_text("Pinned")
        await expect(page.locator("section.group").first.locator("article.tile")).to_have_attribute(
            "id", "ext-104"
        )
        async with asyncio.timeout(10):
            while not server.app.state.hub.views:  # the page's stream is open
                await server.app.state.hub.head.ready.wait()
        await setvar(sim.port, "Custom:104", "INUSE")
        await expect(page.locator("#announce")).to_contain_text("On a call")
        await setvar(sim.port, "Custom:105", "RINGING")
        await expect(page.locator("#ext-105")).to_have_class("tile state-ringing", timeout=5000)
        await expect(page.locator("#announce")).not_to_contain_text("105")
        await context.close()


@pytest.mark.parametrize("accept, word", [("ru-RU,ru;q=0.9", 'lang="ru"'), ("en-US", 'lang="en"')])
async def test_the_page_speaks_the_browsers_language(panel, accept: str, word: str) -> None:
    from app.sim import Simulator

    async with Simulator(["100", "101"], port=0) as sim:
        server = await (await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")).healthy()
        async with httpx.AsyncClient(base_url=server.url) as client:
            page = (await client.get("/", headers={"Accept-Language": accept})).text
    assert f"<html {word}>" in page

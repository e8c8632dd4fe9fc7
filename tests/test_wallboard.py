"""The wallboard (`?view=wall`, issue 13 item 3) in a real browser at 1920x1080: tiles sized
by how many are shown, 300 colleagues (the demo's groups and queues) on one screen with no
scrolling, the state word readable from three metres at 50, no chrome but the link banner,
a live stream; `/queues?view=wall` the same for the queue tiles. The PBX is the simulator
over real TCP.

`BLF_SCREENSHOTS=1 .venv/bin/pytest tests/test_wallboard.py` re-makes docs/wallboard.png
(300 colleagues) and docs/wallboard-queues.png.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from app.runtime import DEMO_DIRECTORY
from app.sim import Simulator
from app.sim.churn import demo_queues
from tests.helpers import SseClient, named, setvar
from tests.test_browser import INUSE, LINK_OK, open_panel, pbx

DOCS = Path(__file__).parent.parent / "docs"
OFFICE = [str(n) for n in range(100, 400)]  # the demo's 300 (DEMO_EXTENSIONS=100-399)
TV = {"width": 1920, "height": 1080}
GROUPED = "section.group"

# Where every tile is and whether anything shows past the screen or past its tile: a
# line of text that does not fit must not spill onto the next tile.
LAYOUT = """() => {
    const tiles = [...document.querySelectorAll("#tiles > .tile")];
    const inside = (r, box) => r.top >= box.top - 0.5 && r.bottom <= box.bottom + 0.5
        && r.left >= box.left - 0.5 && r.right <= box.right + 0.5;
    const screen = {top: 0, left: 0, bottom: innerHeight, right: innerWidth};
    const spilling = [];
    for (const tile of tiles) {
        const box = tile.getBoundingClientRect();
        for (const part of tile.children) {
            const r = part.getBoundingClientRect();
            if (r.width && r.height && !inside(r, box)) spilling.push(tile.id + " ." + part.className);
        }
    }
    const first = tiles[0].getBoundingClientRect();
    const size = (tile) => parseFloat(getComputedStyle(tile.querySelector(".label")).fontSize);
    return {
        tiles: tiles.length,
        scrollHeight: document.documentElement.scrollHeight,
        scrollWidth: document.documentElement.scrollWidth,
        offScreen: tiles.filter(t => !inside(t.getBoundingClientRect(), screen)).map(t => t.id),
        spilling,
        tile: [first.width, first.height],
        stateWord: Math.min(...tiles.map(size)),
    };
}"""


@pytest.fixture
async def office() -> AsyncIterator[Simulator]:
    """The demo's 300 extensions and queues, some of them busy in every way a tile shows:
    calls (one on hold, some ringing), a phone ringing while on a call, presences,
    offline phones, a paused agent, callers waiting in a queue."""
    async with Simulator(OFFICE, port=0, seed=7) as sim:
        demo_queues(sim)
        mix = random.Random(7)
        free = OFFICE[:]
        mix.shuffle(free)
        for n in range(16):
            call = sim.place_call(free.pop(), free.pop())
            if n % 5:
                call.answer()
            if n % 5 and n % 7 == 1:
                call.hold()
        for n in range(8):
            call = sim.place_call(f"+49301{mix.randrange(100000, 999999)}", free.pop())
            if n % 3:
                call.answer()
        sim.set_device_state(f"Custom:{free.pop()}", "RINGINUSE")
        for exten in free[:8]:
            sim.set_presence(
                exten, mix.choice(["dnd", "away", "xa"]), "", mix.choice(["In a meeting", "Lunch"])
            )
        for exten in free[8:14]:
            sim.set_device_state(f"Custom:{exten}", "UNAVAILABLE")
        support = sim.queues.queues["support"]
        sim.queues.set_paused(support, support.members[1], True, "lunch")
        sim.queues.join("support", "+4930123456", "Max Muster")
        sim.queues.join("support", "+4930654321", "Erika Muster")
        yield sim


def office_settings(sim: Simulator, **more: str) -> dict[str, str]:
    return pbx(sim.port, DIRECTORY_FILE=str(DEMO_DIRECTORY), **more)


async def wall_page(browser: Any, url: str) -> Any:
    return await open_panel(browser, url, viewport=TV, reduced_motion="reduce")


async def no_chrome(page: Page) -> None:
    """No search, legend, group nav, sign-out or links away: the title and count only."""
    for chrome in ("form.views", "input[type=search]", ".legend", "nav", ".signout", "header a"):
        await expect(page.locator(chrome)).to_have_count(0)
    await expect(page.locator("body")).to_have_class(re.compile(r"(^|\s)wall(\s|$)"))


async def test_300_colleagues_and_the_queues_fit_a_1080p_screen_with_no_scrolling(
    office, panel, browser
) -> None:
    server = await (await panel(**office_settings(office))).healthy()
    await server.until(lambda hub: named(hub) and len(hub.extensions) == len(OFFICE) and len(hub.queues) == 2)
    board = await wall_page(browser, server.url + "/?view=wall")
    page = board.page
    await expect(page.locator("#tiles > article.tile")).to_have_count(len(OFFICE) + 2)
    await expect(page.locator("#count")).to_have_text("300 extensions")
    await no_chrome(page)
    await expect(page.locator(GROUPED)).to_have_count(0)  # one grid: headings cost rows
    await expect(page.locator("#tiles > .state-inuse_ringing")).to_have_count(1)  # a two-line state word
    layout = await page.evaluate(LAYOUT)
    assert layout["scrollHeight"] <= TV["height"], f"the wall scrolls: {layout['scrollHeight']} px tall"
    assert layout["scrollWidth"] <= TV["width"]
    assert layout["offScreen"] == [], f"tiles past the screen: {layout['offScreen']}"
    assert layout["spilling"] == [], f"text past its tile: {layout['spilling']}"
    if os.environ.get("BLF_SCREENSHOTS"):
        await page.screenshot(path=DOCS / "wallboard.png")

    # Fewer colleagues, bigger tiles: the tier follows the number shown.
    fifty = ",".join(OFFICE[:50])
    await page.goto(f"{server.url}/?view=wall&ext={fifty}")
    await expect(page.locator("#tiles > article.tile")).to_have_count(50)
    layout = await page.evaluate(LAYOUT)
    assert layout["stateWord"] >= 24, f"state word {layout['stateWord']} px: not readable from 3 m"
    assert layout["tile"][0] > 200 and layout["tile"][1] > 150, layout["tile"]
    assert layout["offScreen"] == [] and layout["spilling"] == [], layout
    assert layout["scrollHeight"] <= TV["height"]

    await page.goto(f"{server.url}/?view=wall&ext={','.join(OFFICE[:12])}")
    await expect(page.locator("#tiles > article.tile")).to_have_count(12)
    layout = await page.evaluate(LAYOUT)
    width, height = layout["tile"]
    assert 400 < width < TV["width"] / 3 and 250 < height < TV["height"] / 2, "big tiles, not one giant one"
    assert layout["stateWord"] >= 36 and layout["spilling"] == [], layout
    assert board.errors == [], "\n".join(board.errors)
    await board.context.close()


async def test_the_wall_is_live_and_stays_one_grid_when_colleagues_come(office, panel, browser) -> None:
    server = await (await panel(**office_settings(office))).healthy()
    await server.until(lambda hub: named(hub) and len(hub.extensions) == len(OFFICE))
    board = await wall_page(browser, server.url + "/?view=wall&group=sales")
    page = board.page
    sse = await page.locator(".sse").get_attribute("hx-sse:connect")
    assert sse is not None and "view=wall" in sse and "group=sales" in sse, sse
    sales = page.locator("#tiles > article.tile")
    count = await sales.count()
    assert 0 < count < 50
    quiet = await page.locator("#tiles > article.state-idle").first.get_attribute("id")
    assert quiet is not None
    await setvar(office.port, f"Custom:{quiet.removeprefix('ext-')}", "INUSE")
    await expect(page.locator(f"#{quiet}")).to_have_class(INUSE, timeout=2000)

    # A stream's whole view (here: its first message, with no resume point) is the wall's:
    # one grid of tiles, no group sections, in the view's group only.
    async with SseClient(f"{server.url}/events?view=wall") as stream:
        whole = (await stream.next_with('id="tiles"'))["data"]
    assert "<section" not in whole and whole.count("<article") == len(OFFICE) + 2
    async with SseClient(f"{server.url}/events") as stream:
        assert "<section" in (await stream.next_with('id="tiles"'))["data"], "the panel lost its groups"
    assert board.errors == [], "\n".join(board.errors)
    await board.context.close()


async def test_the_banner_shows_on_the_wall_when_the_pbx_is_down(panel, browser) -> None:
    sim = Simulator(OFFICE[:50], port=0)
    await sim.start()
    try:
        settings = pbx(sim.port, AMI_PING_INTERVAL="0.5", AMI_PING_TIMEOUT="0.5", AMI_RECONNECT_MAX="0.5")
        server = await (await panel(**settings)).healthy()
        board = await wall_page(browser, server.url + "/?view=wall")
        page = board.page
        link = page.locator("#link")
        await expect(link).to_have_class(LINK_OK)
        await sim.stop()
        await expect(link).not_to_have_class(LINK_OK, timeout=5000)
        banner = link.locator(".banner")
        await expect(banner).to_contain_text("PBX connection lost")
        await expect(banner).to_be_in_viewport()
        assert float(await banner.evaluate("el => parseFloat(getComputedStyle(el).fontSize)")) >= 24
        layout = await page.evaluate(LAYOUT)  # the banner took its line: the tiles still fit
        assert layout["offScreen"] == [] and layout["spilling"] == [], layout
        assert layout["stateWord"] >= 24, layout
        assert layout["scrollHeight"] <= TV["height"], layout
        await no_chrome(page)
        await board.context.close()
    finally:
        await sim.stop()


async def test_the_queues_wall(office, panel, browser) -> None:
    server = await (await panel(**office_settings(office))).healthy()
    await server.until(lambda hub: hub.queues.get("support", {}).get("callers"))
    board = await wall_page(browser, server.url + "/queues?view=wall")
    page = board.page
    await expect(page.locator("#tiles > article.tile")).to_have_count(2)
    await expect(page.locator("#queue-support")).to_contain_text("2 waiting")
    await no_chrome(page)
    sse = await page.locator(".sse").get_attribute("hx-sse:connect")
    assert sse is not None and "queues=1" in sse and "view=wall" in sse, sse
    layout = await page.evaluate(LAYOUT)
    assert layout["stateWord"] >= 36 and layout["offScreen"] == [] and layout["spilling"] == [], layout
    office.queues.join("support", "+4930111111", "Third Caller")
    await expect(page.locator("#queue-support")).to_contain_text("3 waiting", timeout=2000)
    if os.environ.get("BLF_SCREENSHOTS"):
        await page.screenshot(path=DOCS / "wallboard-queues.png")
    assert board.errors == [], "\n".join(board.errors)
    await board.context.close()


async def test_a_view_other_than_wall_is_refused_with_a_clear_message(panel) -> None:
    async with Simulator(OFFICE[:5], port=0) as sim:
        server = await (await panel(**pbx(sim.port))).healthy()
        async with httpx.AsyncClient(base_url=server.url) as client:
            for path in ("/?view=bogus", "/queues?view=Wall", "/events?view=wall2"):
                response = await client.get(path)
                assert response.status_code == 400, path
                assert "the view must be wall" in response.json()["error"], path
            page = await client.get("/?view=<b>x</b>", headers={"Accept": "text/html"})
            assert page.status_code == 400 and "the view must be wall" in page.text
            assert "<b>x</b>" not in page.text
            assert (await client.get("/?view=wall")).status_code == 200

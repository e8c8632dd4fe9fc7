"""Whole text and running durations on the tiles, in a real browser (issue 13, items 1
and 2): a long name, presence or party is cut on a small tile but whole in its title;
Tab (or a tap on a phone) focuses the tiles in reading order and the focused tile shows
every line in full, over its neighbours, moving none of them; durations advance on
screen with no message. The PBX is the simulator over real TCP.

`BLF_SCREENSHOTS=1 .venv/bin/pytest tests/test_tile_text_browser.py` re-makes
docs/panel-expanded.png (1920x1080) and docs/panel-expanded-phone.png (390x844).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from app.sim import Simulator
from tests.helpers import named
from tests.test_browser import Watched, open_panel, pbx

DOCS = Path(__file__).parent.parent / "docs"
EXTENSIONS = [str(n) for n in range(100, 160)]
LONG_NAME = "Maximiliane Kowalczyk-Schneiderova"
NAMES = {"101": LONG_NAME, "103": "Ida Costa", "104": "Finn Braun", "105": "Lea Weber"}
LONG_PRESENCE = "In a meeting with the auditors until a quarter past three"
CALLER = "Bartholomew Featherstonehaugh-Smythe"
CALLER_NUMBER = "+4930123456789"

# What the page shows of one element (read through the DevTools protocol: no script of ours).
CUT = "(el) => el.scrollWidth > el.clientWidth + 1"
WHOLE = "(el) => el.scrollWidth <= el.clientWidth + 1 && el.getBoundingClientRect().width > 2"
BOXES = """(skip) => Object.fromEntries([...document.querySelectorAll('article.tile')]
    .filter(el => el.id !== skip)
    .map(el => { const r = el.getBoundingClientRect(); return [el.id, [r.x, r.y, r.width, r.height]]; }))"""
FOCUSED = (
    "() => { const tile = document.activeElement?.closest('article.tile'); return tile ? tile.id : null; }"
)
ELAPSED = "(el) => parseInt(getComputedStyle(el).getPropertyValue('--elapsed'))"
ADVANCED = (
    "([sel, n]) => parseInt(getComputedStyle(document.querySelector(sel)).getPropertyValue('--elapsed')) >= n"
)


async def shown_text(page: Any, selector: str) -> str:
    """What a screen reader reads of an element: Chromium's accessibility tree, CSS
    generated content (the running counters) included."""
    cdp = await page.context.new_cdp_session(page)
    node = await cdp.send("DOM.describeNode", {"objectId": await _object_id(cdp, selector)})
    tree = await cdp.send("Accessibility.getPartialAXTree", {"backendNodeId": node["node"]["backendNodeId"]})
    await cdp.detach()
    return "".join(n["name"]["value"] for n in tree["nodes"] if n["role"]["value"] == "StaticText")


async def _object_id(cdp: Any, selector: str) -> str:
    found = await cdp.send("Runtime.evaluate", {"expression": f"document.querySelector({selector!r})"})
    return found["result"]["objectId"]


async def a_panel(panel: Any, sim: Simulator, **settings: str) -> Any:
    server = await (
        await panel(**pbx(sim.port, HEARTBEAT="60", **settings))
    ).healthy()  # no heartbeat meanwhile
    await server.until(named)
    sim.set_presence("106", "away", "", "Lunch")  # an event: its start is known
    call = sim.place_call(CALLER_NUMBER, "103", caller_name=CALLER)
    call.answer()
    await server.until(lambda hub: hub.extensions["103@ext-local"]["calls"])
    await server.until(lambda hub: (hub.extensions["106@ext-local"]["presence"] or {}).get("since"))
    return server


def the_pbx() -> Simulator:
    return Simulator(EXTENSIONS, port=0, names=NAMES)


async def prepare(sim: Simulator) -> None:
    """Up before the panel: a call of an hour (its start comes from CoreShowChannels), a
    long presence message (listed at login: since when is not known)."""
    long_call = sim.place_call("104", "105")
    long_call.answer()
    for channel in (long_call.a, long_call.b):
        channel.created -= 3600 + 5  # the simulator's clock: up for an hour already
    sim.set_presence("102", "dnd", "", LONG_PRESENCE)


async def tab_to(page: Any, tile_id: str, limit: int = 200) -> list[str]:
    """Press Tab until `tile_id` holds the focus; the tiles focused on the way, in order."""
    order: list[str] = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        if focused and (not order or order[-1] != focused):
            order.append(focused)
        if focused == tile_id:
            return order
    raise AssertionError(f"Tab never reached {tile_id}: {order}")


async def test_whole_text_by_title_and_by_focus_with_durations_that_advance(panel, browser, tmp_path) -> None:
    directory = tmp_path / "directory.csv"  # the panel in sections, as most run it
    rows = [f"{e},{NAMES.get(e, '')},{'Front desk' if int(e) < 130 else 'Sales'}" for e in EXTENSIONS]
    directory.write_text("exten,name,group\n" + "\n".join(rows) + "\n")
    async with the_pbx() as sim:
        await prepare(sim)
        server = await a_panel(panel, sim, DIRECTORY_FILE=str(directory))
        desktop: Watched = await open_panel(
            browser, server.url + "/", viewport={"width": 1920, "height": 1080}
        )
        page = desktop.page
        await page.mouse.move(1, 1)  # nothing hovered
        name, presence, call = (
            page.locator("#ext-101 .name"),
            page.locator("#ext-102 .presence .what"),
            page.locator("#ext-103 .call .what"),
        )
        # Cut on screen, whole in the title.
        for element in (name, presence, call):
            assert await element.evaluate(CUT), await element.inner_text()
        assert await name.get_attribute("title") == LONG_NAME
        assert (
            await page.locator("#ext-102 .presence").get_attribute("title")
            == f"Do not disturb: {LONG_PRESENCE}"
        )
        call_title = await page.locator("#ext-103 .call").get_attribute("title")
        assert call_title.startswith(f"from {CALLER} ({CALLER_NUMBER}), since "), call_title

        # Durations: the call of an hour shows its true length, free colleagues none.
        assert re.fullmatch(r"1:00:\d\d", await shown_text(page, "#ext-104 .call time")), "h:mm:ss"
        assert re.fullmatch(r"1:00:\d\d", await shown_text(page, "#ext-104 time.since")), (
            "on a call for an hour"
        )
        assert await page.locator("#ext-110 time").count() == 0, "free since when: unknown, so no time"
        assert re.fullmatch(r"0:0\d", await shown_text(page, "#ext-106 .presence time")), (
            "away since the event"
        )
        # A running call advances by 2 s on screen with no message.
        ticking = "#ext-103 .call time"
        messages = await page.evaluate("window.__sse")
        first = await page.locator(ticking).evaluate(ELAPSED)
        before = await page.locator("#ext-103").screenshot()
        await page.wait_for_function(ADVANCED, arg=[ticking, first + 2], timeout=6_000, polling=200)
        assert await page.locator("#ext-103").screenshot() != before, "the duration on screen did not change"
        assert await page.evaluate("window.__sse") == messages, "it advanced by a message, not by CSS"
        assert re.fullmatch(r"0:\d\d", await shown_text(page, ticking))

        # Tab goes through the tiles in reading order; the focused one shows all its text.
        boxes = await page.evaluate(BOXES, "ext-103")
        order = await tab_to(page, "ext-103")
        dom = await page.evaluate("() => [...document.querySelectorAll('article.tile')].map(el => el.id)")
        assert order == dom[: len(order)] and order[-1] == "ext-103", order
        tile = page.locator("#ext-103")
        assert await tile.evaluate("(el) => getComputedStyle(el).outlineWidth") == "3px", (
            "a visible focus ring"
        )
        for line in ("#ext-103 .name", "#ext-103 .call .what", "#ext-103 time.since"):
            assert await page.locator(line).evaluate(WHOLE), line
        assert await page.evaluate(BOXES, "ext-103") == boxes, "the focused tile moved another"
        if os.environ.get("BLF_SCREENSHOTS"):
            await page.screenshot(path=DOCS / "panel-expanded.png")
        # Hovered, the same: the long name of 101 in full; a tile with little to show is no
        # shorter than its row.
        await page.locator("#ext-101").hover()
        assert await name.evaluate(WHOLE)
        await page.locator("#ext-111").hover()
        height = "(el) => el.getBoundingClientRect().height"
        assert await page.locator("#ext-111").evaluate(height) >= await page.locator("#ext-112").evaluate(
            height
        )
        assert desktop.errors == [], desktop.errors
        await desktop.context.close()


async def test_a_tap_on_a_phone_focuses_and_expands_a_tile(panel, browser) -> None:
    async with the_pbx() as sim:
        await prepare(sim)
        server = await a_panel(panel, sim)
        phone = await open_panel(
            browser,
            server.url + "/",
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            has_touch=True,
            reduced_motion="reduce",
        )
        page = phone.page
        presence = page.locator("#ext-102 .presence .what")
        assert await presence.evaluate(CUT)
        boxes = await page.evaluate(BOXES, "ext-102")
        await page.locator("#ext-102 .name").tap()
        assert await page.evaluate(FOCUSED) == "ext-102"
        assert await presence.evaluate(WHOLE)
        assert await page.evaluate(BOXES, "ext-102") == boxes, "the tapped tile moved another"
        if os.environ.get("BLF_SCREENSHOTS"):
            await page.screenshot(path=DOCS / "panel-expanded-phone.png")
        assert phone.errors == [], phone.errors
        await phone.context.close()

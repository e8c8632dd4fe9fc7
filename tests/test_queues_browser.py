"""Queues in a real browser: a paused agent, and a queue tile whose wait advances on screen
with no new message (CSS only). The PBX is the simulator over real TCP.

`BLF_SCREENSHOTS=1 .venv/bin/pytest tests/test_queues_browser.py` re-makes docs/queues.png
and docs/panel-paused.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.async_api import expect

from app.sim import Simulator
from tests.helpers import named
from tests.test_browser import open_panel, pbx

DOCS = Path(__file__).parent.parent / "docs"
ELAPSED = "(sel) => parseInt(getComputedStyle(document.querySelector(sel)).getPropertyValue('--elapsed'))"
ADVANCED = (
    "([sel, n]) => parseInt(getComputedStyle(document.querySelector(sel)).getPropertyValue('--elapsed')) >= n"
)


async def test_a_paused_agent_and_a_wait_that_advances_without_a_message(panel, browser) -> None:
    extensions = [str(n) for n in range(100, 112)]
    async with Simulator(extensions, port=0, names={"100": "Anna Berg", "101": "Ben Kohl"}) as sim:
        sim.queues.add_queue(
            "support",
            [("PJSIP/100", "Anna Berg", "Custom:100"), ("PJSIP/101", "Ben Kohl", "Custom:101")],
        )
        sim.queues.add_queue("sales", [("PJSIP/102", "", "Custom:102"), ("PJSIP/103", "", "Custom:103")])
        support = sim.queues.queues["support"]
        sim.queues.set_paused(support, support.members[0], True, "lunch")
        sim.queues.join("support", "+4930123456", "Max Muster")
        # A heartbeat is a message: make sure none comes while the wait is watched.
        server = await (await panel(**pbx(sim.port, HEARTBEAT="60"))).healthy()
        await server.until(named)
        await server.until(lambda hub: hub.queues.get("support", {}).get("callers"))

        board = await open_panel(browser, server.url + "/queues", viewport={"width": 900, "height": 420})
        page = board.page
        tile = page.locator("#queue-support")
        await expect(tile).to_contain_text("1 waiting")
        await expect(tile).to_contain_text("1 paused")
        messages = await page.evaluate("window.__sse")
        first = await page.evaluate(ELAPSED, "#queue-support .ticking")
        before = await tile.screenshot()
        # Await the counter itself (no sleep): 2 s on, with no message in between.
        await page.wait_for_function(
            ADVANCED, arg=["#queue-support .ticking", first + 2], timeout=5_000, polling=200
        )
        after = await tile.screenshot()
        assert await page.evaluate("window.__sse") == messages, "the wait advanced by a message, not by CSS"
        assert before != after, "the wait shown on screen did not change"
        if os.environ.get("BLF_SCREENSHOTS"):
            await page.screenshot(path=DOCS / "queues.png")

        operator = await open_panel(browser, server.url + "/", viewport={"width": 1100, "height": 520})
        anna = operator.page.locator("#ext-100")
        await expect(anna).to_have_class(re.compile(r"(^|\s)paused(\s|$)"))
        await expect(anna.locator(".pause")).to_contain_text("Paused: lunch")
        ben = operator.page.locator("#ext-101")
        await expect(ben).not_to_have_class(re.compile(r"(^|\s)paused(\s|$)"))
        # Not free at a glance: another border, another background than a free colleague's.
        look = "(el) => [getComputedStyle(el).borderTopStyle, getComputedStyle(el).backgroundImage]"
        assert await anna.evaluate(look) != await ben.evaluate(look)
        await expect(operator.page.locator("#queue-support")).to_contain_text("1 waiting")
        if os.environ.get("BLF_SCREENSHOTS"):
            await operator.page.screenshot(path=DOCS / "panel-paused.png")
        assert board.errors == [] and operator.errors == [], board.errors + operator.errors
        await board.context.close()
        await operator.context.close()

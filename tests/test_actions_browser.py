"""Acting from the panel in a real Chromium (issue 14): an operator on a call transfers the
caller to a free colleague by the tile's menu, and both tiles change by the normal stream;
a viewer-only user sees no button, and a POST forged in their browser is refused."""

# ruff: noqa: F811 - the fixtures of tests/test_actions.py, imported to be shared

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import expect

from tests.test_accessibility import SERIOUS, axe_violations, described
from tests.test_actions import PASSWORD, call_state, on_a_call, settings, sim, users_text  # noqa: F401
from tests.test_browser import watched_page

DOCS = Path(__file__).resolve().parent.parent / "docs"


async def sign_in_page(browser, server, name: str):
    """A page signed in as `name`, its stream open."""
    watched = await watched_page(browser)
    page = watched.page
    await page.goto(f"{server.url}/")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    async with page.expect_response(lambda r: "/events?" in r.url and r.status == 200, timeout=10_000):
        await page.click("button[type=submit]")
    return watched


async def test_an_operator_transfers_the_caller_by_the_tiles_menu(panel, browser, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    await on_a_call(server, sim, "+4930123456", "100")
    watched = await sign_in_page(browser, server, "op")
    page = watched.page
    await expect(page.locator("#ext-100")).to_have_class("tile state-inuse")
    colleague = page.locator("#ext-101")
    await colleague.focus()  # the keyboard's way in: a focused tile shows its controls
    await colleague.locator("details.menu summary").click()
    if os.environ.get("BLF_SCREENSHOTS") == "1":  # re-makes docs/panel-actions.png
        await page.screenshot(
            path=DOCS / "panel-actions.png", clip={"x": 0, "y": 0, "width": 900, "height": 360}
        )
    serious = [v for v in await axe_violations(page, "the Act menu open") if v["impact"] in SERIOUS]
    assert serious == [], described(serious)
    async with page.expect_response(lambda r: "/actions/transfer" in r.url) as answer:
        await colleague.locator("button.act-transfer").click()
    assert (await answer.value).status == 200
    # the lamps change by the stream: the colleague rings, then talks; my own tile is free
    await expect(page.locator("#ext-101")).to_have_class("tile state-ringing", timeout=5000)
    await expect(page.locator("#ext-101")).to_have_class("tile state-inuse", timeout=5000)
    await expect(page.locator("#ext-100")).to_have_class("tile state-idle", timeout=5000)
    assert call_state(server, "100") == ("idle", [])
    # the tiles the stream swapped in are drawn for this user too: their controls are there
    await expect(page.locator("#ext-101 details.menu")).to_have_count(1)
    await expect(page.locator("#ext-100 details.menu")).to_have_count(1)
    await page.locator("#ext-101").focus()
    await expect(page.locator("#ext-101 details.menu")).to_be_visible()
    await page.locator("#ext-100").focus()
    await expect(page.locator("#ext-100 form.pin")).to_be_visible()
    await expect(page.locator("#ext-100 details.menu")).to_be_hidden()  # my own phone: nothing to act on
    assert watched.errors == []
    await watched.context.close()


async def test_a_refusal_is_said_on_the_tile(panel, browser, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    watched = await sign_in_page(browser, server, "op")
    page = watched.page
    colleague = page.locator("#ext-102")
    await colleague.focus()
    await colleague.locator("details.menu summary").click()
    await colleague.locator("button.act-transfer").click()  # no call of mine to transfer
    await expect(colleague.locator("output")).to_have_text("You have no call to transfer.")
    await watched.context.close()


async def test_a_viewer_without_the_right_sees_no_button_and_a_forged_post_is_refused(
    panel, browser, settings, sim
) -> None:
    server = await (await panel(**settings, ACTION_ROLES="supervisor=all;admin=all")).healthy()
    watched = await sign_in_page(browser, server, "op")
    page = watched.page
    await expect(page.locator("article.tile")).to_have_count(4)
    assert await page.locator("details.menu, button.act-transfer, #csrf").count() == 0
    assert await page.locator("form.pin").count() == 4, "pinning is for everyone"
    status = await page.evaluate(
        """async () => {
            const body = new URLSearchParams({csrf: "forged", target: "101"});
            const answer = await fetch("actions/transfer", {method: "POST", body});
            return answer.status;
        }"""
    )
    assert status == 403
    await watched.context.close()

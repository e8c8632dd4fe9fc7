"""Sign-in and sign-out in a real Chromium: the form (no script of ours), only the user's
scope on the page, and after sign-out the stream is gone and cannot come back."""

from __future__ import annotations

import asyncio

from tests.auth.conftest import PASSWORDS
from tests.test_browser import watched_page


async def test_sign_in_see_the_scope_sign_out_and_the_stream_stops(
    panel, browser, signed_in_settings
) -> None:
    server = await panel(**signed_in_settings, HEARTBEAT="1")  # the hub's beat wakes the check below
    await server.healthy()
    viewers = server.app.state.viewers
    watched = await watched_page(browser)
    page = watched.page
    await page.goto(f"{server.url}/")
    assert page.url == f"{server.url}/signin"  # sent to the sign-in page, nothing shown
    await page.fill("input[name=name]", "anna")
    await page.fill("input[name=password]", "not her password")
    await page.click("button[type=submit]")
    assert "Wrong name or password." in await page.inner_text("main")
    await page.fill("input[name=password]", PASSWORDS["anna"])
    # Awaited by its response, not by a polled script: the page's CSP forbids eval, which
    # Playwright's string predicates need.
    async with page.expect_response(lambda r: "/events?" in r.url and r.status == 200, timeout=10_000):
        await page.click("button[type=submit]")
    assert page.url == f"{server.url}/"
    tiles = await page.eval_on_selector_all("article[id^=ext-]", "nodes => nodes.map(n => n.id)")
    assert sorted(tiles) == ["ext-101", "ext-102"]  # anna's scope: ext=101,102
    assert len(viewers) == 1
    cookies = await watched.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("blf_session", True, "Lax")]
    await page.click("form.signout button")
    await page.wait_for_url(f"{server.url}/signin")
    async with asyncio.timeout(10):  # the page's stream ended with the page
        while len(viewers):
            await server.app.state.hub.head.ready.wait()
    again = await page.goto(f"{server.url}/events?ext=101")
    assert again is not None and again.status == 401
    unexpected = [e for e in watched.errors if "/signin" not in e and "/events" not in e]
    assert unexpected == []
    await watched.context.close()

"""Search and groups that explain themselves: digits anywhere in the number, a count that
follows what is shown, and words when nothing is."""

from __future__ import annotations

import httpx

from app.schema import ExtensionJSON
from app.scope import ALL
from app.view import View
from tests.helpers import extension_json


def ext(exten: str, name: str = "") -> ExtensionJSON:
    return extension_json(exten, name=name)  # type: ignore[return-value]


def test_digits_match_anywhere_in_the_number() -> None:
    view = View(query="12", scope=ALL)
    found = [e for e in ("112", "212", "120", "129", "121", "310", "102") if view.holds(ext(e), frozenset())]
    assert found == ["112", "212", "120", "129", "121"]
    assert View(query="ann").holds(ext("300", "Anna Smith"), frozenset())


async def test_the_page_says_what_it_shows(panel) -> None:
    from app.sim import Simulator

    async with Simulator([str(n) for n in range(100, 110)], port=0) as sim:
        server = await (await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")).healthy()
        async with httpx.AsyncClient(base_url=server.url) as client:
            everything = (await client.get("/")).text
            some = (await client.get("/", params={"q": "10"})).text
            one = (await client.get("/", params={"q": "05"})).text
            none = (await client.get("/", params={"q": "zzzzz"})).text
            nope = (await client.get("/", params={"group": "nope"})).text
    assert '<span class="count" id="count">10 extensions' in everything and "No colleague" not in everything
    assert '<span class="count" id="count">10 of 10 extensions' not in some
    assert '<span class="count" id="count">10 extensions' in some  # 100-109 all hold "10"
    assert '<span class="count" id="count">1 of 10 extensions' in one and 'id="ext-105"' in one
    assert '<span class="count" id="count">0 of 10 extensions' in none
    assert "No colleague matches “zzzzz”." in none
    assert "No group “nope” here" in nope


async def test_typing_a_search_updates_the_tiles_and_the_count_in_chromium(panel, browser) -> None:
    from playwright.async_api import expect

    from app.sim import Simulator

    async with Simulator([str(n) for n in range(100, 110)], port=0) as sim:
        server = await (await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")).healthy()
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(server.url + "/")
        await expect(page.locator("article.tile")).to_have_count(10)
        await page.locator("input[name=q]").fill("05")
        await expect(page.locator("article.tile")).to_have_count(1)
        await expect(page.locator("#count")).to_have_text("1 of 10 extensions")
        await page.locator("input[name=q]").fill("zzzzz")
        await expect(page.locator(".empty")).to_have_text("No colleague matches “zzzzz”.")
        await expect(page.locator("#count")).to_have_text("0 of 10 extensions")
        await context.close()


async def test_a_group_shows_its_own_heading_and_every_group_has_a_section_in_chromium(
    panel, browser
) -> None:
    """The demo's "Front desk" (one member, 100, whose first group is Reception): its own
    link is headed "Front desk", and the All view has a section for it that points to 100."""
    from playwright.async_api import expect

    server = await (
        await panel(AMI_HOST="", MEMCACHED_URL="", DEMO_EXTENSIONS="100-149", DEMO_CHURN="0")
    ).healthy()
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(server.url + "/")
    headings = page.locator("section.group > h2")
    await expect(headings).to_contain_text(["Front desk", "Management", "Reception", "Sales", "Support"])
    front = page.locator("section.group", has=page.locator("h2", has_text="Front desk"))
    await expect(front.locator("article.tile")).to_have_count(0)  # 100 stands under Reception
    await expect(front.locator(".elsewhere a")).to_have_attribute("href", "#ext-100")
    await page.locator("nav[aria-label=Groups] a", has_text="Front desk").click()
    await expect(page.locator("section.group > h2")).to_have_text(["Front desk"])
    await expect(page.locator("article.tile")).to_have_count(1)
    await expect(page.locator("#count")).to_have_text("1 of 50 extensions")
    await context.close()

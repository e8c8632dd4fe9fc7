"""Every page and state passes axe-core in a real Chromium with no serious or critical
violation (issue 13, item 7), and the keyboard reaches the search box, the group links and
then the tiles in reading order.

axe-core comes from `axe-playwright-python`, whose wheel bundles axe.min.js: nothing is
downloaded at test time (every test here fails if the page asked for anything but the
panel's own server). Pages and states: the panel light and dark, on a 390x844 phone, a
group, a search with no match, an unknown group, /queues, the embed, sign-in (refused,
then signed in), 400 and 404 pages, the PBX down (tiles greyed on purpose), the PBX
starting, the stream's watchdog veil; the wallboard view (`?view=wall`) and an expanded
(focused) tile, and the keyboard's order through the tiles. Text that axe
cannot judge (on a gradient, under a CSS filter) is measured here as shown.

`-s` prints the axe result of each page (counts by impact) for the record.
"""

from __future__ import annotations

import collections
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, expect

from app.sim import Simulator
from app.sim.churn import demo_queues
from tests.auth.conftest import DEMO, PASSWORDS, signed_in_settings, users_file, users_text  # noqa: F401
from tests.helpers import named
from tests.test_browser import LINK_OK, Watched, pbx, wait_for_sse, watched_page

# --- the office: a fixed picture with every kind of tile -----------------------------------

EXTENSIONS = [str(n) for n in range(100, 124)]
DIRECTORY = Path(__file__).parent.parent / "app" / "demo-directory.csv"  # the demo's groups
SERIOUS = ("serious", "critical")  # the impacts that fail a page (issue 13, item 7)
AXE = Axe()


def furnish(sim: Simulator) -> None:
    """Calls in and out (ringing, answered, on hold), presence, an offline phone, two queues
    with a caller waiting and a paused agent: every look a tile has."""
    demo_queues(sim)  # support: 100-107, sales: 108-113 and 100
    support = sim.queues.queues["support"]
    sim.queues.set_paused(support, support.members[1], True, "lunch")  # 101, free but paused
    sim.queues.join("support", "+4930123456", "Max Muster")
    sim.place_call("102", "103").answer()
    held = sim.place_call("104", "105")
    held.answer()
    held.hold()
    sim.place_call("+4930999888", "106", caller_name="Erika Beispiel")  # still ringing
    sim.place_call("+4930777666", "108").answer()
    sim.set_presence("109", "dnd", "", "In a meeting until 15:00")
    sim.set_presence("110", "away", "", "Lunch")
    sim.set_device_state("Custom:111", "UNAVAILABLE")
    sim.set_device_state("Custom:112", "BUSY")


@pytest.fixture
async def office() -> AsyncIterator[Simulator]:
    async with Simulator(EXTENSIONS, port=0) as sim:
        furnish(sim)
        yield sim


async def office_panel(panel: Any, sim: Simulator, **more: str) -> Any:
    """A panel following the office with its groups, once names and queues are in."""
    server = await (await panel(**pbx(sim.port, DIRECTORY_FILE=str(DIRECTORY), **more))).healthy()
    await server.until(named)
    return await server.until(lambda hub: hub.queues.get("support", {}).get("callers"))


# --- axe ---------------------------------------------------------------------------------


@dataclass
class Visit:
    """A watched page (console errors, failed responses) that also records every URL it
    asked for: axe must work offline, and the panel must ask nothing of another origin."""

    watched: Watched
    origin: str
    requested: list[str] = field(default_factory=list)

    @property
    def page(self) -> Page:
        return self.watched.page

    async def close(self) -> None:
        await self.watched.context.close()


async def visit(browser: Browser, url: str, *, stream: bool = True, **context_options: Any) -> Visit:
    """`url` loaded (and, with `stream`, its event stream's first message swapped in)."""
    watched = await watched_page(browser, **context_options)
    checked = Visit(watched, re.match(r"https?://[^/]+", url).group(0))  # type: ignore[union-attr]
    watched.page.on("request", lambda request: checked.requested.append(request.url))
    await watched.page.goto(url)
    if stream:
        await wait_for_sse(watched.page, 1)
    return checked


async def axe_violations(page: Page, where: str) -> list[dict[str, Any]]:
    """axe-core's violations on `page` as it is now; prints their count by impact.

    Axe's script goes in through the DevTools protocol (`page.evaluate`), which the page's
    CSP (script-src 'self') does not govern: the panel's policy is tested as served, no
    `bypass_csp`."""
    results = await AXE.run(page)
    violations: list[dict[str, Any]] = results.response["violations"]
    impacts = collections.Counter(v["impact"] for v in violations)
    counts = ", ".join(f"{impact} {impacts[impact]}" for impact in IMPACTS)
    print(f"axe {where}: {counts} {sorted(v['id'] for v in violations)}")
    return violations


IMPACTS = ("critical", "serious", "moderate", "minor")


def described(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        count = len(violation["nodes"])
        lines.append(f"{violation['id']} ({violation['impact']}, {count} elements): {violation['help']}")
        for node in violation["nodes"][:5]:
            lines.append(f"    {', '.join(map(str, node['target']))}: {node['failureSummary']}")
    return "\n".join(lines)


async def assert_accessible(checked: Visit, where: str, *, expected_errors: tuple[str, ...] = ()) -> None:
    """No serious or critical axe violation; nothing asked of another origin; no console
    error or failed response but those `expected_errors` name."""
    violations = await axe_violations(checked.page, where)
    serious = [v for v in violations if v["impact"] in SERIOUS]
    assert serious == [], f"{where}:\n{described(serious)}"
    await assert_tile_text_legible(checked.page, where)
    elsewhere = [url for url in checked.requested if not url.startswith(checked.origin)]
    assert elsewhere == [], f"{where} asked other origins: {elsewhere}"
    errors = [e for e in checked.watched.errors if not any(x in e for x in expected_errors)]
    assert errors == [], "\n".join(errors)


# --- what axe cannot judge: text on a gradient, and under a grayscale filter ---------------
#
# axe leaves text on a background gradient "incomplete" (the paused agent's hatched tile) and
# measures colours as declared, not as a CSS filter shows them (the greyed tiles of a PBX
# down). This measures those tiles' text as shown: each colour through the filter, the text
# over every colour stop of its background, with the opacities on the way, against WCAG's
# 4.5:1 (3:1 for large text, as axe counts it: 18 pt, or 14 pt bold).

TILE_TEXT_CONTRAST = """() => {
    const rgba = (text) => {
        const m = text.match(/rgba?\\(([^)]+)\\)/);
        if (!m) return null;
        const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
        return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    };
    const over = (top, under, alpha) => top.slice(0, 3).map((c, i) => alpha * c + (1 - alpha) * under[i]);
    const grey = ([r, g, b]) => { const v = 0.2126 * r + 0.7152 * g + 0.0722 * b; return [v, v, v]; };
    const lum = (rgb) => {
        const [r, g, b] = rgb.map((c) => {
            c /= 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (a, b) => {
        const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
        return (x + 0.05) / (y + 0.05);
    };
    const canvas = rgba(getComputedStyle(document.documentElement).backgroundColor);
    const page = canvas[3] > 0 ? canvas : [255, 255, 255, 1];  // an embed's page shows through
    const failures = [];
    for (const el of document.querySelectorAll("article.tile, article.tile *")) {
        const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.data).join("").trim();
        const style = getComputedStyle(el);
        if (!own || !el.getClientRects().length || style.visibility !== "visible") continue;
        const fg = rgba(style.color);
        if (!fg) { failures.push(`${el.className}: colour not understood: ${style.color}`); continue; }
        let alpha = fg[3], holder = el, greyed = false;
        while (holder) {  // the nearest element with a background of its own
            const s = getComputedStyle(holder);
            if (s.backgroundImage !== "none" || rgba(s.backgroundColor)[3] > 0) break;
            alpha *= Number(s.opacity);
            holder = holder.parentElement;
        }
        holder ||= document.documentElement;
        const hs = getComputedStyle(holder);
        const base = rgba(hs.backgroundColor);
        const solid = base[3] > 0 ? over(base, page, base[3]) : page;
        const stops = (hs.backgroundImage.match(/rgba?\\([^)]+\\)/g) || [])
            .map(rgba)
            .map((c) => over(c, solid, c[3]));
        let faded = 1;  // the holder's own opacity and its ancestors': text and background both
        for (let up = holder; up; up = up.parentElement) {
            const s = getComputedStyle(up);
            faded *= Number(s.opacity);
            greyed ||= /grayscale\\(1\\)/.test(s.filter);
        }
        const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
        const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
        for (const bg of stops.length ? stops : [solid]) {
            let text = over(fg, bg, alpha), back = bg;
            text = over(text, page, faded); back = over(back, page, faded);
            if (greyed) { text = grey(text); back = grey(back); }
            const r = ratio(text, back);
            if (r < needed) {
                const tile = (el.closest("article") || el).id;
                const what = `${tile} ${el.tagName.toLowerCase()}.${el.className} "${own.slice(0, 30)}"`;
                failures.push(`${what}: ${r.toFixed(2)}:1 < ${needed}:1`);
            }
        }
    }
    return failures;
}"""


async def assert_tile_text_legible(page: Page, where: str) -> None:
    failures = sorted(set(await page.evaluate(TILE_TEXT_CONTRAST)))  # a hatch repeats its stops
    assert failures == [], f"{where}: tile text below WCAG contrast as shown:\n" + "\n".join(failures)


# --- the views of a running office ---------------------------------------------------------

PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
LIGHT: dict[str, Any] = {"color_scheme": "light"}
DARK: dict[str, Any] = {"color_scheme": "dark"}
VIEWS = [
    pytest.param("/", LIGHT, id="panel-light"),
    pytest.param("/", DARK, id="panel-dark"),
    pytest.param("/", {**PHONE, **LIGHT}, id="panel-phone-light"),
    pytest.param("/", {**PHONE, **DARK}, id="panel-phone-dark"),
    pytest.param("/", {**LIGHT, "locale": "ru-RU"}, id="panel-russian"),
    pytest.param("/queues", {**DARK, "locale": "ru-RU"}, id="queues-russian"),
    pytest.param("/?pins=104,109", LIGHT, id="pinned-light"),
    pytest.param("/?pins=104,109", DARK, id="pinned-dark"),
    pytest.param("/?group=reception", LIGHT, id="group-light"),
    pytest.param("/?group=reception", DARK, id="group-dark"),
    pytest.param("/?q=zzzzz", LIGHT, id="search-no-match"),
    pytest.param("/?group=nope", LIGHT, id="unknown-group"),
    pytest.param("/queues", LIGHT, id="queues-light"),
    pytest.param("/queues", DARK, id="queues-dark"),
    pytest.param("/queues", {**PHONE, **DARK}, id="queues-phone"),
    pytest.param("/embed?ext=100,101,102,104,106,108,109,111,112", LIGHT, id="embed-light"),
    pytest.param("/embed?ext=100,101,102,104,106,108,109,111,112", DARK, id="embed-dark"),
]


@pytest.mark.parametrize(("path", "options"), VIEWS)
async def test_every_view_passes_axe(office, panel, browser, path: str, options: dict[str, Any]) -> None:
    server = await office_panel(panel, office)
    checked = await visit(browser, server.url + path, **options)
    tiles = checked.page.locator("article.tile")
    if "zzzzz" in path or "nope" in path:
        await expect(checked.page.locator("p.empty[role=status]")).to_be_visible()
        await expect(tiles).to_have_count(0)
    else:
        assert await tiles.count() > 0
        # The state is in words on every tile, not in colour alone.
        await expect(checked.page.locator("article.tile .label")).to_have_count(await tiles.count())
        assert all(t.strip() for t in await checked.page.locator("article.tile .label").all_inner_texts())
    await assert_accessible(checked, f"{path} {options}")
    await checked.close()


@pytest.mark.parametrize(
    ("path", "options"),
    [
        pytest.param("/?ext=not!an;extension", LIGHT, id="400-light"),
        pytest.param("/?ext=not!an;extension", DARK, id="400-dark"),
        pytest.param("/no-such-page", LIGHT, id="404"),
    ],
)
async def test_an_error_page_passes_axe(panel, browser, path: str, options: dict[str, Any]) -> None:
    server = await (await panel(**DEMO)).healthy()
    checked = await visit(browser, server.url + path, stream=False, **options)
    await expect(checked.page.locator("main h1")).to_contain_text(("400", "404")["no-such" in path])
    await assert_accessible(
        checked,
        f"error page {path}",
        expected_errors=("HTTP 400", "HTTP 404", "status of 400", "status of 404"),
    )
    await checked.close()


@pytest.mark.parametrize("options", [LIGHT, DARK], ids=["light", "dark"])
async def test_sign_in_and_its_refusal_pass_axe(panel, browser, signed_in_settings, options) -> None:  # noqa: F811
    server = await (await panel(**signed_in_settings)).healthy()
    checked = await visit(browser, server.url + "/signin", stream=False, **options)
    await assert_accessible(checked, f"sign-in {options}")
    page = checked.page
    await page.fill("input[name=name]", "anna")
    await page.fill("input[name=password]", "not her password")
    await page.click("button[type=submit]")
    await expect(page.locator("[role=alert]")).to_have_text("Wrong name or password.")
    await assert_accessible(checked, "sign-in refused", expected_errors=("/signin",))
    await page.fill("input[name=password]", PASSWORDS["anna"])
    await page.click("button[type=submit]")
    await wait_for_sse(page, 1)  # the panel, with its sign-out button
    await expect(page.locator("form.signout button")).to_be_visible()
    await assert_accessible(checked, "signed in", expected_errors=("/signin",))
    await checked.close()


# --- the states of the link -------------------------------------------------------------


@pytest.mark.parametrize("options", [LIGHT, DARK], ids=["light", "dark"])
async def test_the_pbx_down_greyed_panel_passes_axe(office, panel, browser, options) -> None:
    """The tiles are greyed on purpose (the states may be out of date), yet stay legible:
    color-contrast is a serious rule and must pass in this state too."""
    settings = {"AMI_PING_INTERVAL": "0.5", "AMI_PING_TIMEOUT": "0.5", "AMI_RECONNECT_MAX": "0.5"}
    server = await office_panel(panel, office, **settings)
    checked = await visit(browser, server.url + "/", **options)
    await office.stop()
    link = checked.page.locator("#link")
    await expect(link).not_to_have_class(LINK_OK, timeout=5000)
    await expect(link).to_contain_text("PBX connection lost")
    await assert_accessible(checked, f"PBX down {options}")
    await checked.close()


@pytest.mark.parametrize("options", [LIGHT, DARK], ids=["light", "dark"])
async def test_the_pbx_starting_panel_passes_axe(office, panel, browser, options) -> None:
    server = await office_panel(panel, office)
    checked = await visit(browser, server.url + "/", **options)
    await office.restart(boot=3600)  # booting until the test ends
    await expect(checked.page.locator("#link")).to_contain_text("PBX starting", timeout=5000)
    await assert_accessible(checked, f"PBX starting {options}")
    await checked.close()


@pytest.mark.parametrize("options", [LIGHT, DARK], ids=["light", "dark"])
async def test_the_watchdog_veil_passes_axe(office, panel, browser, options) -> None:
    """The veil that comes up after 15 s without a message: its animation is run to its end
    (the state it shows then) instead of waiting 15 s; no heartbeat restarts it meanwhile."""
    server = await office_panel(panel, office, HEARTBEAT="600")
    checked = await visit(browser, server.url + "/", **options)
    veil = checked.page.locator("#link .watchdog")
    await expect(veil).to_be_hidden()
    await veil.evaluate("el => el.getAnimations().forEach(a => a.finish())")
    await expect(veil).to_be_visible()
    await assert_accessible(checked, f"watchdog veil {options}")
    await checked.close()


# --- the wallboard view and the expanded tile ---------------------------------------------


TV: dict[str, Any] = {"viewport": {"width": 1920, "height": 1080}}


@pytest.mark.parametrize(
    ("path", "options", "down"),
    [
        pytest.param("/?view=wall", {**TV, **LIGHT}, False, id="light"),
        pytest.param("/?view=wall", {**TV, **DARK}, False, id="dark"),
        pytest.param("/?view=wall", {**TV, **DARK}, True, id="pbx-down"),
        pytest.param("/queues?view=wall", {**TV, **LIGHT}, False, id="queues-light"),
        pytest.param("/queues?view=wall", {**TV, **DARK}, False, id="queues-dark"),
    ],
)
async def test_the_wallboard_view_passes_axe(office, panel, browser, path, options, down) -> None:
    settings = {"AMI_PING_INTERVAL": "0.5", "AMI_PING_TIMEOUT": "0.5", "AMI_RECONNECT_MAX": "0.5"}
    server = await office_panel(panel, office, **settings)
    checked = await visit(browser, server.url + path, **options)
    await expect(checked.page.locator("body")).to_have_class(re.compile(r"\bwall\b"))  # not the plain page
    if down:
        await office.stop()
        await expect(checked.page.locator("#link")).not_to_have_class(LINK_OK, timeout=5000)
    await assert_accessible(checked, f"wallboard {path} {options} {'PBX down' if down else ''}")
    await checked.close()


async def focusable_tiles(page: Page) -> int:
    """How many tiles take the focus: every colleague's (asserted), so the keyboard reaches each."""
    focusable = await page.locator('article.tile[tabindex="0"]').count()
    assert focusable > 0 and focusable == await page.locator("article.tile:not(.queue)").count()
    return focusable


@pytest.mark.parametrize("options", [LIGHT, DARK, {**PHONE, **LIGHT}], ids=["light", "dark", "phone"])
async def test_an_expanded_tile_passes_axe(office, panel, browser, options) -> None:
    """A tile focused (the keyboard's way to expand it and read it whole)."""
    server = await office_panel(panel, office)
    checked = await visit(browser, server.url + "/", **options)
    await focusable_tiles(checked.page)
    for exten in ("106", "109", "101"):  # ringing from outside, presence, paused in a queue
        tile = checked.page.locator(f"#ext-{exten}")
        await tile.focus()
        await expect(tile).to_be_focused()
        await assert_accessible(checked, f"expanded tile {exten} {options}")
    await checked.close()


# --- the keyboard ------------------------------------------------------------------------


async def test_tab_reaches_search_groups_then_tiles_in_reading_order(office, panel, browser) -> None:
    server = await office_panel(panel, office)
    checked = await visit(browser, server.url + "/", **LIGHT)
    page = checked.page
    group_links = await page.locator("nav[aria-label=Groups] a").all_inner_texts()
    tiles = await focusable_tiles(page)
    describe = """() => {
        const el = document.activeElement;
        const box = el.getBoundingClientRect();
        const tag = el.tagName.toLowerCase() + (el.type ? ":" + el.type : "");
        return {
            kind: el.matches("article.tile") ? "tile" : tag,
            id: el.id, text: el.innerText || "", inTiles: !!el.closest("#tiles"),
            top: box.top + scrollY, left: box.left,
        };
    }"""
    seen: list[dict[str, Any]] = []
    # Enough presses for every stop up to the last tile: links in the tiles (a group's
    # "also in this group") are stops of their own.
    for _ in range(len(group_links) + 2 * tiles + 20):
        await page.keyboard.press("Tab")
        seen.append(await page.evaluate(describe))
        if sum(s["kind"] == "tile" for s in seen) == tiles:
            break
    kinds = [s["kind"] for s in seen]
    assert "input:search" in kinds, f"Tab never reached the search box: {kinds}"
    after_search = seen[kinds.index("input:search") + 1 :]
    reached_links = [s["text"] for s in after_search[: len(group_links)]]
    assert reached_links == group_links, "the group links do not follow the search box in order"
    in_tiles = after_search[len(group_links) :]
    outside = [s for s in in_tiles if not s["inTiles"]]
    assert outside == [], f"between the group links and the last tile Tab left the tiles: {outside}"
    reached_tiles = [s for s in in_tiles if s["kind"] == "tile"]
    assert len({s["id"] for s in reached_tiles}) == tiles, "a tile was skipped or reached twice"
    # Reading order: row by row from the top, left to right within a row (a row: tops within
    # half a tile's height, ~1.5 rem; groups put their tiles on new rows).
    for before, after in zip(reached_tiles, reached_tiles[1:], strict=False):
        same_row = abs(after["top"] - before["top"]) < 12
        assert (same_row and after["left"] > before["left"]) or after["top"] > before["top"] + 12, (
            f"{after['id']} comes after {before['id']} but is not after it in reading order"
        )
    await checked.close()

"""The panel in a real browser (Debian's chromium through Playwright): live updates without
reload, the banner when the PBX goes away, the embed inside another site's iframe, hostile
hints, a clean console. The PBX is the simulator over real TCP, driven over AMI as one drives
an Asterisk.

`BLF_SCREENSHOTS=1 .venv/bin/pytest tests/test_browser.py -k screenshots` re-makes the
pictures in docs/ (panel.png, panel-phone.png, embed.png).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from app.sim import Simulator
from tests.helpers import AmiClient, named, setvar

EXTENSIONS = [str(n) for n in range(100, 120)]
DOCS = Path(__file__).parent.parent / "docs"
INUSE = re.compile(r"(^|\s)state-inuse(\s|$)")
BUSY = re.compile(r"(^|\s)state-busy(\s|$)")
LINK_OK = re.compile(r"(^|\s)link-ok(\s|$)")


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with Simulator(EXTENSIONS, port=0) as sim:
        yield sim


def pbx(port: int, **more: str) -> dict[str, str]:
    """Settings for a panel whose collector follows the simulator on `port`, in-process store."""
    return {"AMI_HOST": "127.0.0.1", "AMI_PORT": str(port), "MEMCACHED_URL": "", **more}


# --- a watched page: console errors, page errors and failed responses are collected ---


@dataclass
class Watched:
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")


async def watched_page(browser: Browser, **context_options: Any) -> Watched:
    context = await browser.new_context(**context_options)
    page = await context.new_page()
    watched = Watched(context, page)
    page.on("console", watched.on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))
    page.on(
        "response",
        lambda response: (
            watched.errors.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400
            else None
        ),
    )
    # Count the SSE messages htmx swapped: the first one means the stream is open.
    await page.add_init_script(
        "window.__sse = 0;document.addEventListener('htmx:sse:after:message', () => { window.__sse += 1; });"
    )
    return watched


async def wait_for_sse(page: Any, count: int, timeout: float = 10.0) -> None:
    """Until htmx has swapped `count` SSE messages. Not `wait_for_function`: its polling
    evaluates a string in the page, which the panel's CSP (script-src 'self') forbids;
    `evaluate` goes through the DevTools protocol, which the CSP does not govern."""
    async with asyncio.timeout(timeout):
        while await page.evaluate("window.__sse") < count:  # noqa: ASYNC110 - the browser's state
            await asyncio.sleep(0.05)


async def open_panel(browser: Browser, url: str, **context_options: Any) -> Watched:
    """The page loaded and its event stream open (its first message swapped in)."""
    watched = await watched_page(browser, **context_options)
    await watched.page.goto(url)
    await wait_for_sse(watched.page, 1)
    return watched


# --- 1 and 5: a change arrives without reload, only its tile is replaced, no console errors ---


async def test_a_change_reaches_the_page_within_a_second_without_reload(simulator, panel, browser) -> None:
    server = await (await panel(**pbx(simulator.port))).healthy()
    await server.until(named)
    watched = await open_panel(browser, server.url + "/")
    page = watched.page
    tile = page.locator("#ext-105")
    await expect(tile).to_have_class(re.compile(r"(^|\s)state-idle(\s|$)"))
    await expect(page.locator("article.tile")).to_have_count(len(EXTENSIONS))
    await page.evaluate(
        """() => {
            window.__marker = 1;
            for (const id of ["ext-100", "ext-101"]) document.getElementById(id).__marker = 1;
            window.__inuseAt = null;
            new MutationObserver(() => {
                const el = document.getElementById("ext-105");
                if (window.__inuseAt === null && el && el.classList.contains("state-inuse"))
                    window.__inuseAt = performance.now();
            }).observe(document.body, {subtree: true, childList: true, attributes: true});
        }"""
    )
    client = await AmiClient.login(simulator.port)
    try:
        sent_at = await page.evaluate("performance.now()")
        await client.setvar("Custom:105", "INUSE")
        await expect(tile).to_have_class(INUSE, timeout=1000)
    finally:
        await client.close()
    await expect(tile.locator(".label")).to_have_text("On a call", timeout=1000)
    latency_ms = await page.evaluate("window.__inuseAt") - sent_at
    print(f"Setvar to state-inuse in the browser: {latency_ms:.0f} ms")
    assert latency_ms < 1000
    kept = await page.evaluate(
        """() => ({
            window: window.__marker,
            tiles: ["ext-100", "ext-101"].map(id => document.getElementById(id).__marker),
            count: document.querySelectorAll("article.tile").length,
        })"""
    )
    assert kept == {"window": 1, "tiles": [1, 1], "count": len(EXTENSIONS)}, (
        "the page reloaded or unchanged tiles were replaced"
    )
    assert watched.errors == [], "\n".join(watched.errors)
    await watched.context.close()


# --- 2: the PBX goes away: banner and greyed tiles; it comes back: banner gone, states right ---


async def test_pbx_down_shows_a_banner_and_greys_the_tiles_until_it_is_back(panel, browser) -> None:
    first = Simulator(EXTENSIONS, port=0)
    await first.start()
    try:
        port = first.port
        settings = pbx(port, AMI_PING_INTERVAL="0.5", AMI_PING_TIMEOUT="0.5", AMI_RECONNECT_MAX="0.5")
        server = await (await panel(**settings)).healthy()
        watched = await open_panel(browser, server.url + "/")
        page = watched.page
        link, tile = page.locator("#link"), page.locator("#ext-100")
        await expect(link).to_have_class(LINK_OK)
        assert await grey_of(tile) == (False, 1.0), "tiles must not be greyed while the PBX is up"
        await first.stop()
        await expect(link).not_to_have_class(LINK_OK, timeout=5000)
        await expect(link).to_contain_text("PBX connection lost")
        greyscale, opacity = await grey_of(tile)
        assert greyscale or opacity < 1, "tiles are not greyed while the PBX is down"
    finally:
        await first.stop()
    second = Simulator(EXTENSIONS, port=port)
    second.set_device_state("Custom:106", "BUSY")  # changed while the collector was away
    async with second:
        await expect(link).to_have_class(LINK_OK, timeout=10_000)
        await expect(link.locator(".banner")).to_have_count(0)
        await expect(page.locator("#ext-106")).to_have_class(BUSY)
        await expect(page.locator("#ext-106 .label")).to_have_text("Busy")
        assert await grey_of(tile) == (False, 1.0)
    assert watched.errors == [], "\n".join(watched.errors)
    await watched.context.close()


async def grey_of(tile: Any) -> tuple[bool, float]:
    """(has a grayscale filter, opacity) as the browser computes them for a tile."""
    style = await tile.evaluate("el => { const s = getComputedStyle(el); return [s.filter, s.opacity]; }")
    return "grayscale" in style[0], float(style[1])


# --- 3: the embed inside another site's iframe: shown where allowed, refused elsewhere ---


@contextlib.asynccontextmanager
async def other_site(pages: dict[str, str]) -> AsyncIterator[int]:
    """A tiny HTTP/1.1 server on another loopback port serving `pages` (path -> HTML);
    yields its port. `pages` may be filled after it started."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            path = request.split(b" ", 2)[1].decode("ascii", "replace")
            html = pages.get(path)
            body = (html if html is not None else "not found").encode()
            status = "200 OK" if html is not None else "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def parent_page(title: str, embed_url: str) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{title}</title></head><body><h1>{title}</h1>"
        f'<iframe id="blf" src="{embed_url}" width="600" height="200"></iframe></body></html>'
    )


async def test_embed_shows_in_an_allowed_site_and_is_refused_elsewhere(simulator, panel, browser) -> None:
    pages: dict[str, str] = {}
    async with other_site(pages) as site_port:
        site = f"http://127.0.0.1:{site_port}"
        allowing = await (await panel(**pbx(simulator.port, FRAME_ANCESTORS=f"'self' {site}"))).healthy()
        refusing = await (await panel(**pbx(simulator.port, FRAME_ANCESTORS="'self'"))).healthy()
        pages["/crm"] = parent_page("CRM", f"{allowing.url}/embed?ext=100,101,102")
        pages["/elsewhere"] = parent_page("Elsewhere", f"{refusing.url}/embed?ext=100,101,102")

        watched = await watched_page(browser)
        page = watched.page
        async with page.expect_response(lambda r: "/embed?" in r.url) as allowed_response:
            await page.goto(f"{site}/crm")
        headers = await (await allowed_response.value).all_headers()
        assert headers["content-security-policy"].startswith(f"frame-ancestors 'self' {site};")
        frame = page.frame_locator("#blf")
        await expect(frame.locator("article.tile")).to_have_count(3, timeout=10_000)
        for exten in ("100", "101", "102"):
            await expect(frame.locator(f"#ext-{exten}")).to_be_visible()
        embedded = next(f for f in page.frames if "/embed?" in f.url)
        await wait_for_sse(embedded, 1)
        await setvar(simulator.port, "Custom:101", "INUSE")  # and it is live in there
        await expect(frame.locator("#ext-101")).to_have_class(INUSE, timeout=2000)
        assert watched.errors == [], "\n".join(watched.errors)

        async with (
            page.expect_console_message(lambda m: "frame-ancestors" in m.text) as refusal,
            page.expect_response(lambda r: "/embed?" in r.url) as refused_response,
        ):
            await page.goto(f"{site}/elsewhere")  # "load" waits for the iframe (or its error page)
        response = await refused_response.value
        assert response.status == 200
        assert (await response.all_headers())["content-security-policy"].startswith("frame-ancestors 'self';")
        await expect(page.locator("h1")).to_have_text("Elsewhere")
        iframe = await page.wait_for_selector("#blf", state="attached")
        blocked = await iframe.content_frame()
        assert blocked is not None
        await blocked.wait_for_load_state("load")
        assert "/embed" not in blocked.url, f"the refused embed was shown ({blocked.url})"
        assert await blocked.locator("#ext-100").count() == 0
        assert await blocked.locator("article").count() == 0
        assert "frame-ancestors 'self'" in (await refusal.value).text  # Chromium says why
        await watched.context.close()


# --- 4: a hostile hint from the PBX is text, never markup ---

# The hint lands in the tile's title attribute: the second one tries to leave it first.
HOSTILE_HINTS = {
    "105": "<img src=x onerror=window.__pwned=1>",
    "106": 'Custom:106"><img src=x onerror=window.__pwned=2>',
}


def extension_status(exten: str, hint: str) -> bytes:
    return (
        f"Event: ExtensionStatus\r\nPrivilege: call,all\r\nExten: {exten}\r\nContext: ext-local\r\n"
        f"Hint: {hint}\r\nStatus: 1\r\nStatusText: InUse\r\n\r\n"
    ).encode()


async def test_a_hostile_hint_is_shown_as_text(simulator, panel, browser) -> None:
    server = await (await panel(**pbx(simulator.port))).healthy()
    watched = await open_panel(browser, server.url + "/")
    page = watched.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for exten, hint in HOSTILE_HINTS.items():
        tile = page.locator(f"#ext-{exten}")
        await expect(tile).to_have_class(re.compile(r"(^|\s)state-idle(\s|$)"))
        simulator.inject(extension_status(exten, hint))
        await expect(tile).to_have_class(INUSE, timeout=5000)
    # One more change through the same stream: everything before it has been swapped in.
    await setvar(simulator.port, "Custom:104", "BUSY")
    await expect(page.locator("#ext-104")).to_have_class(BUSY, timeout=5000)
    for view in (page, await reloaded(browser, server.url + "/")):  # streamed, then server-rendered
        assert await view.locator("img").count() == 0, "the hint became markup"
        assert await view.evaluate("typeof window.__pwned") == "undefined"
        for exten, hint in HOSTILE_HINTS.items():
            title = await view.locator(f"#ext-{exten}").get_attribute("title")
            assert title == f"{exten}@ext-local · {hint}", "the hint is not shown as it came"
    assert not [url for url in requested if url.endswith("/x")], "the hint's <img> was loaded"
    await watched.context.close()


# --- who: name, group, presence and the other party on the tile; a hostile caller ID ---


async def test_tiles_show_who_and_a_hostile_caller_id_as_text(panel, browser, tmp_path) -> None:
    directory = tmp_path / "directory.csv"
    directory.write_text("exten,name,group\n101,Anna Smith,Sales\n102,Boris Ivanov,Support\n")
    async with Simulator(["100", "101", "102"], port=0, names={"100": "Reception Desk"}) as sim:
        server = await (await panel(**pbx(sim.port, DIRECTORY_FILE=str(directory)))).healthy()
        watched = await open_panel(browser, server.url + "/")
        page = watched.page
        await expect(page.locator("#ext-101 .name")).to_have_text("Anna Smith")
        await expect(page.locator("#ext-100 .name")).to_have_text("Reception Desk")  # from the PBX
        await expect(page.locator("section.group h2")).to_have_text(["Sales", "Support", "Other"])
        client = await AmiClient.login(sim.port)
        try:
            reply = await client.action(
                "Setvar", Variable="PRESENCE_STATE(CustomPresence:102)", Value="dnd,,In a meeting"
            )
            assert reply["Response"] == "Success", reply
        finally:
            await client.close()
        await expect(page.locator("#ext-102 .presence")).to_contain_text("Do not disturb: In a meeting")
        hostile = '"><img src=x onerror=window.__pwned=1>'
        call = sim.place_call("+4930123456", "101", caller_name=hostile)
        await expect(page.locator("#ext-101 .call")).to_contain_text("ringing")
        call.answer()
        await expect(page.locator("#ext-101 .call")).to_contain_text("+4930123456")
        await expect(page.locator("#ext-101 .call")).not_to_contain_text("ringing")
        text = await page.locator("#ext-101 .call").inner_text()
        assert "from" in text and "<img src=x" in text, text
        assert await page.locator("#ext-101 img").count() == 0
        assert await page.evaluate("window.__pwned") is None
        internal = sim.place_call("100", "102")
        internal.answer()
        await expect(page.locator("#ext-100 .call")).to_contain_text("to Boris Ivanov (102)")
        await expect(page.locator("#ext-102 .call")).to_contain_text("from Reception Desk (100)")
        internal.hold()
        await expect(page.locator("#ext-102 .call")).to_contain_text("on hold")
        assert watched.errors == [], "\n".join(watched.errors)
        await watched.context.close()


async def reloaded(browser: Browser, url: str) -> Page:
    """A fresh page: the hint as the server renders it into the page itself."""
    return (await open_panel(browser, url)).page


# --- docs/: screenshots, made by this code (BLF_SCREENSHOTS=1) ---

SCREENSHOT_EXTENSIONS = [str(n) for n in range(100, 220)]


@pytest.mark.skipif(
    os.environ.get("BLF_SCREENSHOTS") != "1", reason="set BLF_SCREENSHOTS=1 to re-make docs/*.png"
)
@pytest.mark.timeout(300)
async def test_screenshots(panel, browser, tmp_path) -> None:
    """docs/panel.png (1920x1080, 300 extensions mid-churn), docs/panel-phone.png (375x812)
    and docs/embed.png (the embed in a CRM-like page on another origin)."""
    sim = Simulator(SCREENSHOT_EXTENSIONS, port=0, churn=4, seed=7)
    mix = random.Random(7)
    groups = ["Reception", "Sales", "Support", "Accounts", "Management"]
    directory = tmp_path / "directory.csv"
    rows = [
        f"{e},,{groups[min(i * len(groups) // len(SCREENSHOT_EXTENSIONS), 4)]}"
        for i, e in enumerate(SCREENSHOT_EXTENSIONS)
    ]
    directory.write_text("exten,name,group\n" + "\n".join(rows) + "\n")
    free = SCREENSHOT_EXTENSIONS[:]
    mix.shuffle(free)
    for _ in range(14):  # colleagues talking to each other, some on hold
        call = sim.place_call(free.pop(), free.pop())
        call.answer()
        if mix.random() < 0.2:
            call.hold()
    for _ in range(10):  # customers on the line, a few still ringing
        call = sim.place_call(f"+49301{mix.randrange(100000, 999999)}", free.pop())
        if mix.random() < 0.75:
            call.answer()
    for exten in free[:6]:
        sim.set_presence(
            exten, mix.choice(["dnd", "away", "xa"]), "", mix.choice(["", "In a meeting", "Lunch"])
        )
    for exten in free[6:10]:
        sim.set_device_state(f"Custom:{exten}", "UNAVAILABLE")
    pages: dict[str, str] = {}
    async with sim, other_site(pages) as site_port:
        site = f"http://127.0.0.1:{site_port}"
        settings = pbx(
            sim.port,
            FRAME_ANCESTORS=f"'self' {site}",
            PANEL_TITLE="Reception · Extensions",
            DIRECTORY_FILE=str(directory),
        )
        server = await (await panel(**settings)).healthy()

        desktop = await open_panel(
            browser, server.url + "/", viewport={"width": 1920, "height": 1080}, reduced_motion="reduce"
        )
        await expect(desktop.page.locator("article.tile")).to_have_count(len(SCREENSHOT_EXTENSIONS))
        await wait_for_sse(desktop.page, 4, timeout=20)  # churn went on
        await desktop.page.screenshot(path=DOCS / "panel.png")

        phone = await open_panel(
            browser,
            server.url + "/",
            viewport={"width": 375, "height": 812},
            is_mobile=True,
            has_touch=True,
            reduced_motion="reduce",
        )
        await phone.page.screenshot(path=DOCS / "panel-phone.png")

        pages["/crm"] = crm_page(f"{server.url}/embed?ext=101,102,103,104,105,106,107,108")
        crm = await watched_page(browser, viewport={"width": 1280, "height": 440}, reduced_motion="reduce")
        await crm.page.goto(f"{site}/crm")
        await expect(crm.page.frame_locator("#blf").locator("article.tile")).to_have_count(8)
        await crm.page.screenshot(path=DOCS / "embed.png")
        for watched in (desktop, phone, crm):
            assert watched.errors == [], "\n".join(watched.errors)
            await watched.context.close()


def crm_page(embed_url: str) -> str:
    """A made-up CRM's contact page with the team's lamps in its sidebar."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Acme CRM · Contact</title>
<style>
  body {{ margin: 0; font: 15px/1.4 "Liberation Sans", Arial, sans-serif; color: #1d2430;
         background: #f3f5f8; }}
  header {{ display: flex; align-items: center; gap: 2rem; padding: 0 1.5rem; height: 52px;
            background: #1f3a5f; color: #fff; }}
  header b {{ font-size: 1.15rem; letter-spacing: .02em; }}
  header nav a {{ color: #c8d6ea; margin-right: 1.25rem; text-decoration: none; }}
  header nav a.on {{ color: #fff; font-weight: 700; }}
  .wrap {{ display: grid; grid-template-columns: 1fr 420px; gap: 1.25rem; padding: 1.25rem 1.5rem; }}
  .card {{ background: #fff; border: 1px solid #dde3ea; border-radius: 8px; padding: 1rem 1.25rem; }}
  h2 {{ margin: 0 0 .75rem; font-size: 1.05rem; }}
  dl {{ display: grid; grid-template-columns: 9rem 1fr; gap: .4rem 1rem; margin: 0; }}
  dt {{ color: #5d6b7e; }}
  table {{ width: 100%; border-collapse: collapse; margin-top: .5rem; }}
  td, th {{ text-align: left; padding: .45rem .3rem; border-top: 1px solid #e6eaef; font-size: .9rem; }}
  th {{ color: #5d6b7e; font-weight: 600; border-top: 0; }}
  iframe {{ display: block; width: 100%; height: 132px; border: 0; }}
  .hint {{ color: #5d6b7e; font-size: .82rem; margin: .5rem 0 0; }}
</style></head>
<body>
<header><b>Acme CRM</b><nav><a href="#">Dashboard</a><a class="on" href="#">Contacts</a>
<a href="#">Deals</a><a href="#">Tickets</a></nav></header>
<div class="wrap">
  <section class="card">
    <h2>Jordan Example · Northwind Traders</h2>
    <dl><dt>Phone</dt><dd>+1 555 0142</dd><dt>Account owner</dt><dd>Sam (ext. 103)</dd>
    <dt>Support line</dt><dd>ext. 105</dd><dt>Last contact</dt><dd>Yesterday, 16:20</dd></dl>
    <table><tr><th>Ticket</th><th>Subject</th><th>Status</th></tr>
    <tr><td>#4821</td><td>Invoice address change</td><td>Open</td></tr>
    <tr><td>#4790</td><td>Delivery delayed</td><td>Waiting</td></tr>
    <tr><td>#4712</td><td>New contract</td><td>Closed</td></tr></table>
  </section>
  <aside class="card">
    <h2>Team phones</h2>
    <iframe id="blf" title="Team phones" src="{embed_url}"></iframe>
    <p class="hint">Live from the phone system (blf-panel embed).</p>
  </aside>
</div>
</body></html>"""

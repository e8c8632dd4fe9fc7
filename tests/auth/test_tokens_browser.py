"""Signed embed links in a CRM's cross-origin iframe, in real Chromium: only the token's tiles,
live; `ext=` outside its scope adds nothing (nor to the raw stream); expired, tampered,
wrong-key and `alg: none` links get a 403, a plain sentence in the frame and a log line."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from app.auth.tokens import mint_token
from app.sim import Simulator
from tests.auth.test_tokens import KEY, OTHER_KEY, b64, by_hand
from tests.helpers import SseClient, setvar, tile_ids_in
from tests.test_browser import BUSY, EXTENSIONS, INUSE, other_site, parent_page, pbx, watched_page

GRANTED = ["100", "101", "102"]


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with Simulator(EXTENSIONS, port=0) as sim:
        yield sim


def tampered(token: str) -> str:
    """The token with its claims widened to every extension, the signature kept."""
    head, claims, signature = token.split(".")
    wider = b64(f'{{"ext":{EXTENSIONS!r},"exp":{int(time.time()) + 600}}}'.replace("'", '"').encode())
    assert wider != claims
    return f"{head}.{wider}.{signature}"


async def test_a_signed_link_shows_only_its_tiles_live_in_a_crm_frame(simulator, panel, browser) -> None:
    pages: dict[str, str] = {}
    async with other_site(pages) as site_port:
        site = f"http://127.0.0.1:{site_port}"
        env = pbx(simulator.port, FRAME_ANCESTORS=f"'self' {site}", EMBED_SECRET=KEY)
        server = await (await panel(**env)).healthy()
        token = mint_token(KEY, ttl=600, extensions=GRANTED)
        pages["/crm"] = parent_page("CRM", f"{server.url}/embed?token={token}")
        pages["/escape"] = parent_page("CRM", f"{server.url}/embed?token={token}&ext=100,103,104")

        watched = await watched_page(browser)
        page = watched.page
        await page.goto(f"{site}/crm")
        frame = page.frame_locator("#blf")
        await expect(frame.locator("article.tile")).to_have_count(3, timeout=10_000)
        embedded = next(f for f in page.frames if "/embed?" in f.url)
        await embedded.wait_for_function("window.__sse >= 1", timeout=10_000)
        # The stream with the token sends the whole view (no `since`): the 3 tiles, no more.
        # htmx drops a tile it has no place for, so this reads the bytes, not the DOM.
        async with SseClient(f"{server.url}/events?token={token}") as stream:
            assert sorted(tile_ids_in((await stream.next())["data"])) == [f"ext-{e}" for e in GRANTED]
        # and the frame's stream URL carries that token (else it would be a stream of everything)
        connect = await frame.locator("[hx-sse\\:connect]").get_attribute("hx-sse:connect")
        assert connect is not None and f"token={token}" in connect, connect  # waits for part B
        await expect(frame.locator("article.tile")).to_have_count(3)
        await setvar(simulator.port, "Custom:103", "INUSE")  # outside the token: never shown
        await setvar(simulator.port, "Custom:101", "INUSE")  # published after 103's change
        await expect(frame.locator("#ext-101")).to_have_class(INUSE, timeout=2000)
        assert await frame.locator("#ext-103").count() == 0
        await expect(frame.locator("article.tile")).to_have_count(3)
        assert watched.errors == [], "\n".join(watched.errors)

        # ext= naming extensions outside the token only narrows: 100 is left, nothing else.
        await page.goto(f"{site}/escape")
        escaped = next(f for f in page.frames if "/embed?" in f.url)
        await escaped.wait_for_function("window.__sse >= 1", timeout=10_000)
        await setvar(simulator.port, "Custom:104", "INUSE")
        await setvar(simulator.port, "Custom:100", "BUSY")
        await expect(frame.locator("#ext-100")).to_have_class(BUSY, timeout=2000)
        shown = [await tile.get_attribute("id") for tile in await frame.locator("article").all()]
        assert shown == ["ext-100"]
        assert watched.errors == [], "\n".join(watched.errors)
        await watched.context.close()

        # The raw stream with the same escape attempt: not a byte of 103 or 104.
        async with SseClient(f"{server.url}/events?token={token}&ext=103,104") as stream:
            assert stream.response.status_code == 200
            first = await stream.next()
        assert not {"ext-103", "ext-104"} & set(tile_ids_in(first["data"]))
        assert "ext-103" not in first["data"] and "ext-104" not in first["data"]


BAD_LINKS = {
    # name: (token, what the frame says, what the log says)
    "expired": (
        lambda: mint_token(KEY, ttl=60, extensions=GRANTED, now=time.time() - 3600),
        "This embed link has expired",
        "refused: expired",
    ),
    "tampered": (
        lambda: tampered(mint_token(KEY, ttl=600, extensions=GRANTED)),
        "This embed link is not valid",
        "refused: bad signature",
    ),
    "wrong-key": (
        lambda: mint_token(OTHER_KEY, ttl=600, extensions=GRANTED),
        "This embed link is not valid",
        "refused: bad signature",
    ),
    "alg-none": (
        lambda: by_hand({"alg": "none", "typ": "JWT"}, {"ext": EXTENSIONS, "exp": int(time.time()) + 600}),
        "This embed link is not valid",
        "refused: alg none refused",
    ),
}


async def test_bad_links_get_403_a_plain_message_in_the_frame_and_a_log_line(
    simulator, panel, browser, logs
) -> None:
    pages: dict[str, str] = {}
    async with other_site(pages) as site_port:
        site = f"http://127.0.0.1:{site_port}"
        env = pbx(simulator.port, FRAME_ANCESTORS=f"'self' {site}", EMBED_SECRET=KEY)
        server = await (await panel(**env)).healthy()
        tokens = {name: make() for name, (make, _, _) in BAD_LINKS.items()}
        for name, token in tokens.items():
            pages[f"/{name}"] = parent_page("CRM", f"{server.url}/embed?token={token}")
        watched = await watched_page(browser)
        page = watched.page
        for name, (_, message, reason) in BAD_LINKS.items():
            async with page.expect_response(lambda r: "/embed?" in r.url) as response:
                await page.goto(f"{site}/{name}")
            assert (await response.value).status == 403, name
            frame = page.frame_locator("#blf")
            await expect(frame.locator("body")).to_contain_text(message, timeout=5000)
            assert await frame.locator("article").count() == 0, name
            await logs.wait_for(reason)
            logged = [r.getMessage() for r in logs.records if "embed token" in r.getMessage()]
            assert all(tokens[name][:12] not in line for line in logged), "the token was logged"
        await watched.context.close()
        # the stream refuses them just the same, before a byte of data
        async with SseClient(f"{server.url}/events?token={tokens['expired']}") as stream:
            assert stream.response.status_code == 403

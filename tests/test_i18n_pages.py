"""The pages in Russian and English (app/i18n.py, the templates): the language a page gets
(LANGUAGE, else Accept-Language), the header's count with Russian plurals, a Russian page's
stream, one rendering per language in use (not per viewer), refusals and error pages in the
viewer's language, and the Russian panel in a real Chromium (docs/*-ru*.png with
BLF_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from app.auth.users import format_line, hash_password
from app.hub import Hub
from app.i18n import N_
from app.look import Look
from app.said import Said
from app.sim import Simulator
from app.sse import encode
from app.store import MemoryStore
from app.tasks import background
from app.tiles import PRESENCE_LABELS, STATE_LABELS, Renderer
from app.view import ALL
from tests.auth.conftest import SECRET, csrf_of, sign_in
from tests.helpers import SseClient, extension_json, named, publish_to_hub, setvar
from tests.test_browser import open_panel

DOCS = Path(__file__).resolve().parent.parent / "docs"
DEMO = {"AMI_HOST": "", "MEMCACHED_URL": "", "DEMO_EXTENSIONS": "100-104", "DEMO_CHURN": "0"}
RUSSIAN = {"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"}  # Chromium set to Russian
ENGLISH = {"Accept-Language": "en-US,en;q=0.9"}
HTML = {"Accept": "text/html"}


# --- the header's count: Russian plurals ---


def header(lang: str, count: int, total: int) -> str:
    """The page's header count as the renderer draws it for `lang`."""
    renderer = Renderer(languages=("en", "ru"))
    html = renderer.page(
        "page.html",
        lang,
        title="Panel",
        tiles_html="",
        link_html="",
        events_url="events?",
        count=count,
        total=total,
        groups=[],
        has_queues=False,
        wall=False,
    )
    start = html.index('<span class="count" id="count">') + len('<span class="count" id="count">')
    return html[start : html.index("</span>", start)]


@pytest.mark.parametrize(
    ("lang", "count", "total", "said"),
    [
        ("ru", 1, 1, "1 абонент"),
        ("ru", 2, 2, "2 абонента"),
        ("ru", 5, 5, "5 абонентов"),
        ("ru", 11, 11, "11 абонентов"),
        ("ru", 21, 21, "21 абонент"),
        ("ru", 24, 24, "24 абонента"),
        ("ru", 10, 50, "10 из 50 абонентов"),
        ("ru", 1, 21, "1 из 21 абонента"),  # "из" takes the genitive: one form for 1, 21, 31
        ("ru", 0, 2, "0 из 2 абонентов"),
        ("en", 1, 1, "1 extension"),
        ("en", 50, 50, "50 extensions"),
        ("en", 10, 50, "10 of 50 extensions"),
        ("en", 0, 1, "0 of 1 extension"),
    ],
)
def test_the_header_counts_in_the_page_language(lang: str, count: int, total: int, said: str) -> None:
    assert header(lang, count, total) == said


# --- which language a page gets ---


async def page_of(server: Any, headers: dict[str, str], path: str = "/") -> str:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def assert_russian(html: str, extensions: int = 5, title: str = "Абоненты") -> None:
    assert '<html lang="ru">' in html and f"<h1>{title}</h1>" in html  # PANEL_TITLE's default, translated
    assert (
        len(re.findall(r'<span class="label"[^>]*>Свободен</span>', html)) == extensions
    )  # every tile's word
    assert f"{extensions} абонентов" in html and 'placeholder="Имя или номер"' in html
    assert 'aria-label="Обозначения"' in html and ">Говорит</li>" in html  # the legend
    for english in (">Free<", "extensions", "Search name or number", "Legend", "demo PBX"):
        assert english not in html, english


def assert_english(html: str) -> None:
    assert "<h1>Extensions</h1>" in html
    assert '<html lang="en">' in html and len(re.findall(r'<span class="label"[^>]*>Free</span>', html)) == 5
    assert "5 extensions" in html and "Свободен" not in html and "абонент" not in html


async def test_a_russian_browser_gets_the_panel_in_russian(panel) -> None:
    server = await (await panel(**DEMO)).healthy()
    assert_russian(await page_of(server, RUSSIAN))
    assert_english(await page_of(server, ENGLISH))
    assert_english(await page_of(server, {}))  # no header: English
    assert_english(await page_of(server, {"Accept-Language": "de-DE,de;q=0.9"}))  # none we have
    embed = await page_of(server, RUSSIAN, "/embed?ext=101,999")
    assert '<html lang="ru">' in embed and "Нет на АТС" in embed and "Свободен" in embed


async def test_the_language_setting_overrides_the_browser(panel) -> None:
    russian = await (await panel(**DEMO, LANGUAGE="ru", PANEL_TITLE="Reception")).healthy()
    assert_russian(await page_of(russian, ENGLISH), title="Reception")  # a title of their own stays
    english = await (await panel(**DEMO, LANGUAGE="en")).healthy()
    assert_english(await page_of(english, RUSSIAN))


# --- the stream of a Russian page ---


async def test_the_stream_of_a_russian_page_sends_russian_tiles(panel) -> None:
    async with Simulator([str(n) for n in range(100, 105)], port=0) as sim:
        settings = {"AMI_HOST": "127.0.0.1", "AMI_PORT": str(sim.port), "MEMCACHED_URL": ""}
        server = await (await panel(**settings)).healthy()
        await server.until(named)
        page = await page_of(server, RUSSIAN)
        assert "&amp;lang=ru" in page, "the page tells its stream its language"
        # The page's own stream URL (lang=ru), and a stream asked in Russian by its header.
        async with (
            SseClient(f"{server.url}/events?lang=ru") as by_url,
            SseClient(f"{server.url}/events", RUSSIAN) as by_header,
            SseClient(f"{server.url}/events", ENGLISH) as english,
        ):
            for stream in (by_url, by_header, english):
                await stream.next_with('id="ext-104"', timeout=10)
            await setvar(sim.port, "Custom:102", "INUSE")
            for stream in (by_url, by_header):
                change = await stream.next_with('id="ext-102"')
                assert '<span class="label">Говорит</span>' in change["data"]
                assert "On a call" not in change["data"]
            change = await english.next_with('id="ext-102"')
            assert '<span class="label">On a call</span>' in change["data"]


# --- one rendering per language, whatever the number of viewers ---


class CountingRenderer(Renderer):
    """Counts tile renders by (tile, language)."""

    def __init__(self) -> None:
        super().__init__(languages=("en", "ru"))
        self.rendered: list[tuple[str, str]] = []

    def tile(self, extension: Any, id_: str, exten: str, **kwargs: Any) -> str:
        self.rendered.append((id_, kwargs["look"].lang))
        return super().tile(extension, id_, exten, **kwargs)


def snapshot(version: int, states: dict[str, str]) -> dict[str, Any]:
    return {
        "version": version,
        "updated_at": 1000.0 + version,
        "pbx": {"connected": True, "since": 1000.0},
        "extensions": {f"{e}@ext-local": extension_json(e, state) for e, state in states.items()},
    }


async def test_english_and_russian_viewers_each_get_their_language_rendered_once() -> None:
    store, renderer = MemoryStore(), CountingRenderer()
    hub = Hub(store, renderer, encode, heartbeat=3600)
    async with background(hub.run(), "hub-under-test"):
        await publish_to_hub(store, hub, snapshot(1, {"100": "idle", "101": "idle"}))
        await a_change_seen_in_both_languages(hub, store, renderer)
    await store.close()


async def a_change_seen_in_both_languages(hub: Hub, store: MemoryStore, renderer: CountingRenderer) -> None:
    english = [hub.join(ALL) for _ in range(3)]
    russian = [hub.join(replace(ALL, lang="ru")) for _ in range(3)]
    russian.append(hub.join(replace(ALL, lang="ru", extens=("101",))))  # another view, same look
    start = hub.head
    renderer.rendered.clear()
    await publish_to_hub(store, hub, snapshot(2, {"100": "idle", "101": "ringing"}))
    assert sorted(renderer.rendered) == [("ext-101", "en"), ("ext-101", "ru")]
    assert start.next is not None
    chain = [start.next]
    for view in english:
        message = hub.message(view, chain)
        assert message is not None and b">Ringing<" in message and "Звонит".encode() not in message
    for view in russian:
        message = hub.message(view, chain)
        assert message is not None and ">Звонит<".encode() in message and b"Ringing" not in message
    assert len(renderer.rendered) == 2, "a message is built from the rendered tiles, not rendered again"


# --- what the server says: refusals, sign-in, errors ---


PASSWORD = "anna-secret-password"


@pytest.fixture
def signed_in_settings(tmp_path: Path) -> dict[str, str]:
    """A demo panel with sign-in: anna, a viewer with extension 101."""
    users = tmp_path / "users"
    users.write_text(format_line("anna", hash_password(PASSWORD), "viewer", "all", "101") + "\n")
    return {**DEMO, "AUTH": "users", "USERS_FILE": str(users), "SECRET_KEY": SECRET}


@pytest.fixture
def acting(signed_in_settings: dict[str, str]) -> dict[str, str]:
    """Actions on, where a viewer (anna) may not transfer."""
    return {**signed_in_settings, "ACTIONS": "on", "ACTION_ROLES": "supervisor=all;admin=all;viewer=call"}


async def test_a_refused_action_is_said_in_the_actors_language(panel, acting) -> None:
    server = await (await panel(**acting)).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await sign_in(client, "anna", PASSWORD)).status_code == 303
        csrf = csrf_of((await client.get("/")).text)
        form = {"csrf": csrf, "target": "102"}
        russian = await client.post("/actions/transfer", data=form, headers=RUSSIAN)
        english = await client.post("/actions/transfer", data=form, headers=ENGLISH)
        expired = await client.post("/actions/call", data={"csrf": "x", "target": "102"}, headers=RUSSIAN)
    assert russian.status_code == 403
    assert russian.text == (
        '<p class="action-result action-forbidden">'
        "Вашей роли (viewer) не разрешено действие «transfer» с панели.</p>"
    )
    assert (
        english.status_code == 403 and "Your role (viewer) may not transfer from the panel." in english.text
    )
    assert expired.status_code == 403
    assert "Форма устарела или отправлена не с этой панели: обновите страницу." in expired.text


def test_a_sentence_for_the_actor_is_english_in_the_log_and_theirs_on_the_tile() -> None:
    waited = Said(N_("Too many actions: wait %(seconds)d s."), seconds=5)
    assert str(waited) == "Too many actions: wait 5 s."  # the audit line
    assert waited.in_("ru") == "Слишком много действий: подождите 5 с."
    presence = Said(N_("Your presence is now: %(presence)s."), presence=Said(PRESENCE_LABELS["dnd"]))
    assert str(presence) == "Your presence is now: Do not disturb."
    assert presence.in_("ru") == "Ваш статус теперь: Не беспокоить."  # the word inside too
    assert presence.in_("en") == str(presence)


async def test_sign_in_speaks_the_browsers_language(panel, signed_in_settings) -> None:
    server = await panel(**signed_in_settings)
    async with httpx.AsyncClient(base_url=server.url, headers=RUSSIAN) as client:
        form = await client.get("/signin")
        assert '<html lang="ru">' in form.text and ">Войти</button>" in form.text and "Пароль" in form.text
        wrong = await client.post(
            "/signin", data={"csrf": csrf_of(form.text), "name": "anna", "password": "not-her-password"}
        )
        assert wrong.status_code == 401 and "Неверное имя или пароль." in wrong.text
        denied = await client.get("/api/snapshot")
        assert denied.status_code == 401 and denied.text == "Вход не выполнен."
        forged = await client.post(
            "/signin", data={"csrf": "forged", "name": "anna", "password": "x"}, headers=HTML
        )
        assert forged.status_code == 403
        assert (
            "Форма устарела или отправлена не с этой панели: обновите страницу и попробуйте снова."
            in forged.text
        )


async def test_error_pages_in_the_page_language(panel) -> None:
    server = await (await panel(**DEMO)).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        bad = await client.get("/", params={"ext": "101,<b>"}, headers={**HTML, **RUSSIAN})
        missing = await client.get("/nope", headers={**HTML, **RUSSIAN})
        english = await client.get("/", params={"ext": "101,<b>"}, headers={**HTML, **ENGLISH})
        as_json = await client.get("/", params={"ext": "101,<b>"}, headers=RUSSIAN)
        pin = await client.post("/pins", data={"exten": "<b>"}, headers=RUSSIAN)
    assert bad.status_code == 400 and '<html lang="ru">' in bad.text
    assert "<h1>400 Неверный запрос</h1>" in bad.text
    assert "элемент 2 списка ext — не внутренний номер (цифры, буквы, _+*#.-)" in bad.text
    assert "<b>" not in bad.text
    assert missing.status_code == 404 and "<h1>404 Не найдено</h1>" in missing.text
    assert "<h1>400 Bad request</h1>" in english.text
    assert "item 2 of the ext list is not an extension" in english.text
    # The JSON body stays English (for scripts and logs).
    assert as_json.json() == {"error": "item 2 of the ext list is not an extension (digits, letters, _+*#.-)"}
    assert pin.status_code == 400 and pin.text == "Выберите номер коллеги, которого нужно закрепить."


# --- in a real browser: the Russian panel and wallboard fit (docs/*-ru*.png) ---

OVERFLOWING = """() => [...document.querySelectorAll(
    '.tile .label, .tile .ext, .legend li, .count, .queue .members span, .queue .label')]
  .filter(e => e.getClientRects().length && e.scrollWidth > e.clientWidth + 1)
  .map(e => e.closest('[id]').id + ': ' + e.textContent)"""
# Every state word, in a tile with a duration (one line for the word) and without (two),
# put among the panel's own tiles for a moment: the words cut there (none in English).
PROBED = """(html) => {
  const home = document.querySelector('.group-tiles') || document.querySelector('#tiles');
  const probes = document.createElement('div');
  probes.style.display = 'contents';
  probes.innerHTML = html;
  home.append(probes);
  const cut = [...probes.querySelectorAll('.label')]
    .filter(e => e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1)
    .map(e => e.closest('article').id + ': ' + e.textContent);
  probes.remove();
  return cut;
}"""


def every_state_word(lang: str) -> str:
    """A tile of each state in `lang`, with and without a duration, and one not on the PBX."""
    renderer, now = Renderer(languages=(lang,)), time.time()
    tiles = [renderer.tile(None, "probe-none", "999", oob=False, look=Look(lang))]
    for state in STATE_LABELS:
        for since in (now - 75, 0.0):
            extension = extension_json("105", state, name="Anna Berg", changed_at=since)
            tiles.append(
                renderer.tile(extension, f"probe-{state}-{bool(since)}", "105", oob=False, look=Look(lang))
            )
    return "".join(tiles)


async def russian_page(browser: Any, url: str, width: int, height: int) -> Any:
    """`url` in a Chromium set to Russian (a phone's when narrow), its stream open."""
    phone = width < 500
    return await open_panel(
        browser,
        url,
        viewport={"width": width, "height": height},
        locale="ru-RU",
        reduced_motion="reduce",
        is_mobile=phone,
        has_touch=phone,
    )


async def look_at(watched: Any, name: str) -> None:
    """No console error; docs/`name` re-made with BLF_SCREENSHOTS=1."""
    if os.environ.get("BLF_SCREENSHOTS") == "1":
        await watched.page.screenshot(path=DOCS / name)
    assert watched.errors == [], "\n".join(watched.errors)
    await watched.context.close()


@pytest.mark.timeout(120)
async def test_the_russian_panel_in_chromium(panel, browser) -> None:
    """The demo in a Chromium set to Russian, mid-churn: its words in Russian, no state
    word, legend entry or count cut (docs/panel-ru.png, docs/panel-ru-phone.png)."""
    demo = {"AMI_HOST": "", "MEMCACHED_URL": "", "DEMO_EXTENSIONS": "100-159", "DEMO_CHURN": "20"}
    server = await (await panel(**demo)).healthy()
    await server.until(lambda hub: sum(e["state"] != "idle" for e in hub.extensions.values()) >= 10)
    for (width, height), name in [((1920, 1080), "panel-ru.png"), ((390, 844), "panel-ru-phone.png")]:
        watched = await russian_page(browser, server.url + "/", width, height)
        page = watched.page
        assert await page.get_attribute("html", "lang") == "ru"
        await expect(page.locator("h1")).to_have_text("Абоненты")
        await expect(page.locator(".legend")).to_contain_text("Свободен")
        await expect(page.locator("#count")).to_contain_text("60 абонентов")
        if width > 500:  # a phone's legend and count wrap by design
            assert await page.evaluate(OVERFLOWING) == []
        assert await page.evaluate(PROBED, every_state_word("ru")) == []
        await look_at(watched, name)


@pytest.mark.timeout(120)
async def test_the_russian_wallboard_in_chromium(panel, browser) -> None:
    """Queues with a caller waiting and an agent paused, in Russian (docs/queues-ru.png)."""
    names = {"100": "Анна Берг", "101": "Борис Коль", "102": "Вера Лис"}
    async with Simulator([str(n) for n in range(100, 108)], port=0, names=names) as sim:
        sim.queues.add_queue(
            "support",
            [("PJSIP/100", "Анна Берг", "Custom:100"), ("PJSIP/101", "Борис Коль", "Custom:101")],
        )
        sim.queues.add_queue(
            "sales", [("PJSIP/102", "Вера Лис", "Custom:102"), ("PJSIP/103", "", "Custom:103")]
        )
        support = sim.queues.queues["support"]
        sim.queues.set_paused(support, support.members[0], True, "Обед")
        sim.queues.join("support", "+74951234567", "Иван Петров")
        settings = {"AMI_HOST": "127.0.0.1", "AMI_PORT": str(sim.port), "MEMCACHED_URL": ""}
        server = await (await panel(**settings)).healthy()
        await server.until(named)
        await server.until(lambda hub: hub.queues.get("support", {}).get("callers"))
        watched = await russian_page(browser, server.url + "/queues", 1920, 1080)
        page = watched.page
        await expect(page.locator("h1")).to_have_text("Абоненты · Очереди")
        tile = page.locator("#queue-support")
        await expect(tile.locator(".label")).to_have_text("1 ждёт")
        await expect(tile).to_contain_text("дольше всех")
        await expect(tile).to_contain_text("1 на паузе")
        await expect(page.locator("#queue-sales .label")).to_have_text("Никто не ждёт")
        await expect(page.locator("#queue-sales .m-available")).to_have_text("2 свободны")
        assert await page.evaluate(OVERFLOWING) == []
        await look_at(watched, "queues-ru.png")

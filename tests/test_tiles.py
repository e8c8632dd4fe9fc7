"""The server-rendered HTML: tiles, the link banner, the page, the embed, the error page.

Parsed with the standard library's HTMLParser, so the checks are about elements and
attributes, not about how the templates happen to be spelled.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup

from app import tiles
from app.tiles import STATE_LABELS, LinkState, Renderer, tile_context, tile_ids

STATIC = Path(tiles.__file__).parent / "static"
HOSTILE = "<script>alert(1)</script>\"'&"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
VENDORED_SCRIPTS = ["static/htmx.min.js", "static/hx-sse.min.js"]
URL_ATTRIBUTES = {"src", "href", "action", "hx-sse:connect", "hx-get", "hx-post", "poster", "srcset"}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Element | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Element] = []
        self.text: list[str] = []

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def all_text(self) -> str:
        return " ".join([*self.text, *(child.all_text() for child in self.children)])

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


class Tree(HTMLParser):
    """A forgiving DOM-ish tree: roots, every element, and the text under each."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.roots: list[Element] = []
        self.stray_text: list[str] = []
        self._open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self._open[-1] if self._open else None
        element = Element(tag, dict(attrs), parent)
        (parent.children if parent else self.roots).append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1].text.append(data)
        elif data.strip():
            self.stray_text.append(data)

    def elements(self):
        for root in self.roots:
            yield from root.walk()

    def by_id(self, id_: str) -> Element:
        found = [e for e in self.elements() if e.attrs.get("id") == id_]
        assert len(found) == 1, f"{len(found)} elements with id {id_!r}"
        return found[0]


def extension(state: str = "idle", **fields: Any) -> dict[str, Any]:
    base = {
        "exten": "105",
        "context": "ext-local",
        "hint": "Custom:105",
        "status": 0,
        "state": state,
        "changed_at": 1_700_000_000.0,
    }
    base.update(fields)
    return base


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def only_root(html: str) -> Element:
    tree = Tree(html)
    assert len(tree.roots) == 1, f"{len(tree.roots)} root elements in {html!r}"
    assert not tree.stray_text, tree.stray_text
    return tree.roots[0]


# --- tiles ---------------------------------------------------------------------------


def test_tile_has_one_root_with_id_class_and_label(renderer: Renderer) -> None:
    html = renderer.tile(extension("inuse"), "ext-105", "105", oob=False)
    root = only_root(html)
    assert root.tag == "article"
    assert root.attrs["id"] == "ext-105"
    assert root.classes == ["tile", "state-inuse"]
    assert "hx-swap-oob" not in root.attrs
    text = " ".join(root.all_text().split())
    assert "105" in text
    assert STATE_LABELS["inuse"] in text
    assert "\n" not in html  # one SSE data line


def test_whole_view_message_swaps_the_tiles_and_the_link(renderer: Renderer) -> None:
    tile = renderer.tile(extension(), "ext-105", "105", oob=False)
    html = renderer.whole('<div id="link"></div>', tile)
    assert html.startswith('<div id="link"></div> <main id="tiles" hx-swap-oob="innerHTML">')
    assert tile in html and html.endswith("</main>") and "\n" not in html


def test_oob_adds_hx_swap_oob(renderer: Renderer) -> None:
    root = only_root(renderer.tile(extension(), "ext-105", "105", oob=True))
    assert root.attrs["hx-swap-oob"] == "true"
    assert root.attrs["id"] == "ext-105"


NOW = 1_700_000_000.0 + 725  # the render time: 12:05 after `extension()`'s changed_at


def durations(root: Element) -> dict[str, tuple[str, str, str]]:
    """The running durations of a tile, by the class of the line holding them: (datetime,
    style, title of the time or of its line)."""
    found = {}
    for time in (e for e in root.walk() if e.tag == "time"):
        assert "ticking" in time.classes and not "".join(time.text).strip(), "CSS writes the figure"
        holder = time if "since" in time.classes else time.parent
        line = "since" if holder is time else holder.classes[0]
        found[line] = (time.attrs["datetime"], time.attrs["style"], holder.attrs.get("title", ""))
    return found


def test_the_state_shows_how_long_it_has_lasted() -> None:
    root = only_root(Renderer(clock=lambda: NOW).tile(extension("busy"), "ext-105", "105", oob=False))
    at = tiles.clock(1_700_000_000.0)
    assert durations(root) == {"since": (tiles.iso(1_700_000_000.0), "--since:1700000000", f"since {at}")}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", tiles.iso(1_700_000_000.0))
    assert "since" not in " ".join(root.all_text().split()), "a duration, not a clock time, on screen"


def test_a_start_the_pbx_did_not_tell_shows_no_invented_duration() -> None:
    root = only_root(Renderer(clock=lambda: NOW).tile(extension(changed_at=0), "ext-105", "105", oob=False))
    assert durations(root) == {}
    (label,) = [e for e in root.walk() if "label" in e.classes]
    assert label.attrs["title"] == "Free, since before the panel connected to the PBX"
    known = only_root(Renderer(clock=lambda: NOW).tile(extension(), "ext-105", "105", oob=False))
    assert "title" not in [e for e in known.walk() if "label" in e.classes][0].attrs


def test_calls_presence_and_pauses_show_their_own_durations() -> None:
    ext = extension(
        "inuse_ringing",
        calls=[
            {
                "direction": "out",
                "party_name": "Anna",
                "party_number": "101",
                "since": NOW - 65,
                "state": "up",
            },
            {
                "direction": "in",
                "party_name": "",
                "party_number": "+4930",
                "since": NOW - 12,
                "state": "ringing",
            },
        ],
        presence={"state": "away", "subtype": "", "message": "Lunch", "since": NOW - 3905},
        queues=[{"queue": "support", "paused": True, "reason": "lunch", "paused_since": NOW - 30}],
    )
    root = only_root(Renderer(clock=lambda: NOW).tile(ext, "ext-105", "105", oob=False))
    calls = [e for e in root.walk() if "call" in e.classes]
    styles = [[t.attrs["style"] for t in call.walk() if t.tag == "time"] for call in calls]
    assert styles == [[f"--since:{int(NOW - 65)}"], [f"--since:{int(NOW - 12)}"]], (
        "a ringing call shows how long it rings"
    )
    assert calls[1].attrs["title"] == f"from +4930, ringing, since {tiles.clock(NOW - 12)}"
    found = durations(root)
    assert found["presence"][1:] == (
        f"--since:{int(NOW - 3905)}",
        f"Away: Lunch, since {tiles.clock(NOW - 3905)}",
    )
    assert found["pause"][1:] == (f"--since:{int(NOW - 30)}", f"Paused: lunch, since {tiles.clock(NOW - 30)}")
    assert found["since"][1] == "--since:1700000000"
    # Lines of detail in the order they matter: the calls, the pause, presence, the state's.
    order = [e.classes[0] for e in root.children if "more" in e.classes]
    assert order == ["call", "call", "pause", "presence", "since", "queues"]


def test_unknown_starts_of_calls_and_presence_show_no_duration() -> None:
    ext = extension(
        "inuse",
        changed_at=0,
        calls=[{"direction": "in", "party_name": "Bo", "party_number": "7", "since": 0, "state": "up"}],
        presence={"state": "dnd", "subtype": "", "message": "", "since": 0.0},
    )
    root = only_root(Renderer(clock=lambda: NOW).tile(ext, "ext-105", "105", oob=False))
    assert durations(root) == {}


def test_every_text_that_may_be_cut_has_its_whole_text_in_a_title() -> None:
    name = "Maximiliane Kowalczyk-Schneider" + HOSTILE
    ext = extension(
        "inuse",
        name=name,
        calls=[
            {
                "direction": "in",
                "party_name": "Anna Smith",
                "party_number": "101",
                "since": NOW,
                "state": "hold",
            }
        ],
        presence={"state": "dnd", "subtype": "", "message": "In a meeting until 3pm" + HOSTILE, "since": 0},
    )
    html = Renderer(clock=lambda: NOW).tile(ext, "ext-105", "105", oob=True)
    root = only_root(html)
    assert "<script" not in html
    titles = {e.classes[0]: e.attrs.get("title") for e in root.walk() if e.classes}
    assert titles["name"] == name
    assert titles["call"] == f"from Anna Smith (101), on hold, since {tiles.clock(NOW)}"
    assert titles["presence"] == f"Do not disturb: In a meeting until 3pm{HOSTILE}"
    (what,) = [e for e in root.walk() if "what" in e.classes and "call" in e.parent.classes]
    assert "".join(what.text).strip() == "Anna Smith (101), on hold" and what.children[0].text == ["from"]


def test_a_tile_is_focusable_in_reading_order() -> None:
    root = only_root(Renderer().tile(extension(), "ext-105", "105", oob=True))
    assert root.attrs["tabindex"] == "0", "Tab reaches it in the order of the page"
    assert only_root(Renderer().tile(None, "ext-9", "9", oob=False)).attrs["tabindex"] == "0"


def test_the_css_counts_hours_minutes_and_seconds() -> None:
    css = (STATIC / "panel.css").read_text()
    assert "@counter-style elapsed-tens" in css and "counter(elapsed-hrs, elapsed-hours)" in css
    assert re.search(r"\.tile:focus-visible\s*\{[^}]*outline:\s*3px solid", css), "a visible focus ring"
    assert ":is(:hover, :focus-within)" in css


def test_tile_has_a_lamp_hidden_from_screen_readers(renderer: Renderer) -> None:
    root = only_root(renderer.tile(extension(), "ext-105", "105", oob=False))
    lamps = [e for e in root.walk() if "lamp" in e.classes]
    assert len(lamps) == 1
    assert lamps[0].attrs.get("aria-hidden") == "true"


def render_tile_with(renderer: Renderer, **fields: Any) -> str:
    """tile.html with extra context fields (`name` is not in tile_context yet: a later
    issue adds it; the template already renders it when present)."""
    context = tile_context(extension(), "ext-105", "105") | fields
    return renderer.env.get_template("tile.html").render(tile=context, oob=True)


@pytest.mark.parametrize("field", ["exten", "hint", "context"])
def test_hostile_strings_are_escaped(renderer: Renderer, field: str) -> None:
    html = renderer.tile(extension(**{field: HOSTILE}), "ext-105", "105", oob=True)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    only_root(html)  # the quote did not break out of an attribute either


def test_hostile_name_is_escaped(renderer: Renderer) -> None:
    html = render_tile_with(renderer, name=HOSTILE)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    only_root(html)


def test_hostile_tile_id_is_escaped(renderer: Renderer) -> None:
    html = renderer.tile(None, 'ext-1"><script>x', "1", oob=False)
    assert "<script" not in html
    assert only_root(html).attrs["id"] == 'ext-1"><script>x'


def test_name_line_only_when_present(renderer: Renderer) -> None:
    without = only_root(renderer.tile(extension(), "ext-105", "105", oob=False))
    assert not [e for e in without.walk() if "name" in e.classes]
    with_name = only_root(render_tile_with(renderer, name="Anna Berg"))
    names = [e for e in with_name.walk() if "name" in e.classes]
    assert [n.all_text().strip() for n in names] == ["Anna Berg"]


def test_every_state_renders_with_its_own_class_and_label(renderer: Renderer) -> None:
    classes = set()
    for state, label in STATE_LABELS.items():
        root = only_root(renderer.tile(extension(state), f"ext-{state}", "105", oob=False))
        state_classes = [c for c in root.classes if c.startswith("state-")]
        assert state_classes == [f"state-{state}"]
        assert "tile" in root.classes
        assert label in " ".join(root.all_text().split())
        classes.add(state_classes[0])
    assert len(classes) == len(STATE_LABELS)


def test_every_state_has_a_look_in_the_css() -> None:
    css = (STATIC / "panel.css").read_text()
    for state in STATE_LABELS:
        assert re.search(rf"\.state-{state}\b[^{{]*\{{", css), f"no rule for .state-{state}"


def test_unknown_state_and_missing_extension(renderer: Renderer) -> None:
    odd = only_root(renderer.tile(extension("exploded"), "ext-105", "105", oob=False))
    assert "state-unknown" in odd.classes
    missing = only_root(renderer.tile(None, "ext-999", "999", oob=False))
    assert missing.classes == ["tile", "state-unknown"]
    assert "999" in missing.all_text()
    assert "Not on this PBX" in missing.all_text()


def test_tile_stays_small(renderer: Renderer) -> None:
    # sent to every viewer on every change
    html = renderer.tile(extension("inuse_ringing"), "ext-105", "105", oob=True)
    assert len(html.encode()) < 400, html


# --- the link banner -----------------------------------------------------------------

BANNERS = {
    "pbx-down": "PBX connection lost at",
    "store-down": "State store unreachable",
    "no-collector": "Collector not running",
}


@pytest.mark.parametrize("state", ["ok", "pbx-down", "store-down", "no-collector"])
@pytest.mark.parametrize("oob", [False, True])
def test_link_for_each_state(renderer: Renderer, state: str, oob: bool) -> None:
    html = renderer.link(LinkState(state, 1_700_000_000.0), oob=oob)
    assert "\n" not in html
    root = only_root(html)
    assert root.tag == "div"
    assert root.attrs["id"] == "link"
    assert root.classes == ["link", f"link-{state}"]
    assert (root.attrs.get("hx-swap-oob") == "true") is oob
    banners = [e for e in root.walk() if "banner" in e.classes]
    watchdogs = [e for e in root.walk() if "watchdog" in e.classes]
    assert len(watchdogs) == 1  # restarted by every re-send of #link
    assert "lost" in watchdogs[0].all_text()
    if state == "ok":
        assert not banners
    else:
        assert len(banners) == 1
        text = banners[0].all_text()
        assert BANNERS[state] in text
        assert "states may be out of date" in text


def test_pbx_down_banner_tells_since_when(renderer: Renderer) -> None:
    since = 1_700_000_000.0
    html = renderer.link(LinkState("pbx-down", since), oob=False)
    assert f"at {tiles.clock(since)} (" in html and 'style="--since:1700000000"' in html, "and for how long"
    no_since = renderer.link(LinkState("pbx-down"), oob=False)
    assert "PBX connection lost — states may be out of date" in no_since


def test_pbx_starting_banner(renderer: Renderer) -> None:
    since = 1_700_000_000.0
    root = only_root(renderer.link(LinkState("pbx-starting", since), oob=True))
    assert root.classes == ["link", "link-pbx-starting"]  # not link-ok: panel.css greys the tiles
    (banner,) = [e for e in root.walk() if "banner" in e.classes]
    text = " ".join(banner.all_text().split())
    # the figure in the parentheses is the page's clock's (CSS): no text in the HTML
    assert text == f"PBX starting since {tiles.clock(since)} ( ) — states may be out of date"
    (lasted,) = [e for e in banner.walk() if e.tag == "time"]
    assert "ticking" in lasted.classes and lasted.attrs["style"] == "--since:1700000000"


def test_a_pbx_never_reached_says_where_and_why(renderer: Renderer) -> None:
    link = LinkState("pbx-unreachable", 1.0, "10.0.0.5:5038", "connection refused")
    root = only_root(renderer.link(link, oob=False))
    (banner,) = [e for e in root.walk() if "banner" in e.classes]
    assert " ".join(banner.all_text().split()) == "Cannot reach the PBX at 10.0.0.5:5038 (connection refused)"
    assert "lost" not in banner.all_text()
    hostile = renderer.link(
        LinkState("pbx-unreachable", 1.0, "<b>pbx</b>", '"><script>x()</script>'), oob=False
    )
    assert "<script>" not in hostile and "<b>" not in hostile and "&lt;script&gt;" in hostile
    connecting = only_root(renderer.link(LinkState("pbx-connecting", 1.0, "10.0.0.5:5038"), oob=False))
    (banner,) = [e for e in connecting.walk() if "banner" in e.classes]
    assert " ".join(banner.all_text().split()) == "Connecting to the PBX at 10.0.0.5:5038…"


def test_css_greys_tiles_and_runs_the_watchdog() -> None:
    css = (STATIC / "panel.css").read_text()
    assert ".link:not(.link-ok) ~ .tiles .tile" in css
    watchdog = re.search(r"\.watchdog\s*\{([^}]*)\}", css)
    assert watchdog is not None
    body = watchdog.group(1)
    assert re.search(r"animation:[^;]*\b15s\b[^;]*\bforwards\b", body), body
    assert "pointer-events: none" in body
    assert "prefers-reduced-motion" in css
    assert "prefers-color-scheme: dark" in css
    assert "@import" not in css
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", css)


# --- page, embed, error ----------------------------------------------------------------


def render_view(name: str, *, demo: bool = False, link: str = "ok") -> tuple[str, Tree]:
    renderer = Renderer(demo=demo)
    extensions = {
        "105@ext-local": extension("inuse"),
        "106@ext-local": extension("ringing", exten="106", hint=HOSTILE),
    }
    ids = tile_ids(extensions)
    tiles_html = " ".join(
        renderer.tile(ext, ids[key], ext["exten"], oob=False) for key, ext in extensions.items()
    )
    html = renderer.page(
        name,
        title="Reception <BLF>",
        tiles_html=Markup(tiles_html),
        link_html=Markup(renderer.link(LinkState(link, 1_700_000_000.0), oob=False)),
        events_url="events?ext=105,106&since=42",
        count=len(extensions),
    )
    return html, Tree(html)


@pytest.mark.parametrize("name", ["page.html", "embed.html"])
def test_view_structure(name: str) -> None:
    html, tree = render_view(name)
    assert html.lstrip().lower().startswith("<!doctype html>")
    main = tree.by_id("tiles")
    assert main.tag == "main"
    assert "tiles" in main.classes
    assert [e.attrs["id"] for e in main.children] == ["ext-105", "ext-106"]
    link = tree.by_id("link")
    # the CSS greys the tiles through `.link ~ .tiles`: #link must come before, as a sibling
    siblings = link.parent.children if link.parent else tree.roots
    assert main in siblings
    assert siblings.index(link) < siblings.index(main)
    connects = [e for e in tree.elements() if "hx-sse:connect" in e.attrs]
    assert len(connects) == 1
    assert connects[0].attrs["hx-sse:connect"] == "events?ext=105,106&since=42"
    assert connects[0].attrs.get("hx-swap") == "none"
    assert "<script>alert" not in html
    assert "Reception &lt;BLF&gt;" in html or name == "embed.html"


@pytest.mark.parametrize("name", ["page.html", "embed.html"])
def test_view_urls_are_relative_and_local(name: str) -> None:
    html, tree = render_view(name, demo=True, link="pbx-down")
    for element in tree.elements():
        for attr, value in element.attrs.items():
            if attr in URL_ATTRIBUTES and value is not None:
                assert not value.startswith("/"), f"absolute URL {attr}={value!r}"
                if not value.startswith("data:"):
                    assert "//" not in value, f"off-site URL {attr}={value!r}"
                    assert ":" not in value.split("?")[0], f"URL with a scheme {attr}={value!r}"
    lowered = html.lower()
    for cdn in ("cdn", "unpkg", "jsdelivr", "googleapis", "cloudflare"):
        assert cdn not in lowered
    stylesheets = [
        e.attrs["href"] for e in tree.elements() if e.tag == "link" and e.attrs.get("rel") == "stylesheet"
    ]
    assert stylesheets[0] == "static/panel.css"
    assert set(stylesheets) <= {"static/panel.css", "static/controls.css"}, "our own files only"


@pytest.mark.parametrize("name", ["page.html", "embed.html", "error.html"])
def test_no_script_of_ours(name: str) -> None:
    if name == "error.html":
        html = Renderer().page(name, status=404, title="404", message="x")
        tree = Tree(html)
    else:
        html, tree = render_view(name)
    scripts = [e for e in tree.elements() if e.tag == "script"]
    expected = [] if name == "error.html" else VENDORED_SCRIPTS
    assert [s.attrs.get("src") for s in scripts] == expected
    assert all(not "".join(s.text).strip() for s in scripts)
    for element in tree.elements():
        for attr in element.attrs:
            assert not attr.startswith("on"), f"inline handler {attr} on <{element.tag}>"
            assert not attr.startswith("hx-on"), f"{attr} on <{element.tag}>"
    assert "javascript:" not in html.lower()


def test_referenced_static_files_exist() -> None:
    _, tree = render_view("page.html")
    for element in tree.elements():
        for attr in ("src", "href"):
            value = element.attrs.get(attr)
            if value and value.startswith("static/"):
                assert (STATIC / value.removeprefix("static/")).is_file(), value


def test_page_has_title_legend_and_demo_badge() -> None:
    _, tree = render_view("page.html", demo=True)
    assert any(e.tag == "h1" and "Reception <BLF>" in e.all_text() for e in tree.elements())
    assert any("demo" in e.classes and "demo PBX" in e.all_text() for e in tree.elements())
    legend = [e for e in tree.elements() if "legend" in e.classes]
    assert len(legend) == 1
    items = [e for e in legend[0].walk() if e.tag == "li"]
    assert sorted(c for item in items for c in item.classes) == sorted(f"state-{s}" for s in STATE_LABELS)
    text = legend[0].all_text()
    for label in STATE_LABELS.values():
        assert label in text
    assert all(any("lamp" in e.classes for e in item.walk()) for item in items)


@pytest.mark.parametrize("name", ["page.html", "embed.html"])
def test_no_demo_badge_on_a_real_pbx(name: str) -> None:
    html, _ = render_view(name, demo=False)
    assert "demo PBX" not in html


def test_embed_has_no_chrome() -> None:
    _, tree = render_view("embed.html", demo=False)
    tags = {e.tag for e in tree.elements()}
    assert "header" not in tags
    headings = [e for e in tree.elements() if e.tag == "h1"]
    assert all("visually-hidden" in e.classes for e in headings), "a heading for screen readers only"
    assert not [e for e in tree.elements() if "legend" in e.classes]


def test_page_shows_banner_when_link_is_down() -> None:
    html, tree = render_view("page.html", link="store-down")
    assert "link-store-down" in tree.by_id("link").classes
    assert "State store unreachable" in html


def test_error_page_escapes_message() -> None:
    html = Renderer().page("error.html", status=400, title="400", message="bad <script>x</script>")
    assert "<script" not in html
    assert "bad &lt;script&gt;x&lt;/script&gt;" in html
    tree = Tree(html)
    assert [e.all_text().strip() for e in tree.elements() if e.tag == "h1"] == ["400 Bad request"]
    not_found = Renderer().page("error.html", status=404, message="No such page")
    assert "404 Not found" in not_found and "No such page" in not_found


# --- ids -------------------------------------------------------------------------------


def test_tile_id_is_short() -> None:
    assert tile_ids(["105@ext-local"]) == {"105@ext-local": "ext-105"}


def test_tile_ids_disambiguate_two_contexts() -> None:
    ids = tile_ids(["105@ext-local", "105@a-context", "106@ext-local"])
    assert ids["105@a-context"] == "ext-105"  # the context that sorts first keeps the short id
    assert ids["105@ext-local"] == "ext-105@ext-local"
    assert ids["106@ext-local"] == "ext-106"
    assert len(set(ids.values())) == 3


def test_a_tile_id_as_a_css_selector_escapes_what_is_not_a_name() -> None:
    assert tiles.css_id("ext-100~acme@from-internal") == r"ext-100\~acme\@from-internal"
    assert tiles.css_id("ext-*8#") == r"ext-\*8\#"

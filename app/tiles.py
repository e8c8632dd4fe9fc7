"""Server-rendered HTML: a tile (plain or out-of-band), the link banner, a whole view as
a stream message, the page and the embed (jinja2).

Everything that reaches a template is escaped by jinja2's autoescape: names and hints
come from the phone network. Tile ids are derived from the extension key and its firm
only, so a tile keeps its id (and its DOM node) for as long as the extension exists, and
an id never tells one firm's viewers about another firm's extensions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, Template
from markupsafe import Markup

from app.i18n import N_, environment_for, translations
from app.look import ACTION_LABELS, Look
from app.queues import QUEUE_RE
from app.schema import CallJSON, ExtensionJSON, LinkJSON, PresenceJSON, QueueJSON, clean_text
from app.scope import without_numbers

TEMPLATES = Path(__file__).parent / "templates"
PLAIN = Look()  # English, numbers shown, no controls

# What each state looks like: a word for the screen reader and the colour-blind, a
# shape class (the CSS draws it), and the sort of the lamp. The words stay English here
# (marked N_); the templates translate them (`_(tile.label)`) in the page's language.
STATE_LABELS: dict[str, str] = {
    "idle": N_("Free"),
    "inuse": N_("On a call"),
    "busy": N_("Busy"),
    "unavailable": N_("Offline"),
    "ringing": N_("Ringing"),
    "inuse_ringing": N_("On a call, ringing"),
    "hold": N_("On hold"),
    "inuse_hold": N_("On a call, on hold"),
    "unknown": N_("Unknown"),
}


def tile_id(exten: str, context: str, short: bool = True, tenant: str = "") -> str:
    """`ext-105`; where two contexts share an exten, the others get `ext-105@context`;
    an extension of a firm `acme` gets `ext-105~acme` (or `ext-105~acme@context`)."""
    base = f"ext-{exten}~{tenant}" if tenant else f"ext-{exten}"
    return base if short else f"{base}@{context}"


def tile_ids(keys: Iterable[str], tenants: Mapping[str, str] | None = None) -> dict[str, str]:
    """Ids for a set of keys (`tenants`: a key's firm, where there are firms): within a
    firm, the context that sorts first keeps the short id. Chosen per firm, so that an id
    never depends on (and so never reveals) another firm's extensions."""
    tenants = tenants or {}
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for key in sorted(keys, key=lambda k: (k.split("@", 1)[1], k)):
        exten, _, context = key.partition("@")
        tenant = tenants.get(key, "")
        short = tile_id(exten, context, tenant=tenant) not in taken
        ids[key] = tile_id(exten, context, short, tenant)
        taken.add(ids[key])
    return ids


def queue_tile_id(name: str) -> str | None:
    """`queue-support`, from a checked queue name only (None for any other)."""
    return f"queue-{name}" if QUEUE_RE.fullmatch(name) else None


def css_id(id_: str) -> str:
    """A tile id as a CSS id selector's name: every character but letters, digits, - and _
    escaped (ids hold an extension's +*#. and a firm's ~)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else f"\\{c}" for c in id_)


def clock(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))


@dataclass(frozen=True)
class LinkState:
    """What the viewer must be told about the freshness of the states it sees. `address`
    and `error` (cleaned by the collector, escaped by the template) say why a PBX never
    reached cannot be."""

    # "ok" | "pbx-down" | "pbx-starting" | "pbx-connecting" | "pbx-unreachable" |
    # "store-down" | "no-collector"
    state: str
    since: float = 0.0
    address: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class Renderer:
    """One jinja2 environment per language, made once per process; render methods take
    the language (or the Look) and return str, never bytes."""

    def __init__(
        self,
        *,
        demo: bool = False,
        clock: Callable[[], float] = time.time,
        languages: Iterable[str] = ("en",),
    ) -> None:
        self.clock = clock  # the server's time a page is rendered at: its clock starts there
        self.envs = {lang: self._environment(lang, demo) for lang in languages}
        self.default = next(iter(self.envs))  # the first language: the panel's default
        self.env = self.envs[self.default]
        for env in self.envs.values():  # the page's clock starts at the server's time (panel.css)
            env.globals["page_at"] = lambda: int(self.clock())

    @staticmethod
    def _environment(lang: str, demo: bool) -> Environment:
        env = environment_for(lang, loader=FileSystemLoader(TEMPLATES), trim_blocks=True, lstrip_blocks=True)
        env.globals.update(demo=demo, STATE_LABELS=STATE_LABELS, ACTION_LABELS=ACTION_LABELS, lang=lang)
        env.filters["css_id"] = css_id
        return env

    def _template(self, lang: str, name: str) -> Template:
        """A template in `lang` (the default language's for one this process was not given)."""
        return self.envs.get(lang, self.env).get_template(name)  # jinja2 caches it per env

    def tile(
        self,
        extension: ExtensionJSON | None,
        id_: str,
        exten: str,
        *,
        oob: bool,
        inside: Container[str] | None = None,
        look: Look = PLAIN,
    ) -> str:
        """A tile as one line of HTML (an SSE data line needs no splitting then).
        `extension` None: an extension the PBX does not know (shown as unknown).
        `inside` given: outside callers' numbers hidden (the numbers in it are colleagues').
        """
        tile = tile_context(extension, id_, exten, inside)
        template = self._template(look.lang, "tile.html")
        return _one_line(template.render(tile=tile, oob=oob, controls=look.ordered_controls))

    def queue(self, queue: QueueJSON, id_: str, *, oob: bool, lang: str = "en") -> str:
        """A queue's tile as one line: counts only, no member or caller named (the same
        bytes for every scope that sees the queue at all)."""
        context = queue_context(queue, id_)
        return _one_line(self._template(lang, "queue.html").render(queue=context, oob=oob))

    def group(
        self,
        name: str,
        tiles_html: str,
        *,
        elsewhere: Iterable[tuple[str, ExtensionJSON]] = (),
        lang: str = "en",
    ) -> str:
        """A group's header and its tiles (tiles_html is ours, already escaped), and links to
        its people whose tiles stand under another group (`elsewhere`: tile id, extension)."""
        people = [{"id": id_, "exten": ext["exten"], "name": ext.get("name", "")} for id_, ext in elsewhere]
        template = self._template(lang, "group.html")
        return _one_line(template.render(name=name, tiles=Markup(tiles_html), elsewhere=people))  # noqa: S704

    def whole(self, link_html: str, tiles_html: str) -> str:
        """A viewer's whole view as one stream message (both parts ours, already escaped)."""
        whole = self._template("en", "whole.html")  # no words of its own
        return _one_line(whole.render(link=Markup(link_html), tiles=Markup(tiles_html)))  # noqa: S704

    def link(self, link: LinkState, *, oob: bool, lang: str = "en") -> str:
        context = {
            "state": link.state,
            "since": clock(link.since) if link.since else "",
            "started": elapsed(link.since) if link.since else None,  # how long, counted by CSS
            "address": link.address,
            "error": link.error,
        }
        return _one_line(self._template(lang, "link.html").render(link=context, oob=oob))

    def announce(self, extensions: Iterable[ExtensionJSON], lang: str) -> str:
        """What a viewer's screen reader says when pinned colleagues change state ("Anna
        Smith is free"): the content of the page's aria-live region, swapped in by the stream."""
        said = [
            {"name": str(ext.get("name") or ext.get("exten", "")), "tile": tile_context(ext, "", "")}
            for ext in extensions
        ]
        return _one_line(self._template(lang, "announce.html").render(said=said))

    def gettext(self, lang: str, message: str) -> str:
        """`message` (marked with N_ where it is written) in `lang` (escaped by the template)."""
        return translations(lang if lang in self.envs else self.default).gettext(message)

    def page(self, name: str, lang: str = "en", **context: Any) -> str:
        return self._template(lang, name).render(**context)


PRESENCE_LABELS: dict[str, str] = {
    "available": N_("Available"),
    "away": N_("Away"),
    "xa": N_("Away for long"),
    "chat": N_("Chat"),
    "dnd": N_("Do not disturb"),
    "unavailable": N_("Unavailable"),
    "not_set": "",
}
CALL_STATE_LABELS: dict[str, str] = {
    "ringing": N_("ringing"),
    "dialing": N_("calling"),
    "up": "",
    "hold": N_("on hold"),
}


def presence_context(presence: PresenceJSON | None) -> dict[str, Any] | None:
    """Presence worth showing: not the default (available / not set); its duration when
    an event told its start (a presence listed at login has none)."""
    if not isinstance(presence, Mapping):
        return None
    state = str(presence.get("state", ""))
    if state in ("", "available", "not_set") or state not in PRESENCE_LABELS:
        return None
    message = " ".join(str(part) for part in (presence.get("subtype"), presence.get("message")) if part)
    return {
        "state": state,
        "label": PRESENCE_LABELS[state],
        "message": message,
        "since": _started(presence),
    }


def call_context(call: CallJSON) -> dict[str, Any]:
    name, number = str(call.get("party_name") or ""), str(call.get("party_number") or "")
    party = f"{name} ({number})" if name and number and name != number else name or number  # "": unknown
    return {
        "direction": "in" if call.get("direction") == "in" else "out",
        "party": party,
        "state": CALL_STATE_LABELS.get(str(call.get("state")), ""),
        "since": _started(call),
    }


def elapsed(since: float) -> dict[str, Any]:
    """A running duration as the templates show it: the start, exact (`<time datetime>`),
    as a clock time (a title) and as whole epoch seconds (`--since`). panel.css shows the
    page's clock minus the start (`.ticking`, m:ss, h:mm:ss from an hour): the page holds
    the one clock (`--now`, one animation from the server's time at page load), so no
    script, no message per second, and a tile is the same bytes whenever it is rendered
    (a whole view cached for an hour, a reconnect caught up from history: still right).
    One animation a page, not one a tile: 300 running tiles cost Chromium 112 % of a
    core with one each, 27 % with the page's clock (python -m bench.page_cpu, docs/benchmarks.md)."""
    return {"at": clock(since), "iso": iso(since), "epoch": int(since)}


def _started(item: Mapping[str, Any], key: str = "since") -> dict[str, Any] | None:
    """`elapsed` from `item[key]`, or None where the start is unknown (0: the PBX did not
    tell it, e.g. a state listed at login): no duration is better than an invented one."""
    value = item.get(key)
    start = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
    return elapsed(start) if start > 0 and math.isfinite(start) else None


def paused_context(extension: ExtensionJSON) -> dict[str, Any] | None:
    """The pause worth showing on a tile: paused in any queue it serves; the reason and
    the start of the earliest pause (Asterisk pauses per queue; an agent on lunch is
    paused in all of them)."""
    paused = [q for q in extension.get("queues") or [] if isinstance(q, Mapping) and q.get("paused")]
    if not paused:
        return None
    starts = [float(q.get("paused_since") or 0) for q in paused if q.get("paused_since")]
    reasons = dict.fromkeys(str(q.get("reason") or "") for q in paused)
    reason = ", ".join(r for r in reasons if r)
    return {"reason": reason, "since": elapsed(min(starts)) if starts else None}


def queue_context(queue: QueueJSON, id_: str) -> dict[str, Any]:
    """A queue's tile: callers waiting, the longest wait, and its members counted by what
    they can do: take a call (free, not paused), on a call, paused, unavailable."""
    counts = {"available": 0, "busy": 0, "paused": 0, "unavailable": 0}
    for member in queue.get("members") or []:
        status = member.get("status")
        if status in ("unavailable", "invalid", "unknown"):
            counts["unavailable"] += 1
        elif member.get("paused"):
            counts["paused"] += 1
        elif member.get("in_call") or status in ("inuse", "busy", "ringinuse", "onhold", "ringing"):
            counts["busy"] += 1
        else:
            counts["available"] += 1
    waiting = len(queue.get("callers") or [])
    longest = queue.get("longest_since")
    return {
        "id": id_,
        "name": str(queue.get("name") or ""),
        "waiting": waiting,
        "longest": elapsed(float(longest)) if waiting and longest else None,
        "counts": counts,
        "completed": int(queue.get("completed") or 0),
        "abandoned": int(queue.get("abandoned") or 0),
        "state": "waiting" if waiting else _queue_state(counts),
    }


def _queue_state(counts: dict[str, int]) -> str:
    """Nobody waiting: open (someone can take a call), full (all on calls), or closed."""
    return "open" if counts["available"] else "full" if counts["busy"] else "closed"


def tile_context(
    extension: ExtensionJSON | None,
    id_: str,
    exten: str,
    inside: Container[str] | None = None,
) -> dict[str, Any]:
    if extension is None:
        return {
            "id": id_,
            "exten": exten,
            "context": "",
            "state": "unknown",
            "label": N_("Not on this PBX"),
            "status": -1,
            "hint": "",
            "since": None,
        }
    state = extension.get("state", "unknown")
    state = state if state in STATE_LABELS else "unknown"
    return {
        "id": id_,
        "exten": extension.get("exten", exten),
        "context": extension.get("context", ""),
        "state": state,
        "label": STATE_LABELS[state],
        "status": extension.get("status", -1),
        "hint": extension.get("hint", ""),
        "since": _started(extension, "changed_at"),
        "name": str(extension.get("name") or ""),
        "groups": [str(g) for g in extension.get("groups") or []],
        "presence": presence_context(extension.get("presence")),
        "calls": [
            call_context(c if inside is None else without_numbers(c, inside))
            for c in extension.get("calls") or []
            if isinstance(c, Mapping)
        ],
        "paused": paused_context(extension),
        "queues": [
            str(q["queue"])
            for q in extension.get("queues") or []
            if isinstance(q, Mapping) and q.get("queue")
        ],
    }


def _one_line(html: str) -> str:
    return " ".join(line.strip() for line in html.splitlines() if line.strip())


def pbx_link(pbx: LinkJSON) -> LinkState:
    """The `pbx` object of a snapshot as what viewers are told. A snapshot of an older
    collector has only `connected` and `since`; `address` and `error` are cleaned again
    (the store is shared, and they end up on every viewer's page)."""
    since = float(pbx.get("since") or 0)
    state = pbx.get("state") or ("up" if pbx.get("connected") else "down")
    if state == "up":
        return LinkState("ok", since)
    if state == "starting":
        return LinkState("pbx-starting", since)
    if state == "connecting":
        address, error = clean_text(pbx.get("address"), 120), clean_text(pbx.get("error"), 120)
        return LinkState("pbx-unreachable" if error else "pbx-connecting", since, address, error)
    return LinkState("pbx-down", since)

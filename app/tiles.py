"""Server-rendered HTML: a tile (plain or out-of-band), the link banner, a whole view as
a stream message, the page and the embed (jinja2).

Everything that reaches a template is escaped by jinja2's autoescape: names and hints
come from the phone network. Tile ids are derived from the extension key and its firm
only, so a tile keeps its id (and its DOM node) for as long as the extension exists, and
an id never tells one firm's viewers about another firm's extensions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from app.queues import QUEUE_RE
from app.schema import CallJSON, ExtensionJSON, LinkJSON, PresenceJSON, QueueJSON, clean_text
from app.scope import without_numbers

TEMPLATES = Path(__file__).parent / "templates"

# What each state looks like: a word for the screen reader and the colour-blind, a
# shape class (the CSS draws it), and the sort of the lamp.
STATE_LABELS: dict[str, str] = {
    "idle": "Free",
    "inuse": "On a call",
    "busy": "Busy",
    "unavailable": "Offline",
    "ringing": "Ringing",
    "inuse_ringing": "On a call, ringing",
    "hold": "On hold",
    "inuse_hold": "On a call, on hold",
    "unknown": "Unknown",
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
    """One jinja2 environment per process; render methods return str, never bytes."""

    def __init__(self, *, demo: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # the render time running durations count from (`elapsed`)
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(demo=demo, STATE_LABELS=STATE_LABELS)
        self._tile = self.env.get_template("tile.html")
        self._link = self.env.get_template("link.html")
        self._group = self.env.get_template("group.html")
        self._whole = self.env.get_template("whole.html")
        self._queue = self.env.get_template("queue.html")

    def tile(
        self,
        extension: ExtensionJSON | None,
        id_: str,
        exten: str,
        *,
        oob: bool,
        inside: Container[str] | None = None,
        now: float | None = None,
    ) -> str:
        """A tile as one line of HTML (an SSE data line needs no splitting then).
        `extension` None: an extension the PBX does not know (shown as unknown).
        `inside` given: outside callers' numbers hidden (the numbers in it are colleagues').
        `now`: the render time a pause's running duration starts from (see `elapsed`)."""
        tile = tile_context(extension, id_, exten, inside, self.clock() if now is None else now)
        return _one_line(self._tile.render(tile=tile, oob=oob))

    def queue(self, queue: QueueJSON, id_: str, *, oob: bool, now: float | None = None) -> str:
        """A queue's tile as one line: counts only, no member or caller named (the same
        bytes for every scope that sees the queue at all)."""
        context = queue_context(queue, id_, self.clock() if now is None else now)
        return _one_line(self._queue.render(queue=context, oob=oob))

    def group(self, name: str, tiles_html: str) -> str:
        """A group's header and its tiles (tiles_html is ours, already escaped)."""
        return _one_line(self._group.render(name=name, tiles=Markup(tiles_html)))  # noqa: S704

    def whole(self, link_html: str, tiles_html: str) -> str:
        """A viewer's whole view as one stream message (both parts ours, already escaped)."""
        return _one_line(self._whole.render(link=Markup(link_html), tiles=Markup(tiles_html)))  # noqa: S704

    def link(self, link: LinkState, *, oob: bool) -> str:
        context = {
            "state": link.state,
            "since": clock(link.since) if link.since else "",
            "address": link.address,
            "error": link.error,
        }
        return _one_line(self._link.render(link=context, oob=oob))

    def page(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)


PRESENCE_LABELS: dict[str, str] = {
    "available": "Available",
    "away": "Away",
    "xa": "Away for long",
    "chat": "Chat",
    "dnd": "Do not disturb",
    "unavailable": "Unavailable",
    "not_set": "",
}
CALL_STATE_LABELS: dict[str, str] = {"ringing": "ringing", "dialing": "calling", "up": "", "hold": "on hold"}


def presence_context(presence: PresenceJSON | None) -> dict[str, str] | None:
    """Presence worth showing: not the default (available / not set)."""
    if not isinstance(presence, Mapping):
        return None
    state = str(presence.get("state", ""))
    if state in ("", "available", "not_set") or state not in PRESENCE_LABELS:
        return None
    message = " ".join(str(part) for part in (presence.get("subtype"), presence.get("message")) if part)
    return {"state": state, "label": PRESENCE_LABELS[state], "message": message}


def call_context(call: CallJSON) -> dict[str, str]:
    name, number = str(call.get("party_name") or ""), str(call.get("party_number") or "")
    party = f"{name} ({number})" if name and number and name != number else name or number or "unknown"
    since = float(call.get("since") or 0)
    return {
        "direction": "in" if call.get("direction") == "in" else "out",
        "party": party,
        "state": CALL_STATE_LABELS.get(str(call.get("state")), ""),
        "since": clock(since) if since else "",
        "since_iso": iso(since) if since else "",
    }


def elapsed(since: float, now: float) -> dict[str, Any]:
    """A running duration as the templates show it: the start (exact, `<time>`) and the
    whole seconds gone at render time, which panel.css counts on from the moment the
    element enters the page (`.ticking`, an animated `@property` integer): no script and
    no message per second. CSS cannot read the clock, so the count is off by the age of
    the HTML when it is swapped in: milliseconds for a live change; for a page or whole
    view the hub re-renders ticking tiles every HEARTBEAT (5 s), so at most that."""
    return {"at": clock(since), "iso": iso(since), "seconds": max(0, int(now - since))}


def paused_context(extension: ExtensionJSON, now: float) -> dict[str, Any] | None:
    """The pause worth showing on a tile: paused in any queue it serves; the reason and
    the start of the earliest pause (Asterisk pauses per queue; an agent on lunch is
    paused in all of them)."""
    paused = [q for q in extension.get("queues") or [] if isinstance(q, Mapping) and q.get("paused")]
    if not paused:
        return None
    starts = [float(q.get("paused_since") or 0) for q in paused if q.get("paused_since")]
    reasons = dict.fromkeys(str(q.get("reason") or "") for q in paused)
    reason = ", ".join(r for r in reasons if r)
    return {"reason": reason, "since": elapsed(min(starts), now) if starts else None}


def queue_context(queue: QueueJSON, id_: str, now: float) -> dict[str, Any]:
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
        "longest": elapsed(float(longest), now) if waiting and longest else None,
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
    now: float = 0.0,
) -> dict[str, Any]:
    if extension is None:
        return {
            "id": id_,
            "exten": exten,
            "context": "",
            "state": "unknown",
            "label": "Not on this PBX",
            "status": -1,
            "hint": "",
            "since": "",
            "since_iso": "",
        }
    state = extension.get("state", "unknown")
    state = state if state in STATE_LABELS else "unknown"
    changed_at = float(extension.get("changed_at") or 0)
    return {
        "id": id_,
        "exten": extension.get("exten", exten),
        "context": extension.get("context", ""),
        "state": state,
        "label": STATE_LABELS[state],
        "status": extension.get("status", -1),
        "hint": extension.get("hint", ""),
        "since": clock(changed_at) if changed_at else "",
        "since_iso": iso(changed_at) if changed_at else "",
        "name": str(extension.get("name") or ""),
        "groups": [str(g) for g in extension.get("groups") or []],
        "presence": presence_context(extension.get("presence")),
        "calls": [
            call_context(c if inside is None else without_numbers(c, inside))
            for c in extension.get("calls") or []
            if isinstance(c, Mapping)
        ],
        "paused": paused_context(extension, now),
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

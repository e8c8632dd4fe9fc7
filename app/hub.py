"""One watcher per process: follow the store, diff snapshots, render each changed tile
once, and keep a short chain of updates that every viewer walks at its own pace.

The hot path must stay per change, not per viewer: viewers only join bytes the hub
already rendered, and a message for a given view is built once per update and cached.
Viewers wake through a per-update `asyncio.Event` (never a shared future: cancelling one
viewer's wait would cancel it for all). The wire format is not the hub's: messages are
encoded by the `encode` it is given (app.sse). A view carries the viewer's Scope: nothing
outside it is ever put in its messages, and what is cached lives only while a viewer of
that view is connected (views come from URLs: they must not grow memory).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable

from app import following
from app.directory import group_slug
from app.i18n import N_
from app.look import Look
from app.metrics import Metrics
from app.schema import ChangesJSON, ExtensionJSON, QueueJSON, SnapshotJSON, extension_order
from app.scope import ALL as EVERYTHING
from app.scope import Scope
from app.sections import sections
from app.store import SnapshotStore
from app.tiles import LinkState, Renderer, pbx_link, queue_tile_id, tile_id, tile_ids
from app.updates import Update, whole_again
from app.view import View, serves

log = logging.getLogger(__name__)

HISTORY = 512  # updates kept (their tiles, not messages) for viewers that reconnect
MAX_WHOLES = 64  # whole views kept for views nobody streams (a page load, a test)
QUEUES = N_("Queues")  # the heading of the queue tiles' section (translated by the renderer)
PINNED = N_("Pinned")  # the heading of the viewer's pinned colleagues
OTHERS = N_("Colleagues")  # the heading of the others, below the pinned, where there are no groups


class Hub:
    """Follows the store and keeps the rendered picture every viewer draws from."""

    def __init__(
        self,
        store: SnapshotStore,
        renderer: Renderer,
        encode: Callable[[int, str], bytes],
        *,
        poll_interval: float = 0.01,
        heartbeat: float = 5.0,
        check_collector: bool = False,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        look: Look | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.renderer = renderer
        self.encode = encode  # (version, html) -> one message as the stream sends it
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.check_collector = check_collector
        self.clock = clock
        self.extensions: dict[str, ExtensionJSON] = {}
        self.ids: dict[str, str] = {}
        self.by_exten: dict[str, list[str]] = {}  # exten -> keys (one a context), display order
        self.slugs: dict[str, frozenset[str]] = {}  # key -> its groups' slugs
        # key -> look -> tile HTML for whole views (not out-of-band), rendered when first
        # needed: a change renders the out-of-band form at once, this one if a page asks.
        self.tiles: dict[str, dict[Look, str]] = {}
        self.queues: dict[str, QueueJSON] = {}  # checked name -> queue, by name
        # (name, language) -> (rendered at, tile), for whole views
        self.queue_html: dict[tuple[str, str], str] = {}
        # Tiles of a change are rendered in every look a viewer streams now, and in this one
        # (the page's language with nothing more) so that a page's first stream finds them.
        self.look = look or Look()
        self._looks: collections.Counter[Look] = collections.Counter()
        self.version = 0
        self.pbx = LinkState("pbx-down", clock())
        self.store_ok = True
        self.store_down_since = 0.0
        self.collector_ok = True
        self.link_html: dict[str, str] = {}  # language -> the banner, out-of-band
        self.head = Update(0, 0, {}, True, True)
        self.history: collections.deque[Update] = collections.deque([self.head], maxlen=HISTORY)
        self.ready = asyncio.Event()  # set once the first snapshot (or store error) is in
        self._views: dict[View, View] = {}  # the views streamed now, one object each
        self._viewers: collections.Counter[View] = collections.Counter()  # their viewers
        self._wholes: dict[View, bytes] = {}  # whole views as messages, for `_wholes_at`
        self._wholes_at: Update | None = None
        self._render_link()

    # --- what viewers ask for ---

    @property
    def link(self) -> LinkState:
        if not self.store_ok:
            return LinkState("store-down", self.store_down_since)
        if not self.collector_ok:
            return LinkState("no-collector", self.clock())
        return self.pbx

    def join(self, view: View) -> View:
        """A viewer starts streaming `view`: the one object of that view (finding its
        message for each viewer is then an identity check), counted until `leave`."""
        view = self._views.setdefault(view, view)
        self._viewers[view] += 1
        self._looks[view.look] += 1
        if view.lang not in self.link_html:
            self.link_html[view.lang] = self.renderer.link(self.link, oob=True, lang=view.lang)
        return view

    def leave(self, view: View) -> None:
        """A viewer of `view` left; with the last one, what was cached for it goes."""
        self._viewers[view] -= 1
        self._looks[view.look] -= 1
        if self._looks[view.look] <= 0:
            del self._looks[view.look]
        if self._viewers[view] <= 0:
            del self._viewers[view]
            self._views.pop(view, None)
            self._wholes.pop(view, None)
            self.head.messages.pop(view, None)

    @property
    def views(self) -> int:
        """Distinct views streamed now (what the message caches are bounded by)."""
        return len(self._views)

    def keys_for(self, view: View) -> list[tuple[str | None, str]]:
        """(key, exten) pairs of a view, in display order; key None: not on this PBX (shown
        as such only to those who see everything: to a scope, unknown and outside the
        scope must look the same, so both are left out)."""
        if view.extens is None:
            return [(key, self.extensions[key]["exten"]) for key in self.ids if self._holds(view, key)]
        pairs: list[tuple[str | None, str]] = []
        for exten in view.extens:
            keys = self.by_exten.get(exten)
            if keys is None:
                if view.scope.everything:
                    pairs.append((None, exten))
                continue
            held = next((key for key in keys if self._holds_scope(view.scope, key)), None)
            if held is not None:
                pairs.append((held, exten))
        return pairs

    def groups(self, scope: Scope = EVERYTHING) -> list[str]:
        """Every group named in the snapshot (of the extensions `scope` holds), sorted."""
        held = (ext for key, ext in self.extensions.items() if self._holds_scope(scope, key))
        names = {g for ext in held for g in ext["groups"]}
        return sorted(names, key=str.casefold)

    def queues_for(self, view: View) -> list[str]:
        """The queues whose tiles `view` shows. A scope sees a queue when one of its members
        is an extension the scope holds (a supervisor sees the queues their people serve);
        a queue with no member in scope only to those who see everything (it may belong to
        anyone). Never a name of a member outside the scope: queue tiles only count."""
        if not view.shows_queues():
            return []
        names = [view.queue] if view.queue else list(self.queues)
        return [name for name in names if name in self.queues and self._queue_held(view.scope, name)]

    def _queue_held(self, scope: Scope, name: str) -> bool:
        if scope.everything:
            return True
        queue = self.queues[name]
        if scope.firms is not None and queue.get("tenant", "") not in scope.firms:
            return False
        return any(
            (key := m.get("extension")) in self.extensions and self._holds_scope(scope, key)
            for m in queue.get("members") or ()
        )

    def _queue_tile(self, name: str, lang: str) -> str:
        """A queue's tile for a whole view, rendered once per change and language (a
        running wait is counted by the page's clock: the bytes do not age)."""
        tile = self.queue_html.get((name, lang))
        if tile is None:
            tile = self.queue_html[(name, lang)] = self._render_queue(name, lang, oob=False)
        return tile

    def _render_queue(self, name: str, lang: str, *, oob: bool) -> str:
        return self.renderer.queue(self.queues[name], f"queue-{name}", oob=oob, lang=lang)

    def _holds(self, view: View, key: str) -> bool:
        return view.holds(self.extensions[key], self.slugs[key])

    def _holds_scope(self, scope: Scope, key: str) -> bool:
        return scope.everything or scope.holds(self.extensions[key], self.slugs[key])

    def find(self, exten: str, scope: Scope) -> ExtensionJSON | None:
        """Extension `exten` as `scope` sees it: None when it is not there or out of scope
        (the two look the same to the asker)."""
        for key in self.by_exten.get(exten, ()):
            if self._holds_scope(scope, key):
                return self.extensions[key]
        return None

    def whole_view(self, view: View) -> str:
        """Every tile of a view, for the page itself (not out-of-band): the viewer's pinned
        colleagues first, then the rest. The full panel is sectioned by group: an extension
        under its first group only (a tile id is unique on the page), and a group whose
        people all stand under another one gets a section that points to them. A group's
        own view is headed by that group's name. A wall view is not sectioned: its tiles are
        one grid that wall.css sizes by their number (headings cost rows a 1080p screen
        lacks at 300); an ext list (an embed) neither."""
        queues = " ".join(self._queue_tile(name, view.lang) for name in self.queues_for(view))
        if view.wallboard:
            return queues
        look, pairs = view.look, self.keys_for(view)
        pinned = [] if view.listed else self._pinned(view, pairs)
        first = [self._tile(key, self.extensions[key]["exten"], look) for key in pinned]
        rest = [(key, exten) for key, exten in pairs if key not in pinned]
        grouped = any(key and self.extensions[key]["groups"] for key, _ in rest)
        if view.listed or view.wall or not (grouped or first):
            return " ".join(
                filter(None, [queues, *first, *(self._tile(key, exten, look) for key, exten in rest)])
            )

        def section(name: str, tiles: str, people: list[tuple[str, ExtensionJSON]] | None = None) -> str:
            return self.renderer.group(name, tiles, elsewhere=people or (), lang=view.lang)

        def heading(words: str) -> str:
            return self.renderer.gettext(view.lang, words)

        parts = [section(heading(QUEUES), queues)] if queues else []
        if first:
            parts.append(section(heading(PINNED), " ".join(first)))
        if not grouped:
            return " ".join(
                [*parts, section(heading(OTHERS), " ".join(self._tile(k, e, look) for k, e in rest))]
            )
        for group in sections(
            (key for key, _ in rest if key), lambda key: self.extensions[key]["groups"], view.group
        ):
            tiles = " ".join(self._tile(key, self.extensions[key]["exten"], look) for key in group.keys)
            parts.append(
                section(group.name, tiles, [(self.ids[key], self.extensions[key]) for key in group.elsewhere])
            )
        return " ".join(parts)

    def _pinned(self, view: View, pairs: list[tuple[str | None, str]]) -> list[str]:
        """The keys of the viewer's pinned colleagues that the view holds, in pin order."""
        held = {exten: key for key, exten in pairs if key is not None}
        return [held[exten] for exten in view.pins if exten in held]

    def first_message(self, view: View, since: int | None) -> tuple[bytes, Update]:
        """The first message of a stream: what changed since `since` when the history
        still holds it, else the whole view. Built once per view and resume point while
        the head stays (3,000 reconnects cost 3x as many whole-view connects when each
        reconnect built its own catch-up)."""
        head = self.head
        if since is not None and self.history[0].after <= since <= head.version:
            cached = head.messages.get(view, {}).get(since)
            if cached is not None:
                return cached, head
            chain = [u for u in self.history if u.version > since]
            if any(whole_again(view, u) for u in chain):
                data = self._whole_message(view)
            else:
                data = self.encode(head.version, self._changes(view, chain, link=True))
            head.messages.setdefault(view, {})[since] = data
            return data, head
        return self._whole_message(view), head

    def _whole_message(self, view: View) -> bytes:
        """A view whole, as a message: built once per view while the head stays, so that
        a thousand viewers connecting at once (a restart, a proxy reload) cost one build
        and share one copy of it (75 KB for 300 tiles), not one each."""
        if self._wholes_at is not self.head:
            self._wholes, self._wholes_at = {}, self.head
        data = self._wholes.get(view)
        if data is None:
            data = self.encode(self.head.version, self._full(view))
            if view in self._viewers or len(self._wholes) < MAX_WHOLES:  # bounded: see `leave`
                self._wholes[view] = data
        return data

    def message(self, view: View, chain: list[Update]) -> bytes | None:
        """The message that brings a viewer from before `chain` to its end; built once
        for all viewers of a view that start from the same update (all of them, when
        they keep up; most of them, when a busy loop lets them fall behind together)."""
        last, start = chain[-1], chain[0]
        cached = last.messages.get(view, {}).get(start)
        if cached is not None:
            return cached
        if any(whole_again(view, u) for u in chain):
            html = self._full(view)
        else:
            html = self._changes(view, chain, link=any(u.link or u.heartbeat for u in chain))
        data = self.encode(last.version, html) if html else None
        if data is not None:
            last.messages.setdefault(view, {})[start] = data
        return data

    # --- following the store (app/following.py reads it) ---

    async def run(self) -> None:
        await following.run(self)

    def store_failed(self, error: Exception) -> None:
        self.metrics.store_errors.labels("hub").inc()
        if self.store_ok:
            log.error("store unreachable (%s); viewers see the states greyed", error)
            self.store_ok = False
            self.store_down_since = self.clock()
            self.publish(self.version, link=True)
        self.ready.set()

    def close(self) -> None:
        """End every stream at once (the server is stopping): a closing update ends the
        chain, and a stream that reaches it ends its response."""
        if self.head.closing:
            return
        update = Update(self.version, self.head.version, {}, False, False, closing=True)
        previous, self.head = self.head, update
        previous.link_to(update)

    def take(self, snapshot: SnapshotJSON | ChangesJSON, *, resync: bool, partial: bool = False) -> None:
        """Take a snapshot, or with `partial` the `changes` key: the extensions it holds
        replace ours, the others stay as they are."""
        incoming = snapshot["extensions"]
        extensions = {**self.extensions, **incoming} if partial else incoming
        full = resync or extensions.keys() != self.extensions.keys()
        if full:
            self.ids = tile_ids(extensions, {key: ext.get("tenant", "") for key, ext in extensions.items()})
            self.ids = dict(sorted(self.ids.items(), key=lambda kv: extension_order(extensions[kv[0]])))
            self.by_exten = {}
            for key in self.ids:
                self.by_exten.setdefault(extensions[key]["exten"], []).append(key)
            self.tiles = {}
        if full:
            changed = list(extensions)
        else:
            changed = [key for key, ext in incoming.items() if self.extensions.get(key) != ext]
        # Groups shape the sections of the panel: regroup everyone. A new name only moves
        # tiles in and out of searches: those viewers get their view again (`_whole_again`).
        full = full or any(_groups(self.extensions.get(key)) != _groups(extensions[key]) for key in changed)
        renamed = any(_name(self.extensions.get(key)) != _name(extensions[key]) for key in changed)
        moved = any(serves(self.extensions.get(key)) != serves(extensions[key]) for key in changed)
        states = {
            key: extensions[key]["state"]
            for key in changed
            if key in self.extensions and _announced(self.extensions[key]) != _announced(extensions[key])
        }
        self.extensions = extensions
        for key in changed:
            self.tiles.pop(key, None)
            self.slugs[key] = frozenset(group_slug(g) for g in extensions[key]["groups"])
        if full:
            self.slugs = {key: self.slugs[key] for key in extensions}
        rendered = self._render_changes(changed)
        queues_changed, queues_full = self._take_queues(snapshot.get("queues"), partial=partial)
        full = full or queues_full
        queue_tiles = {
            lang: {name: self._render_queue(name, lang, oob=True) for name in queues_changed}
            for lang in self._langs()
        }
        state = pbx_link(snapshot["pbx"])
        link_changed = state != self.pbx
        self.pbx = state
        if changed or queues_changed or link_changed or full:
            version = int(snapshot["version"])
            self.publish(version, rendered, full=full, link=link_changed, renamed=renamed)
            self.head.changed, self.head.states = tuple(changed), states
            self.head.queue_tiles, self.head.moved = queue_tiles, moved
            if (changed or queues_changed) and not resync and snapshot.get("updated_at"):
                # From the collector's publication to the bytes ready for every viewer: the
                # store's round trip, the poll and the render (clocks of one host, or NTP).
                self.metrics.change_latency.observe(max(0.0, self.clock() - float(snapshot["updated_at"])))

    def _take_queues(self, incoming: dict[str, QueueJSON] | None, *, partial: bool) -> tuple[list[str], bool]:
        """Follow the snapshot's `queues` as `_take` follows extensions: the names changed,
        and whether the set of queues changed (views are sent whole then). Only checked
        names become ids (`queue_tile_id`); an older snapshot without queues has none."""
        queues = {**self.queues, **(incoming or {})} if partial else dict(incoming or {})
        queues = {
            name: q for name, q in sorted(queues.items()) if queue_tile_id(name) and isinstance(q, dict)
        }
        full = queues.keys() != self.queues.keys()
        changed = [name for name, queue in queues.items() if full or self.queues.get(name) != queue]
        self.queues = queues
        self.queue_html = {key: tile for key, tile in self.queue_html.items() if key[0] not in changed}
        return changed, full

    def publish(
        self,
        version: int,
        tiles: dict[Look, dict[str, str]] | None = None,
        *,
        full: bool = False,
        link: bool = False,
        heartbeat: bool = False,
        renamed: bool = False,
    ) -> None:
        if link or heartbeat:
            self._render_link()
        tiles = tiles or {}
        update = Update(max(version, self.version), self.head.version, tiles, full, link, heartbeat, renamed)
        self.version = update.version
        previous, self.head = self.head, update
        self.history.append(update)
        previous.link_to(update)
        previous.messages = {}  # viewers catch up to the head: these are never read again
        self._wholes, self._wholes_at = {}, update  # nor whole views built for an older head

    # --- rendering and encoding ---

    def _langs(self) -> set[str]:
        return {self.look.lang} | {look.lang for look in self._looks}

    def _render_changes(self, keys: list[str]) -> dict[Look, dict[str, str]]:
        """The changed tiles in every look in use; a tile without a call is the same with
        numbers shown or hidden (rendered once for both)."""
        rendered: dict[Look, dict[str, str]] = {}
        for look in sorted({self.look, *self._looks}, key=lambda look: not look.numbers):
            shown = rendered.get(look.with_numbers, {})
            rendered[look] = {
                key: shown[key]
                if key in shown and not self.extensions[key].get("calls")
                else self._render_tile(key, look, oob=True)
                for key in keys
            }
        return rendered

    def _render_tile(self, key: str, look: Look, *, oob: bool) -> str:
        extension = self.extensions[key]
        inside = None if look.numbers else self.by_exten  # a colleague's number is no outside number
        return self.renderer.tile(
            extension, self.ids[key], extension["exten"], oob=oob, inside=inside, look=look
        )

    def _render_link(self) -> None:
        self.link_html = {lang: self.renderer.link(self.link, oob=True, lang=lang) for lang in self._langs()}

    def _tile(self, key: str | None, exten: str, look: Look) -> str:
        if key is None:
            return self.renderer.tile(None, tile_id(exten, ""), exten, oob=False, look=look)
        if not self.extensions[key].get("calls"):
            look = look.with_numbers  # nothing to hide: one form
        forms = self.tiles.setdefault(key, {})
        tile = forms.get(look)
        if tile is None:
            tile = forms[look] = self._render_tile(key, look, oob=False)
        return tile

    def _full(self, view: View) -> str:
        return self.renderer.whole(self.link_html.get(view.lang, ""), self.whole_view(view))

    def _changes(self, view: View, chain: Iterable[Update], *, link: bool) -> str:
        merged: dict[str, str] = {}
        queue_tiles: dict[str, str] = {}
        states: dict[str, str] = {}
        for update in chain:
            merged.update(update.tiles.get(view.look, {}))
            queue_tiles.update(update.queue_tiles.get(view.lang, {}))
            states.update(update.states)
        if view.extens is not None:
            wanted = {key for key, _ in self.keys_for(view)}
            keys: Iterable[str] = [key for key in merged if key in wanted]
        else:
            keys = [key for key in merged if key in self.extensions and self._holds(view, key)]
        parts = [queue_tiles[name] for name in self.queues_for(view) if name in queue_tiles]
        parts += [merged[key] for key in keys]
        if view.pins and states:
            pinned = [
                self.extensions[key]
                for key in keys
                if key in states and self.extensions[key]["exten"] in view.pins
            ]
            if pinned:
                parts.append(self.renderer.announce(pinned, view.lang))
        if link:
            parts.insert(
                0, self.link_html.get(view.lang) or self.renderer.link(self.link, oob=True, lang=view.lang)
            )
        return " ".join(parts)


def _groups(extension: ExtensionJSON | None) -> tuple[str, ...] | None:
    return None if extension is None else tuple(extension["groups"])


def _name(extension: ExtensionJSON | None) -> str | None:
    return None if extension is None else extension["name"]


def _announced(extension: ExtensionJSON) -> tuple[str, str]:
    """What a pinned colleague's announcement says: the state word and the presence."""
    presence = extension.get("presence") or {}
    return extension.get("state", ""), str(presence.get("state", "")) if isinstance(presence, dict) else ""

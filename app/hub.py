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
from typing import cast

from app.directory import group_slug
from app.metrics import Metrics
from app.schema import ChangesJSON, ExtensionJSON, QueueJSON, SnapshotJSON, extension_order
from app.scope import ALL as EVERYTHING
from app.scope import Scope
from app.store import SnapshotStore, StoreError
from app.tiles import LinkState, Renderer, pbx_link, queue_tile_id, tile_id, tile_ids
from app.updates import Update, whole_again
from app.view import View, serves

log = logging.getLogger(__name__)

HISTORY = 512  # updates kept (their tiles, not messages) for viewers that reconnect
STORE_RETRY = 1.0
MAX_WHOLES = 64  # whole views kept for views nobody streams (a page load, a test)
TICK = 1.0  # seconds a queue tile with a running wait is reused in whole views (the count's error)


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
        # (key, numbers shown) -> tile HTML for whole views (not out-of-band), rendered when
        # first needed: a change renders the out-of-band form at once, this one if a page asks.
        self.tiles: dict[tuple[str, bool], str] = {}
        self.queues: dict[str, QueueJSON] = {}  # checked name -> queue, by name
        self.queue_html: dict[str, tuple[float, str]] = {}  # name -> (rendered at, tile), whole views
        self.version = 0
        self.pbx = LinkState("pbx-down", clock())
        self.store_ok = True
        self.store_down_since = 0.0
        self.collector_ok = True
        self.link_html = ""
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
        return view

    def leave(self, view: View) -> None:
        """A viewer of `view` left; with the last one, what was cached for it goes."""
        self._viewers[view] -= 1
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

    def _queue_tile(self, name: str) -> str:
        """A queue's tile for a whole view; one with callers waiting at most TICK old, so a
        page loaded now counts the wait on from within a second (one render a second at
        most, however many pages load)."""
        now = self.clock()
        rendered_at, tile = self.queue_html.get(name, (0.0, ""))
        if not tile or (now - rendered_at > TICK and self.queues[name].get("callers")):
            tile = self._render_queue(name, oob=False)
            self.queue_html[name] = (now, tile)
        return tile

    def _render_queue(self, name: str, *, oob: bool) -> str:
        return self.renderer.queue(self.queues[name], f"queue-{name}", oob=oob)

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
        """Every tile of a view, for the page itself (not out-of-band). The full panel
        is sectioned by group (an extension under its first group only: a tile id is
        unique on the page)."""
        queues = " ".join(self._queue_tile(name) for name in self.queues_for(view))
        if view.wallboard:
            return queues
        pairs = self.keys_for(view)
        numbers = view.scope.show_numbers
        if view.listed or not any(key and self.extensions[key]["groups"] for key, _ in pairs):
            return " ".join(
                filter(None, [queues, *(self._tile(key, exten, numbers) for key, exten in pairs)])
            )
        sections: dict[str, list[str]] = {}
        for key, exten in pairs:
            groups = self.extensions[key]["groups"] if key else None
            sections.setdefault(groups[0] if groups else "", []).append(self._tile(key, exten, numbers))
        ordered = sorted(sections, key=lambda g: (g == "", g.casefold()))
        parts = [self.renderer.group("Queues", queues)] if queues else []
        return " ".join(parts + [self.renderer.group(name, " ".join(sections[name])) for name in ordered])

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

    # --- following the store ---

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow(), name="hub-follow")
            group.create_task(self._beat(), name="hub-heartbeat")
            if self.check_collector:
                group.create_task(self._watch_collector(), name="hub-collector-check")

    async def _follow(self) -> None:
        known: int | None = None
        first = True
        while True:
            try:
                if not first:
                    await self.store.wait_for_version(known, self.poll_interval)
                first = False
                snapshot, partial = await self._read_since(known if self.store_ok else None)
            except StoreError as error:
                self._store_failed(error)
                await asyncio.sleep(STORE_RETRY)
                first = True
                continue
            recovered = not self.store_ok
            self.store_ok = True
            if snapshot is None:  # nothing published yet (or memcached lost it)
                known = None
                if recovered:
                    self._publish(self.version, {}, full=True, link=True)
            else:
                known = snapshot["version"]
                self._take(snapshot, resync=recovered, partial=partial)
            self.ready.set()

    async def _read_since(self, known: int | None) -> tuple[SnapshotJSON | ChangesJSON | None, bool]:
        """What is new since `known`: the small `changes` key when it covers everything
        since then (True), else the whole snapshot (False), whose JSON costs about 1 ms
        per 300 extensions to decode: too much to read on every change."""
        if known is not None:
            changes = await self.store.read_changes()
            if (
                changes is not None
                and int(changes.get("version", 0)) > known
                and int(changes.get("since", known + 1)) <= known
                and int(changes.get("whole_at", known + 1)) <= known
            ):
                return cast(ChangesJSON, changes), True
        return cast(SnapshotJSON | None, await self.store.read_snapshot()), False

    def _store_failed(self, error: Exception) -> None:
        self.metrics.store_errors.labels("hub").inc()
        if self.store_ok:
            log.error("store unreachable (%s); viewers see the states greyed", error)
            self.store_ok = False
            self.store_down_since = self.clock()
            self._publish(self.version, {}, full=False, link=True)
        self.ready.set()

    def close(self) -> None:
        """End every stream at once (the server is stopping): a closing update ends the
        chain, and a stream that reaches it ends its response."""
        if self.head.closing:
            return
        update = Update(self.version, self.head.version, {}, False, False, closing=True)
        previous, self.head = self.head, update
        previous.link_to(update)

    async def _beat(self) -> None:
        """Re-send the link banner now and then: it keeps proxies from cutting idle
        streams and restarts the page's CSS watchdog (a veil after silence)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            self._refresh_ticking()
            self._publish(self.version, {}, full=False, link=False, heartbeat=True)

    def _refresh_ticking(self) -> None:
        """Forget the whole-view form of extension tiles whose pause duration advances:
        it holds the seconds gone at render time, so a page loaded later would count on
        from a stale figure; re-rendered when next asked, at most once a heartbeat."""
        for key, extension in self.extensions.items():
            if any(q.get("paused") for q in extension.get("queues") or ()):
                self.tiles.pop((key, True), None)
                self.tiles.pop((key, False), None)

    async def _watch_collector(self) -> None:
        """With a shared store, someone must hold the collector lease; if nobody does, the
        states stop moving and viewers must be told."""
        while True:
            await asyncio.sleep(max(self.heartbeat / 2, 0.5))
            try:
                holder = await self.store.lease.holder()
            except StoreError:
                continue  # _follow reports the store itself
            if (holder is not None) != self.collector_ok:
                self.collector_ok = holder is not None
                log.log(
                    logging.INFO if self.collector_ok else logging.ERROR,
                    "collector %s",
                    "running again" if self.collector_ok else "not running",
                )
                self._publish(self.version, {}, full=False, link=True)

    def _take(self, snapshot: SnapshotJSON | ChangesJSON, *, resync: bool, partial: bool = False) -> None:
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
        self.extensions = extensions
        for key in changed:
            self.tiles.pop((key, True), None)
            self.tiles.pop((key, False), None)
            self.slugs[key] = frozenset(group_slug(g) for g in extensions[key]["groups"])
        if full:
            self.slugs = {key: self.slugs[key] for key in extensions}
        rendered = {key: self._render_tile(key, oob=True) for key in changed}
        hidden = {
            key: self._render_tile(key, oob=True, numbers=False) if extensions[key].get("calls") else tile
            for key, tile in rendered.items()
        }
        queues_changed, queues_full = self._take_queues(snapshot.get("queues"), partial=partial)
        full = full or queues_full
        queue_tiles = {name: self._render_queue(name, oob=True) for name in queues_changed}
        state = pbx_link(snapshot["pbx"])
        link_changed = state != self.pbx
        self.pbx = state
        if changed or queues_changed or link_changed or full:
            version = int(snapshot["version"])
            self._publish(version, rendered, full=full, link=link_changed, renamed=renamed, hidden=hidden)
            self.head.queue_tiles, self.head.moved = queue_tiles, moved
            if (changed or queues_changed) and not resync and snapshot.get("updated_at"):
                # From the collector's publication to the bytes ready for every viewer: the
                # store's round trip, the poll and the render (clocks of one host, or NTP).
                self.metrics.change_latency.observe(max(0.0, self.clock() - float(snapshot["updated_at"])))

    def _take_queues(self, incoming: dict[str, QueueJSON] | None, *, partial: bool) -> tuple[list[str], bool]:
        """Follow the snapshot's `queues` as `_take` follows extensions: the names changed,
        and whether the set of queues changed (views are sent whole then). Only checked
        names become ids (`queue_tile_id`); an older snapshot without queues has none."""
        if partial:
            queues = {**self.queues, **(incoming or {})}
        else:
            queues = dict(incoming or {})
        queues = {
            name: q for name, q in sorted(queues.items()) if queue_tile_id(name) and isinstance(q, dict)
        }
        full = queues.keys() != self.queues.keys()
        changed = [name for name, queue in queues.items() if full or self.queues.get(name) != queue]
        self.queues = queues
        for name in changed:
            self.queue_html.pop(name, None)
        if full:
            self.queue_html = {}
        return changed, full

    def _publish(
        self,
        version: int,
        tiles: dict[str, str],
        *,
        full: bool,
        link: bool,
        heartbeat: bool = False,
        renamed: bool = False,
        hidden: dict[str, str] | None = None,
    ) -> None:
        if link or heartbeat:
            self._render_link()
        update = Update(max(version, self.version), self.head.version, tiles, full, link, heartbeat, renamed)
        update.hidden = tiles if hidden is None else hidden
        self.version = update.version
        previous, self.head = self.head, update
        self.history.append(update)
        previous.link_to(update)
        previous.messages = {}  # viewers catch up to the head: these are never read again
        self._wholes, self._wholes_at = {}, update  # nor whole views built for an older head

    # --- rendering and encoding ---

    def _render_tile(self, key: str, *, oob: bool, numbers: bool = True) -> str:
        extension = self.extensions[key]
        inside = None if numbers else self.by_exten  # a colleague's number is no outside number
        return self.renderer.tile(extension, self.ids[key], extension["exten"], oob=oob, inside=inside)

    def _render_link(self) -> None:
        self.link_html = self.renderer.link(self.link, oob=True)

    def _tile(self, key: str | None, exten: str, numbers: bool = True) -> str:
        if key is None:
            return self.renderer.tile(None, tile_id(exten, ""), exten, oob=False)
        numbers = numbers or not self.extensions[key].get("calls")  # nothing to hide: one form
        tile = self.tiles.get((key, numbers))
        if tile is None:
            tile = self.tiles[(key, numbers)] = self._render_tile(key, oob=False, numbers=numbers)
        return tile

    def _full(self, view: View) -> str:
        return self.renderer.whole(self.link_html, self.whole_view(view))

    def _changes(self, view: View, chain: Iterable[Update], *, link: bool) -> str:
        merged: dict[str, str] = {}
        numbers = view.scope.show_numbers
        queue_tiles: dict[str, str] = {}
        for update in chain:
            merged.update(update.tiles if numbers else update.hidden)
            queue_tiles.update(update.queue_tiles)
        if view.extens is not None:
            wanted = {key for key, _ in self.keys_for(view)}
            keys: Iterable[str] = [key for key in merged if key in wanted]
        else:
            keys = [key for key in merged if key in self.extensions and self._holds(view, key)]
        parts = [queue_tiles[name] for name in self.queues_for(view) if name in queue_tiles]
        parts += [merged[key] for key in keys]
        if link:
            parts.insert(0, self.link_html)
        return " ".join(parts)


def _groups(extension: ExtensionJSON | None) -> tuple[str, ...] | None:
    return None if extension is None else tuple(extension["groups"])


def _name(extension: ExtensionJSON | None) -> str | None:
    return None if extension is None else extension["name"]

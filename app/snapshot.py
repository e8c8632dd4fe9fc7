"""The picture of the PBX the collector keeps in memory, and its JSON form.

Pure: no I/O. Each change marks an extension dirty; `publication()` turns the dirty
set into one `Publication` (one version). An extension's JSON is encoded once per
change and reused in every later snapshot, so a batch costs a join, not a re-encode.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from app.queues import QueueBook
from app.schema import CallJSON, ExtensionJSON, ExtensionQueueJSON, LinkJSON, LinkStateName, QueueJSON
from app.states import (
    UNKNOWN_START,
    ExtensionState,
    HintIndex,
    Presence,
    state_name,
    status_from_devices,
)
from app.store import Publication

# States of a phone with a call: when their start is unknown (listed at login), the newest of
# its calls tells it (CoreShowChannels' Duration). Not hold: a hold begins after its call.
CALL_STATES = frozenset({"inuse", "ringing", "inuse_ringing", "busy"})

# Versions the `changes` key covers: a reader further behind reads the whole snapshot.
# Small, because every reader decodes it on every version (a hub is usually one behind).
RECENT = 16


@dataclass(frozen=True)
class Details:
    """Who is behind an extension, beside its lamp: name, groups, presence, calls; and
    its firm."""

    name: str = ""
    groups: tuple[str, ...] = ()
    presence: Presence | None = None
    calls: tuple[CallJSON, ...] = ()
    tenant: str = ""  # the firm (app.directory: the tenant column or TENANT_FROM_CONTEXT)
    queues: tuple[ExtensionQueueJSON, ...] = ()  # the queues it serves (app.queues)


@dataclass
class ExtensionRecord:
    """An extension as published: its state plus when and in which version it changed."""

    state: ExtensionState
    changed_at: float  # when the state began; UNKNOWN_START when the PBX did not tell
    details: Details = Details()
    version: int = 0  # 0: changed since the last publication (encode again)
    encoded: bytes = b""

    def as_dict(self) -> ExtensionJSON:
        s, d = self.state, self.details
        return {
            "exten": s.exten,
            "context": s.context,
            "hint": s.hint,
            "status": s.status,
            "state": s.state,  # type: ignore[typeddict-item]  # from state_name: a State
            "changed_at": round(self.changed_at, 3),
            "version": self.version,
            "name": d.name,
            "groups": list(d.groups),
            "presence": d.presence.as_dict() if d.presence else None,
            "calls": [dict(call) for call in d.calls],  # type: ignore[misc]  # copies of CallJSON
            "tenant": d.tenant,
            "queues": [dict(queue) for queue in d.queues],  # type: ignore[misc]  # copies
        }


@dataclass
class QueueRecord:
    """A queue as published: its JSON, and its bytes encoded once per change."""

    queue: QueueJSON
    changed_at: float
    version: int = 0  # 0: changed since the last publication (encode again)
    encoded: bytes = b""


@dataclass
class PbxPicture:
    """Every extension of one PBX, the state of the link, and what is not yet published."""

    started_at: float
    extensions: dict[str, ExtensionRecord] = field(default_factory=dict)
    link: LinkStateName = "connecting"  # the AMI link: connecting, starting, up, down
    since: float = 0.0  # when `link` last changed
    address: str = ""  # host:port of the PBX, for "cannot reach the PBX at ..."
    error: str = ""  # why the PBX was never reached (short, cleaned, no secrets); "" once it was
    dirty: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    link_dirty: bool = True
    devices: dict[str, str] = field(default_factory=dict)
    whole_at: int = 0  # the last version that changed the set of extensions, or sent them all
    keys_changed: bool = False  # an extension came or went since the last publication
    recent: dict[str, int] = field(default_factory=dict)  # key -> version, oldest change first
    queues: dict[str, QueueRecord] = field(default_factory=dict)  # queue name -> the queue
    queues_dirty: set[str] = field(default_factory=set)
    recent_queues: dict[str, int] = field(default_factory=dict)  # name -> version, oldest first
    _queue_members: set[str] = field(default_factory=set)  # extension keys shown in a queue
    _index: HintIndex | None = None

    def __post_init__(self) -> None:
        self.since = self.since or self.started_at

    @property
    def pending(self) -> bool:
        return bool(self.dirty or self.removed or self.link_dirty or self.queues_dirty)

    def apply(self, state: ExtensionState, now: float) -> bool:
        """Take one state that began at `now` (UNKNOWN_START: not told); a repeat of the
        current one is not a change, a new hint for the same status keeps its start."""
        record = self.extensions.get(state.key)
        if record is not None and record.state == state:
            return False
        if record is None or record.state.hint != state.hint:
            self._index = None
        self.keys_changed = self.keys_changed or record is None
        details = record.details if record is not None else Details()
        if record is not None and record.state.status == state.status:
            now = record.changed_at
        self.extensions[state.key] = ExtensionRecord(state, now, details)
        self.dirty.add(state.key)
        self.removed.discard(state.key)
        return True

    def set_details(self, key: str, **changes: object) -> bool:
        """Change what is shown beside the lamp (name, groups, presence, calls)."""
        record = self.extensions.get(key)
        if record is None:
            return False
        details = dataclasses.replace(record.details, **changes)  # type: ignore[arg-type]
        if details == record.details:
            return False
        record.details, record.version = details, 0
        self.dirty.add(key)
        return True

    def start_from_calls(self, key: str) -> bool:
        """A call state whose start is unknown began, as far as the PBX lets us know, with
        the newest of its calls (a call's `since`: its age in CoreShowChannels at login)."""
        record = self.extensions.get(key)
        if record is None or record.changed_at != UNKNOWN_START or record.state.state not in CALL_STATES:
            return False
        starts = [float(call.get("since") or 0) for call in record.details.calls]
        if not starts or min(starts) <= 0:
            return False
        record.changed_at, record.version = max(starts), 0
        self.dirty.add(key)
        return True

    @property
    def index(self) -> HintIndex:
        """Devices, presentities and numbers to extensions, for the hints as they are now."""
        if self._index is None:
            self._index = HintIndex(record.state for record in self.extensions.values())
        return self._index

    def remove(self, key: str) -> bool:
        if self.extensions.pop(key, None) is None:
            return False
        self._index = None
        self.dirty.discard(key)
        self.removed.add(key)
        self.recent.pop(key, None)
        self.keys_changed = True
        return True

    def replace_all(self, states: Iterable[ExtensionState], now: float = UNKNOWN_START) -> int:
        """A full picture from the PBX: extensions it no longer lists disappear. A listed
        state that is new or changed began at `now`: unknown by default, since a list says
        what is, not since when (a restart must not pass for the start of every state)."""
        seen: set[str] = set()
        changes = 0
        for state in states:
            seen.add(state.key)
            changes += self.apply(state, now)
        for key in [k for k in self.extensions if k not in seen]:
            changes += self.remove(key)
        return changes

    @property
    def connected(self) -> bool:
        """The old `pbx.connected`: the states are confirmed (the link is up)."""
        return self.link == "up"

    def set_link(self, link: LinkStateName | bool, now: float, error: str = "") -> bool:
        """The link is `link` (True/False: "up"/"down") from `now` on; `error` says why a PBX
        never reached cannot be. A new error for the same state keeps `since`."""
        state: LinkStateName = ("up" if link else "down") if isinstance(link, bool) else link
        if state == self.link and error == self.error:
            return False
        if state != self.link:
            self.since = now
        self.link, self.error = state, error
        self.link_dirty = True
        return True

    def apply_device(self, device: str, device_state: str, now: float) -> int:
        """A device changed: recompute the hints that hold it, where every device is known."""
        self.devices[device] = device_state
        changes = 0
        for key in self.index.keys_holding(device):
            state = self.extensions[key].state
            status = status_from_devices(state.hint, self.devices)
            if status is not None and status != state.status:
                changes += self.apply(
                    ExtensionState(state.exten, state.context, state.hint, status, state_name(status)),
                    now,
                )
        return changes

    def mark_all_dirty(self) -> None:
        """The store lost what we wrote (restart, outage): send everything again."""
        self.dirty.update(self.extensions)
        self.queues_dirty.update(self.queues)
        self.link_dirty = True

    # --- queues ---

    def show_queues(self, book: QueueBook, names: Iterable[str], now: float, *, show_numbers: bool) -> bool:
        """Put the queues `names` of `book` (gone from it: removed) and every extension's
        memberships on the picture; True when anything shown changed. A queue that comes or
        goes changes the set of keys: readers take the whole snapshot (`whole_at`)."""
        changed = False
        for name in names:
            if name not in book:
                if self.queues.pop(name, None) is not None:
                    self.recent_queues.pop(name, None)
                    self.queues_dirty.discard(name)
                    self.keys_changed = changed = True
                continue
            queue = book.as_json(name, self.index, show_numbers=show_numbers)
            record = self.queues.get(name)
            if record is not None and record.queue == queue:
                continue
            self.keys_changed = self.keys_changed or record is None
            self.queues[name] = QueueRecord(queue, now)
            self.queues_dirty.add(name)
            changed = True
        memberships = book.memberships(self.index)
        for key in self._queue_members | memberships.keys():
            changed |= self.set_details(key, queues=memberships.get(key, ()))
        self._queue_members = set(memberships)
        return changed

    def publication(self, version: int, now: float, *, full: bool) -> Publication:
        """One batch: the dirty extensions get `version`; the snapshot holds them all.
        `full` sends every extension, for a store that lost (or never had) the others."""
        if full:
            self.mark_all_dirty()
        changed: dict[str, bytes] = {}
        for key in self.dirty:
            record = self.extensions[key]
            if not record.version:  # changed since the last batch (a resend keeps its version)
                record.version = version
                record.encoded = json.dumps(record.as_dict(), separators=(",", ":")).encode()
                self.recent.pop(key, None)
                self.recent[key] = version
            changed[key] = record.encoded
        for name in self.queues_dirty:
            queue = self.queues[name]
            if not queue.version:  # changed since the last batch (a resend keeps its version)
                queue.version = version
                shown = {**queue.queue, "changed_at": round(queue.changed_at, 3), "version": version}
                queue.encoded = json.dumps(shown, separators=(",", ":")).encode()
                self.recent_queues.pop(name, None)
                self.recent_queues[name] = version
        self.queues_dirty.clear()
        removed = tuple(self.removed)
        if full or self.keys_changed:
            self.whole_at = version
        self.dirty.clear()
        self.removed.clear()
        self.link_dirty = self.keys_changed = False
        return Publication(
            version=version,
            snapshot=self._json({"version": version, "updated_at": round(now, 3)}, self.extensions),
            changed=changed,
            removed=removed,
            full=full,
            changes=self._changes_json(version, now),
        )

    def _changes_json(self, version: int, now: float) -> bytes:
        """The `changes` key: every extension changed in the last RECENT versions, so a
        reader at version `since` or later can catch up without the whole snapshot."""
        since = max(version - RECENT, 0)
        for recent in (self.recent, self.recent_queues):
            for key, changed_in in list(recent.items()):
                if changed_in > since:
                    break
                del recent[key]
        head = {"version": version, "updated_at": round(now, 3), "since": since, "whole_at": self.whole_at}
        queues = {name: self.queues[name] for name in self.recent_queues}
        return self._json(head, {key: self.extensions[key] for key in self.recent}, queues)

    def _json(
        self,
        head: dict[str, object],
        records: Mapping[str, ExtensionRecord],
        queues: Mapping[str, QueueRecord] | None = None,
    ) -> bytes:
        """`head`, the link, `records` and `queues` (all when None) as one JSON object; each
        record and queue is encoded once per change."""
        pbx: LinkJSON = {
            "connected": self.connected,
            "since": round(self.since, 3),
            "state": self.link,
            "address": self.address,
            "error": self.error,
        }
        link = {"pbx": pbx}
        start = json.dumps({**head, **link}, separators=(",", ":")).encode()
        parts = [json.dumps(key).encode() + b":" + record.encoded for key, record in records.items()]
        shown = self.queues if queues is None else queues
        queue_parts = [json.dumps(name).encode() + b":" + queue.encoded for name, queue in shown.items()]
        return b"".join(
            (start[:-1], b',"extensions":{', b",".join(parts), b'},"queues":{', b",".join(queue_parts), b"}}")
        )

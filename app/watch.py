"""What `blf-panel watch` prints: the table of every extension, then the changes (a
redrawn table on a terminal, one line per change into a pipe, or JSON).

It reads snapshots as the store contract describes them (app.schema), nothing else. The table
and the change lines are in the CLI's language (app.i18n); JSON stays as the store has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from typing import TYPE_CHECKING, TextIO

from app.i18n import N_, _, ngettext
from app.schema import SnapshotJSON, extension_order

if TYPE_CHECKING:
    from app.collector import Collector


class TableView:
    """Prints snapshots: the whole table first; then, live, a redraw on a terminal or
    one line per change when the output is a pipe or file."""

    def __init__(self, out: TextIO, *, as_json: bool, live: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.live = live
        self.previous: SnapshotJSON | None = None

    def show(self, snapshot: SnapshotJSON) -> None:
        previous, self.previous = self.previous, snapshot
        if self.as_json:
            if previous is None or not self.live:
                self.out.write(json.dumps(snapshot, sort_keys=True) + "\n")
            else:
                self.out.write(json.dumps(changes_json(previous, snapshot), sort_keys=True) + "\n")
        elif previous is None or self.out.isatty():
            clear = "\x1b[H\x1b[2J" if self.live and self.out.isatty() else ""
            width = shutil.get_terminal_size((100, 24)).columns
            self.out.write(clear + render_table(snapshot, width) + "\n")
        else:
            for line in change_lines(previous, snapshot):
                self.out.write(line + "\n")
        self.out.flush()


# The states as the store spells them (app.schema.State): in English the table shows them so,
# for a sysadmin's grep; another language has short words for them (a cell is as wide as the
# longest: 13 characters in English, `inuse_ringing`).
STATE_WORDS = {
    "idle": N_("idle"),
    "inuse": N_("inuse"),
    "busy": N_("busy"),
    "unavailable": N_("unavailable"),
    "ringing": N_("ringing"),
    "inuse_ringing": N_("inuse_ringing"),
    "hold": N_("hold"),
    "inuse_hold": N_("inuse_hold"),
    "unknown": N_("unknown"),
}


def _clock(epoch: float) -> str:
    """The time of day; 0, the contract's "unknown" (a state listed at login), as --:--:--
    rather than an invented 00:00:00 (or 03:00:00 in Moscow)."""
    return time.strftime("%H:%M:%S", time.localtime(epoch)) if epoch else "--:--:--"


def _state(state: object) -> str:
    """A state in the CLI's language; one this version does not know, as the store has it."""
    word = STATE_WORDS.get(state) if isinstance(state, str) else None
    return _(word) if word else str(state)


def _link(connected: object) -> str:
    return _("PBX connected") if connected else _("PBX DISCONNECTED")


def render_table(snapshot: SnapshotJSON, width: int = 100) -> str:
    """A compact grid: `exten  state  since` cells, as many per row as fit."""
    pbx = snapshot.get("pbx", {})
    extensions = sorted(snapshot.get("extensions", {}).values(), key=extension_order)
    count = len(extensions)
    head = " | ".join(
        [
            _("%(link)s since %(time)s")
            % {"link": _link(pbx.get("connected")), "time": _clock(pbx.get("since", 0))},
            _("version %(version)s") % {"version": snapshot.get("version")},
            ngettext("%(count)d extension", "%(count)d extensions", count) % {"count": count},
            _("updated %(time)s") % {"time": _clock(snapshot.get("updated_at", 0))},
        ]
    )
    state_width = max(len(_(word)) for word in STATE_WORDS.values())
    cells = [
        f"{e['exten']:>6} {_state(e['state']):<{state_width}} {_clock(e['changed_at'])}" for e in extensions
    ]
    if not pbx.get("connected"):
        cells = [cell + " ?" for cell in cells]  # states not confirmed since the link went down
    cell_width = max((len(c) for c in cells), default=1) + 3
    per_row = max(1, width // cell_width)
    rows = [
        "".join(cell.ljust(cell_width) for cell in cells[i : i + per_row]).rstrip()
        for i in range(0, len(cells), per_row)
    ]
    return "\n".join([head, *rows])


def change_lines(previous: SnapshotJSON, current: SnapshotJSON) -> list[str]:
    """One line per extension that changed between two snapshots, and the link."""
    lines = []
    stamp = _clock(current.get("updated_at", time.time()))
    old_pbx, new_pbx = previous.get("pbx", {}), current.get("pbx", {})
    if old_pbx.get("connected") != new_pbx.get("connected"):
        lines.append(f"{stamp}  {_link(new_pbx.get('connected'))}")
    old, new = previous.get("extensions", {}), current.get("extensions", {})
    for key in sorted(new.keys() | old.keys()):
        before, after = old.get(key), new.get(key)
        if after is None:
            removed = _("removed")
            lines.append(f"{stamp}  {key}  {removed}")
        elif before is None or before.get("state") != after.get("state"):
            was = _state(before.get("state")) if before else _("new")
            lines.append(f"{stamp}  {key}  {was} -> {_state(after['state'])}")
    return lines


def changes_json(previous: SnapshotJSON, current: SnapshotJSON) -> dict[str, object]:
    old, new = previous.get("extensions", {}), current.get("extensions", {})
    return {
        "version": current.get("version"),
        "pbx": current.get("pbx"),
        "changed": {k: v for k, v in new.items() if old.get(k) != v},
        "removed": sorted(old.keys() - new.keys()),
    }


async def wait_for_link(collector: Collector, timeout: float) -> None:
    """For `watch --once` on the in-process store: wait for the first full picture to be
    published (or give up after `timeout` and show what there is)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while not (collector.picture.connected and not collector.picture.pending):
                await collector.published.wait()

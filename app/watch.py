"""What `blf-panel watch` prints: the table of every extension, then the changes (a
redrawn table on a terminal, one line per change into a pipe, or JSON).

It reads snapshots as the store contract describes them (app.schema), nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from typing import TYPE_CHECKING, TextIO

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


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def render_table(snapshot: SnapshotJSON, width: int = 100) -> str:
    """A compact grid: `exten  state  since` cells, as many per row as fit."""
    pbx = snapshot.get("pbx", {})
    extensions = sorted(snapshot.get("extensions", {}).values(), key=extension_order)
    link = "connected" if pbx.get("connected") else "DISCONNECTED"
    head = (
        f"PBX {link} since {_clock(pbx.get('since', 0))} | version {snapshot.get('version')} | "
        f"{len(extensions)} extensions | updated {_clock(snapshot.get('updated_at', 0))}"
    )
    cells = [f"{e['exten']:>6} {e['state']:<13} {_clock(e['changed_at'])}" for e in extensions]
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
        lines.append(f"{stamp}  PBX {'connected' if new_pbx.get('connected') else 'DISCONNECTED'}")
    old, new = previous.get("extensions", {}), current.get("extensions", {})
    for key in sorted(new.keys() | old.keys()):
        before, after = old.get(key), new.get(key)
        if after is None:
            lines.append(f"{stamp}  {key}  removed")
        elif before is None or before.get("state") != after.get("state"):
            was = before.get("state") if before else "new"
            lines.append(f"{stamp}  {key}  {was} -> {after['state']}")
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

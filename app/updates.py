"""The chain of updates every viewer walks: what changed between two snapshots, rendered,
and the messages built from it. Do not break: a viewer waits on `ready` (an Event per update,
never a shared future: cancelling one viewer's wait must not cancel the others')."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.look import Look
from app.view import View


@dataclass(eq=False)
class Update:
    """What changed between two snapshots, rendered. `tiles` maps each look in use (see
    app.look) to the changed keys' out-of-band tiles in that look; `full` means the set of
    extensions changed (or the hub resynced): send whole views."""

    version: int
    after: int  # the version this update builds on
    tiles: dict[Look, dict[str, str]]
    full: bool
    link: bool  # the link banner changed
    heartbeat: bool = False
    renamed: bool = False  # a name changed: a search view may gain or lose tiles
    closing: bool = False  # the server is shutting down: streams end here
    next: Update | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: tuple[str, ...] = ()  # the keys whose tiles changed (in every look of `tiles`)
    # Keys whose state word changed (-> the new state): what a pinned colleague's viewer hears.
    states: dict[str, str] = field(default_factory=dict)
    # language -> queue name -> its tile (counts only: one form per language, whatever the scope)
    queue_tiles: dict[str, dict[str, str]] = field(default_factory=dict)
    moved: bool = False  # a membership changed: a view of one queue may gain or lose tiles
    # view -> (chain start, or the version a reconnect resumes from) -> message. Kept on
    # the head only: a viewer always catches up to the head, so older ones are never read.
    messages: dict[View, dict[Update | int, bytes]] = field(default_factory=dict)

    def link_to(self, following: Update) -> None:
        self.next = following
        self.ready.set()


def whole_again(view: View, update: Update) -> bool:
    """Whether `update` changes which tiles `view` holds, so it must be sent whole; or
    its tiles were rendered before anyone viewed them in this view's look."""
    return (
        update.full
        or (update.renamed and bool(view.query))
        or (update.moved and bool(view.queue))
        or (bool(update.changed) and view.look not in update.tiles)
    )

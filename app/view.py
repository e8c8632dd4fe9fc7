"""What one viewer looks at (`View`): an ext list or every extension, narrowed to a group,
a search and a queue's members (or the queue tiles alone: the wallboard), within the
viewer's Scope. Do not break: a View is canonical and hashable,
because the hub caches one message per view and update.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from app.look import Look
from app.schema import ExtensionJSON, exten_order
from app.scope import ALL as EVERYTHING
from app.scope import Scope


@dataclass(frozen=True)
class View:
    """What one viewer looks at: a list of extensions (an embed), or every extension,
    narrowed to a group and a search, all within the viewer's scope; hashable, so
    messages are cached per view. Canonical: the ext list sorted (in the one display
    order) and de-duplicated, the search case-folded, so that every order and spelling
    of the same view is one view (2,000 orders of the same 100 extensions were 2,000
    views, 1 GB of cached messages)."""

    extens: tuple[str, ...] | None = None
    group: str = ""  # a group's slug
    query: str = ""  # matched against number and name, case-insensitively
    scope: Scope = EVERYTHING
    queue: str = ""  # a queue's name (checked by the route): its members and its tile
    wallboard: bool = False  # /queues: queue tiles only, no extension
    # `?view=wall`: a display mode, not a narrowing: the same tiles, unsectioned (one grid
    # that wall.css sizes by the number of tiles). Part of the hash: the whole view differs.
    wall: bool = False
    lang: str = "en"  # the language of its words (app.i18n)
    pins: tuple[str, ...] = ()  # the viewer's pinned colleagues (extens), shown first
    controls: frozenset[str] = frozenset()  # on its tiles (app.look: pinning, actions)

    def __post_init__(self) -> None:
        if self.extens is not None:
            object.__setattr__(self, "extens", tuple(sorted(set(self.extens), key=exten_order)))
        object.__setattr__(self, "query", self.query.casefold())

    @functools.cached_property
    def _hash(self) -> int:
        return hash(
            (self.extens, self.group, self.query, self.scope, self.queue, self.wallboard, self.wall)
            + (self.lang, self.pins, self.controls)
        )

    def __hash__(self) -> int:  # looked up for every viewer of every message: hash once
        return self._hash

    @functools.cached_property
    def look(self) -> Look:
        """How its tiles are drawn: one rendering of a change serves every view alike."""
        return Look(self.lang, self.scope.show_numbers, self.controls)

    @property
    def listed(self) -> bool:
        return self.extens is not None

    def holds(self, extension: ExtensionJSON, slugs: frozenset[str]) -> bool:
        """Whether the view shows `extension` (`slugs`: its groups' slugs)."""
        if self.wallboard:
            return False
        if not self.scope.everything and not self.scope.holds(extension, slugs):
            return False
        if self.queue and self.queue not in serves(extension):
            return False
        if self.group and self.group not in slugs:
            return False
        if self.query:
            # Digits anywhere in the number ("12" finds 112 and 212 as well as 120-129).
            return self.query in extension["exten"] or self.query in extension["name"].casefold()
        return True

    def shows_queues(self) -> bool:
        """Whether queue tiles belong in this view: the wallboard, a view of one queue,
        and the full panel unnarrowed (an ext list, a group or a search is about people)."""
        return self.wallboard or bool(self.queue) or not (self.listed or self.group or self.query)


def serves(extension: ExtensionJSON | None) -> tuple[str, ...]:
    """The queues `extension` is a member of (its JSON's `queues`), in their order."""
    if extension is None:
        return ()
    return tuple(str(q.get("queue", "")) for q in extension.get("queues") or ())


ALL = View()

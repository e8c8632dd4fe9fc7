"""The sections of the full panel (pure): one per group, in name order, the people of no
group last. A tile stands under its first group only (a tile id is unique on the page); a
section names the people of its group whose tiles stand under another one, so a group whose
people all stand elsewhere still has its section (the demo's "Front desk", whose one member
is also in "Reception"). A group's own
view (`?group=`) is one section headed by that group's name, not by its people's first
group's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.directory import group_slug


@dataclass
class Section:
    name: str  # a group's name as the directory writes it; "" for the people of no group
    keys: list[str] = field(default_factory=list)  # the tiles under it, in display order
    elsewhere: list[str] = field(default_factory=list)  # its people whose tiles stand elsewhere


def sections(keys: Iterable[str], groups_of: Callable[[str], list[str]], group: str = "") -> list[Section]:
    """`keys` in display order, sectioned by `groups_of(key)` (a key's groups, first one first);
    `group`: the slug of a group's own view (every key is in it)."""
    keys = list(keys)
    if group:
        named = (name for key in keys for name in groups_of(key) if group_slug(name) == group)
        return [Section(next(named, ""), keys)]
    found: dict[str, Section] = {}
    for key in keys:
        groups = groups_of(key) or [""]
        found.setdefault(groups[0], Section(groups[0])).keys.append(key)
        for other in groups[1:]:
            found.setdefault(other, Section(other)).elsewhere.append(key)
    return [found[name] for name in sorted(found, key=lambda name: (name == "", name.casefold()))]

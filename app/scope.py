"""What one user (or one signed embed link) may see: firms, groups and extensions, and
whether outside callers' numbers are shown. Pure: the auth rooms build a Scope, the hub
and the routes apply it. Do not break: a Scope decides everything that leaves the server;
`ALL` (admins, AUTH=none) is the only one that sees every extension.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from app.schema import ExtensionJSON


@dataclass(frozen=True)
class Scope:
    """Firms are the outer bound: a firm's users never see another firm's extensions,
    names, groups, callers or even their count. Within the firms, an extension is seen
    when it is in one of `groups` (slugs) or listed in `extensions`; with both None, every
    extension of the firms. None means no restriction on that axis."""

    firms: frozenset[str] | None = None
    groups: frozenset[str] | None = None  # group slugs (app.directory.group_slug)
    extensions: frozenset[str] | None = None
    show_numbers: bool = True  # outside callers' numbers (and names that are numbers)

    @functools.cached_property
    def _hash(self) -> int:
        return hash((self.firms, self.groups, self.extensions, self.show_numbers))

    def __hash__(self) -> int:  # a key of the hub's message caches: hash once
        return self._hash

    @property
    def everything(self) -> bool:
        return self.firms is None and self.groups is None and self.extensions is None

    def holds(self, extension: ExtensionJSON, group_slugs: frozenset[str]) -> bool:
        """Whether `extension` (whose groups' slugs are `group_slugs`) is in this scope."""
        if self.firms is not None and extension.get("tenant", "") not in self.firms:
            return False
        if self.groups is None and self.extensions is None:
            return True
        return bool(
            (self.groups is not None and self.groups & group_slugs)
            or (self.extensions is not None and extension["exten"] in self.extensions)
        )


ALL = Scope()


class ScopeError(ValueError):
    """A scope written wrongly (users file, proxy mapping file); the message says where."""


_KEYS = {"firm": "firms", "firms": "firms", "group": "groups", "groups": "groups", "ext": "extensions"}
_MAX_ITEMS = 500


def parse_scope(text: str) -> Scope:
    """A scope as an admin writes it in the users file or the proxy mapping file:
    `*` (everything), or `;`-separated parts, each `firm=acme,beta`, `group=sales,support`,
    `ext=101,102` or `numbers=off`; e.g. `firm=acme; group=sales; numbers=off`.
    Group names are matched by their slug, as in URLs (`Front desk` = `front-desk`)."""
    from app.directory import group_slug  # the one slug rule of groups
    from app.states import EXTEN_RE

    text = text.strip()
    if text in ("*", "all"):
        return ALL
    if not text:
        raise ScopeError("empty scope (write * for everything)")
    found: dict[str, frozenset[str]] = {}
    show_numbers = True
    for part in text.split(";"):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not value:
            raise ScopeError(f"{part.strip()!r} is not key=value (firm=, group=, ext=, numbers=)")
        if key.lower() == "numbers":
            if value.lower() not in ("on", "off"):
                raise ScopeError(f"numbers={value!r}: write numbers=on or numbers=off")
            show_numbers = value.lower() == "on"
            continue
        field = _KEYS.get(key.lower())
        if field is None:
            raise ScopeError(f"unknown scope key {key!r} (firm, group, ext, numbers)")
        items = [item.strip() for item in value.split(",") if item.strip()]
        if len(items) > _MAX_ITEMS:
            raise ScopeError(f"{key}= lists more than {_MAX_ITEMS} items")
        if field == "extensions":
            bad = [item for item in items if not EXTEN_RE.fullmatch(item)]
            if bad:
                raise ScopeError(f"ext={bad[0][:20]!r} is not an extension")
        elif field == "groups":
            items = [group_slug(item) for item in items]
        found[field] = found.get(field, frozenset()) | frozenset(items)
    return Scope(show_numbers=show_numbers, **found)

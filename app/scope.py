"""What one user (or one signed embed link) may see: firms, groups and extensions, and
whether outside callers' numbers are shown. Pure: the auth rooms build a Scope, the hub
and the routes apply it. Do not break: a Scope decides everything that leaves the server;
`ALL` (admins, AUTH=none) is the only one that sees every extension.
"""

from __future__ import annotations

import functools
from collections.abc import Container
from dataclasses import dataclass

from app.i18n import N_
from app.said import Said
from app.schema import CallJSON, ExtensionJSON, SnapshotJSON, is_phone_number


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


def without_numbers(call: CallJSON, inside: Container[str]) -> CallJSON:
    """`call` as a viewer who may not see outside numbers is shown it: the party's number
    gone unless it is one of `inside` (an extension of this PBX), and a caller ID name that
    is a number too (a carrier that sends no name sends the number as the name)."""
    number, name = str(call.get("party_number") or ""), str(call.get("party_name") or "")
    if not number and not name or number in inside:
        return call
    shown = dict(call)
    shown["party_number"] = ""
    if name and is_phone_number(name):
        shown["party_name"] = ""
    return shown  # type: ignore[return-value]  # a CallJSON with two fields changed


def scoped_snapshot(snapshot: SnapshotJSON, scope: Scope) -> SnapshotJSON:
    """The snapshot a viewer of `scope` may read (/api/snapshot): only the extensions it
    holds, and without outside numbers when the scope hides them."""
    from app.directory import group_slug

    extensions: dict[str, ExtensionJSON] = {}
    inside = {ext["exten"] for ext in snapshot["extensions"].values()}
    for key, ext in snapshot["extensions"].items():
        if scope.holds(ext, frozenset(group_slug(g) for g in ext["groups"])):
            if not scope.show_numbers and ext.get("calls"):
                ext = {**ext, "calls": [without_numbers(c, inside) for c in ext["calls"]]}  # type: ignore[typeddict-item]
            extensions[key] = ext
    # Only the keys known to be per extension or harmless: anything else published beside
    # them (queues, say) may name another firm's callers, so a scope does not get it.
    kept = {key: snapshot[key] for key in ("version", "updated_at", "pbx") if key in snapshot}  # type: ignore[literal-required]
    return {**kept, "extensions": extensions}  # type: ignore[typeddict-item]


class ScopeError(ValueError):
    """A scope written wrongly (users file, proxy mapping file, `blf-panel user --scope`); the
    message says where. Its one argument is Said: English in the files' log lines (str()),
    the CLI's language where `blf-panel user` prints it (`said.shown`)."""

    def __init__(self, said: Said) -> None:
        super().__init__(said)
        self.said = said


_KEYS = {"firm": "firms", "firms": "firms", "group": "groups", "groups": "groups", "ext": "extensions"}
_MAX_ITEMS = 500


def parse_scope(text: str) -> Scope:
    """A scope as an admin writes it in the users file or the proxy mapping file:
    `*` (everything), or `;`-separated parts, each `firm=acme,beta`, `group=sales,support`,
    `ext=101,102` or `numbers=off`; e.g. `firm=acme; group=sales; numbers=off`.
    Group and firm names are matched by their slug, as in URLs (`Front desk` = `front-desk`)."""
    from app.directory import group_slug  # the one slug rule of groups
    from app.states import EXTEN_RE

    text = text.strip()
    if text in ("*", "all"):
        return ALL
    if not text:
        raise ScopeError(Said(N_("empty scope (write * for everything)")))
    found: dict[str, frozenset[str]] = {}
    show_numbers = True
    for part in text.split(";"):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not value:
            raise ScopeError(
                Said(N_("%(part)r is not key=value (firm=, group=, ext=, numbers=)"), part=part.strip()[:60])
            )
        if key.lower() == "numbers":
            if value.lower() not in ("on", "off"):
                raise ScopeError(
                    Said(N_("numbers=%(value)r: write numbers=on or numbers=off"), value=value[:20])
                )
            show_numbers = value.lower() == "on"
            continue
        field = _KEYS.get(key.lower())
        if field is None:
            raise ScopeError(Said(N_("unknown scope key %(key)r (firm, group, ext, numbers)"), key=key[:20]))
        items = [item.strip() for item in value.split(",") if item.strip()]
        if len(items) > _MAX_ITEMS:
            raise ScopeError(Said(N_("%(key)s= lists more than %(most)d items"), key=key, most=_MAX_ITEMS))
        if field == "extensions":
            bad = [item for item in items if not EXTEN_RE.fullmatch(item)]
            if bad:
                raise ScopeError(Said(N_("ext=%(ext)r is not an extension"), ext=bad[0][:20]))
        else:  # group and firm names are matched by their slugs, as in URLs
            items = [group_slug(item) for item in items]
        found[field] = found.get(field, frozenset()) | frozenset(items)
    return Scope(show_numbers=show_numbers, **found)

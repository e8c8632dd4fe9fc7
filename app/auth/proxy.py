"""AUTH=proxy: the user and groups come from headers a trusted reverse proxy sets (nginx
auth_request, oauth2-proxy, Authelia); PROXY_SCOPES_FILE maps groups to role and scope.
Do not break: the headers count only from TRUSTED_PROXIES; from anywhere else, 403.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from app.auth.files import WatchedFile
from app.auth.users import ROLES, User, make_user
from app.schema import MAX_NAME, clean_text
from app.scope import Scope, ScopeError, parse_scope
from app.states import EXTEN_RE

log = logging.getLogger(__name__)

MAX_GROUPS = 200  # a directory's user in 200 groups is already an odd one
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class ProxyDenied(Exception):
    """`status` 401 (the proxy sent no user) or 403; `reason` for the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Grant:
    group: str  # case-folded
    role: str
    scope: Scope


def parse_grants(text: str, source: str) -> tuple[tuple[Grant, ...], list[str]]:
    """Lines `group:role:scope` (the group may hold colons: the last two fields are split off)."""
    grants: list[Grant] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        group, role, scope_text = (part.strip() for part in ([""] * 2 + line.rsplit(":", 2))[-3:])
        try:
            if not group:
                raise ValueError("expected group:role:scope")
            if role not in ROLES:
                raise ValueError(f"role {role[:20]!r} is not one of {', '.join(ROLES)}")
            scope = parse_scope(scope_text)
        except (ValueError, ScopeError) as error:
            problems.append(f"{source} line {number}: {error}; line skipped")
            continue
        grants.append(Grant(group.casefold(), role, scope))
    return tuple(grants), problems


def _one_extension(values: list[bytes], name: str) -> str | None:
    """The user's own extension from PROXY_EXTENSION_HEADER: one valid extension, or none
    (logged: a proxy that sends a bad one is misconfigured, and the user cannot act)."""
    if not values:
        return None
    text = values[0].decode("ascii", "replace").strip()
    if len(values) == 1 and EXTEN_RE.fullmatch(text):
        return text
    log.warning("AUTH=proxy: user %r: the extension header is not one extension; no actions", name)
    return None


def trusted(address: str, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class ProxyUsers:
    def __init__(
        self,
        scopes_file: str,
        networks: Networks,
        user_header: str,
        groups_header: str,
        extension_header: str = "",
    ) -> None:
        self.grants = WatchedFile(scopes_file, parse_grants, ())
        self.networks = networks
        self.user_header = user_header.encode()  # lower case, as ASGI gives names
        self.groups_header = groups_header.encode()
        self.extension_header = extension_header.encode() if extension_header else None

    def identify(self, headers: list[tuple[bytes, bytes]], peer: str) -> User:
        users = [value for name, value in headers if name == self.user_header]
        groups = [value for name, value in headers if name == self.groups_header]
        if not trusted(peer, self.networks):
            if users or groups:
                raise ProxyDenied(403, f"user header from {peer}, which is not in TRUSTED_PROXIES")
            raise ProxyDenied(403, f"request from {peer}, which is not in TRUSTED_PROXIES (AUTH=proxy)")
        if len(users) != 1 or len(groups) > 1:
            raise ProxyDenied(401 if not users else 403, f"the proxy sent {len(users)} user headers")
        name = clean_text(users[0].decode("utf-8", "replace"), MAX_NAME)
        if not name:
            raise ProxyDenied(401, "the proxy sent an empty user")
        mine = {
            clean_text(group, MAX_NAME).casefold()
            for group in (groups[0].decode("utf-8", "replace").split(",") if groups else [])[:MAX_GROUPS]
        }
        for grant in self.grants.current():  # the first listed group of the user decides
            if grant.group in mine:
                return make_user(name, grant.role, grant.scope, self._extension(headers, name))
        raise ProxyDenied(403, f"user {name!r}: none of their groups is in PROXY_SCOPES_FILE")

    def _extension(self, headers: list[tuple[bytes, bytes]], name: str) -> str | None:
        if self.extension_header is None:
            return None
        return _one_extension([value for key, value in headers if key == self.extension_header], name)

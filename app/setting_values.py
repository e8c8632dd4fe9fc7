"""How the text of each setting becomes its value: one parser per kind, raising ValueError
with what is wrong (app/settings.py names the setting). Do not break: a parser never
accepts a value that fails later (a host with a port, an unquoted CSP keyword)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from app.i18n import LANGUAGES, MAX_RANGES, _, language_of, ngettext
from app.store.contract import check_prefix, parse_memcached_url


def _text(value: str) -> str:
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(_("%(value)r is not a TCP port (1-65535)") % {"value": value})
    return int(value)


def _port_or_zero(value: str) -> int:
    return 0 if value == "0" else _port(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(_("%(value)r is not a number") % {"value": value}) from None
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(_("%(value)r must be a number above 0") % {"value": value})
    return number


def _non_negative_float(value: str) -> float:
    return 0.0 if value.strip() in ("0", "0.0") else _positive_float(value)


def _memcached_url(value: str) -> str:
    if value:
        parse_memcached_url(value)  # the store's own check: a ValueError naming the value
    return value


def _prefix(value: str) -> str:
    return check_prefix(value)


_HOST_NAME_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.?")


def _host_of(port_setting: str) -> Callable[[str], str]:
    """The parser of a host name or address without a port (`port_setting` holds that).
    An IPv6 address is written as is, fd00::5 (what asyncio and uvicorn take); brackets
    as in a URL, [fd00::5], are accepted and dropped."""

    def parse(value: str) -> str:
        if not value:
            return value
        host = _bare_host(value)
        if host is not None:
            return host
        head, _colon, port = value.rpartition(":")
        if port.isdigit() and (host := _bare_host(head)) is not None:
            raise ValueError(
                _("%(value)r holds a port: write %(host)s here and put the port in %(setting)s=%(port)s")
                % {"value": value, "host": host, "setting": port_setting, "port": port}
            )
        raise ValueError(
            _("%(value)r is not a host name or address (IPv6 as is: fd00::5)") % {"value": value}
        )

    return parse


def _bare_host(value: str) -> str | None:
    """`value` if it is a host name or an address (an IPv6 one without its brackets), else None."""
    bracketed = value.startswith("[") and value.endswith("]")
    bare = value[1:-1] if bracketed else value
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return bare if not bracketed and _HOST_NAME_RE.fullmatch(bare) else None
    return bare if address.version == 6 or not bracketed else None


def _ami_events(value: str) -> str:
    if not re.fullmatch(r"[a-z]+(,[a-z]+)*", value):
        raise ValueError(_("%(value)r is not a comma-separated list of AMI event classes") % {"value": value})
    return value


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(_("%(value)r is not one of DEBUG, INFO, WARNING, ERROR") % {"value": value})
    return level


def _tenant_pattern(value: str) -> str:
    """A regular expression matched on the whole context, whose first group is the firm
    (FreePBX multi-tenant: from-internal-(.+)); "" for one firm."""
    if not value:
        return value
    try:
        pattern = re.compile(value)
    except re.error as error:
        raise ValueError(
            _("%(value)r is not a regular expression (%(error)s)") % {"value": value, "error": error}
        ) from None
    if pattern.groups < 1:
        raise ValueError(
            _("%(value)r has no group: put the firm's part in ( ), e.g. from-internal-(.+)")
            % {"value": value}
        )
    return value


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise ValueError(_("%(value)r is not a number of workers (1-64)") % {"value": value})
    return int(value)


_TRUE_WORDS = ("on", "yes", "true", "1")
_FALSE_WORDS = ("off", "no", "false", "0")


def _on_off(value: str) -> bool:
    """Every boolean setting: on/off, and the usual yes/no, true/false, 1/0 (any case)."""
    word = value.lower()
    if word not in _TRUE_WORDS + _FALSE_WORDS:
        raise ValueError(
            _("%(value)r is not on or off (yes/no, true/false, 1/0 work too)") % {"value": value}
        )
    return word in _TRUE_WORDS


# The only keywords frame-ancestors knows (CSP 3). Unquoted, `self` is a host named "self":
# the browser then matches no origin at all, and the header blocks every embed, ours too.
_CSP_KEYWORDS = ("'self'", "'none'")


def _frame_ancestors(value: str) -> str:
    # Goes into a header: one CSP source list, nothing that could end or split it.
    if not re.fullmatch(r"[A-Za-z0-9'*:/.\- ]{1,500}", value) or not value.strip():
        raise ValueError(
            _("%(value)r is not a CSP source list like 'self' https://crm.example.com") % {"value": value}
        )
    sources = value.split()
    for source in sources:
        if source.lower() in ("self", "none"):
            keyword = f"'{source.lower()}'"
            raise ValueError(
                _(
                    "%(source)s must be quoted: %(keyword)s (in a shell or systemd: "
                    'FRAME_ANCESTORS="%(keyword)s"); unquoted it is a host name and blocks every embed'
                )
                % {"source": source, "keyword": keyword}
            )
        if "'" in source and source.lower() not in _CSP_KEYWORDS:
            raise ValueError(
                _("%(source)s is not a CSP keyword of frame-ancestors ('self' or 'none')")
                % {"source": source}
            )
    if len(sources) > 1 and "'none'" in (source.lower() for source in sources):
        raise ValueError(_("'none' stands alone: with other sources the browser ignores it"))
    return " ".join(sources)


def _root_path(value: str) -> str:
    if value and not re.fullmatch(r"(/[A-Za-z0-9_.\-]+)+", value):
        raise ValueError(
            _("%(value)r must be empty or a path like /blf (no trailing slash)") % {"value": value}
        )
    return value


def _lease_ttl(value: str) -> int:
    if not value.isdigit() or not 2 <= int(value) <= 300:
        raise ValueError(_("%(value)r is not a whole number of seconds (2-300)") % {"value": value})
    return int(value)


def _send_buffer(value: str) -> int:
    # Below 16 KiB a tile message of a big panel goes out in many small pieces; above
    # 16 MiB, 5,000 viewers that stop reading could hold 80 GB.
    if not value.isdigit() or not 16_384 <= int(value) <= 16_777_216:
        raise ValueError(_("%(value)r is not a number of bytes (16384-16777216)") % {"value": value})
    return int(value)


def _language(value: str) -> str:
    """LANGUAGE: "" (or auto): each browser's choice; or one of LANGUAGES. GNU gettext reads
    this same variable, and a desktop session may set it as a list (ru_RU:ru:en): its first
    language the panel has counts; a list naming none of them is an error like any other value."""
    if value.lower() in ("", "auto"):
        return ""
    for item in value.split(":")[:MAX_RANGES]:
        if (language := language_of(item)) is not None:
            return language
    raise ValueError(
        _("%(value)r is not a language of the panel: %(languages)s, or empty for the browser's choice")
        % {"value": value[:40], "languages": ", ".join(LANGUAGES)}
    )


def _title(value: str) -> str:
    if not 1 <= len(value) <= 80:
        raise ValueError(_("must be 1 to 80 characters"))
    return value


# The most extensions a range may name (the demo PBX and `simulate` take one).
MAX_EXTENSIONS = 10_000


def parse_extension_range(text: str) -> list[str]:
    """`100-149` or `100-104,200,300-301` -> the extensions, in order, without repeats.
    A range with leading zeros keeps its width (`001-003`)."""
    if not text.strip():
        raise ValueError(_("no extensions given (expected e.g. 100-149 or 100-104,200)"))
    result: dict[str, None] = {}
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"([0-9]+)(?:\s*-\s*([0-9]+))?", part)
        if match is None:
            raise ValueError(
                _("%(part)r is not an extension number or a range like 100-149") % {"part": part}
            )
        first, last = match.group(1), match.group(2) or match.group(1)
        low, high = int(first), int(last)
        if low > high:
            raise ValueError(_("range %(part)r runs backwards") % {"part": part})
        if len(last) > 64:
            raise ValueError(_("%(start)s... is too long for an extension") % {"start": last[:20]})
        if len(result) + high - low + 1 > MAX_EXTENSIONS:
            raise ValueError(
                _("%(text)r gives more than %(most)d extensions")
                % {"text": text.strip()[:40], "most": MAX_EXTENSIONS}
            )
        width = len(first) if first.startswith("0") and len(first) == len(last) else 0
        for number in range(low, high + 1):
            result[str(number).zfill(width)] = None
    return list(result)


def _extension_range(value: str) -> str:
    parse_extension_range(value)
    return value


def _metrics_listen(value: str) -> tuple[str, int] | None:
    from app.metrics import parse_listen  # the metrics room knows its address form

    return parse_listen(value)


def _audience(value: str) -> str:
    if value and not re.fullmatch(r"[\x21-\x7e]{1,200}", value):
        raise ValueError(
            _("%(value)r is not an audience (1-200 printable characters, no spaces)") % {"value": value[:40]}
        )
    return value


# --- who may see what (app/auth) ---

AUTH_MODES = ("none", "users", "proxy")
MIN_SECRET_KEY_BYTES = 32  # HMAC-SHA1/256 keys: shorter ones can be guessed offline from one cookie


def _auth(value: str) -> str:
    # Empty is the default, "none" said by nobody: the panel stays open on loopback only.
    # AUTH=none written out (environment or settings.env) is the admin's explicit choice.
    if value and value.lower() not in AUTH_MODES:
        raise ValueError(_("%(value)r is not one of none, users, proxy") % {"value": value})
    return value.lower()


def _secret_key(value: str) -> str:
    if value and len(value.encode()) < MIN_SECRET_KEY_BYTES:
        raise ValueError(
            ngettext(
                "is %(bytes)d byte, at least %(least)d needed; make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
                "is %(bytes)d bytes, at least %(least)d needed; make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
                len(value.encode()),
            )
            % {"bytes": len(value.encode()), "least": MIN_SECRET_KEY_BYTES}
        )
    return value


def _lifetime(value: str) -> int:
    # A minute at least (else a sign-in ends before the page loads), 30 days at most.
    if not value.isdigit() or not 60 <= int(value) <= 30 * 24 * 3600:
        raise ValueError(_("%(value)r is not a number of seconds (60-2592000)") % {"value": value})
    return int(value)


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                _("%(item)r is not an address or network like 10.0.0.5 or 10.0.0.0/24") % {"item": item}
            ) from None
    return tuple(networks)


def _header_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", value):
        raise ValueError(_("%(value)r is not an HTTP header name like Remote-User") % {"value": value})
    return value.lower()


def _optional_header_name(value: str) -> str:
    return _header_name(value) if value else ""


def _host_names(value: str) -> tuple[str, ...]:
    names = tuple(item.lower() for item in value.replace(",", " ").split())
    for name in names:
        bare = name[2:] if name.startswith("*.") else name
        if name != "*" and _bare_host(bare) is None:
            raise ValueError(
                _("%(name)r is not a host name (panel.example.com, *.example.com or *)") % {"name": name}
            )
    return names


# --- acting from the panel (app/actions.py) ---

ACTION_NAMES = ("call", "transfer", "attended", "pickup", "pause", "presence", "listen")


def _action_roles(value: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """`viewer=call,transfer;supervisor=...;admin=all`: what each role may do (a role left
    out may do nothing)."""
    from app.auth.users import ROLES  # the roles are the users file's

    roles: dict[str, frozenset[str]] = {}
    for part in filter(None, (p.strip() for p in value.split(";"))):
        role, sep, names = part.partition("=")
        role = role.strip()
        if not sep or role not in ROLES:
            raise ValueError(
                _("%(part)r is not ROLE=actions with ROLE one of %(roles)s")
                % {"part": part, "roles": ", ".join(ROLES)}
            )
        wanted = {n.strip() for n in names.split(",") if n.strip()}
        if "all" in wanted:
            wanted = set(ACTION_NAMES)
        if unknown := sorted(wanted - set(ACTION_NAMES)):
            raise ValueError(
                _("%(name)r is not an action (%(actions)s, all)")
                % {"name": unknown[0], "actions": ", ".join(ACTION_NAMES)}
            )
        roles[role] = frozenset(wanted)
    return tuple(roles.items())  # hashable, as every field of Settings


def _action_rate(value: str) -> int:
    # More than one a second for a minute is no person clicking.
    if not value.isdigit() or not 1 <= int(value) <= 60:
        raise ValueError(_("%(value)r is not a number of actions a minute (1-60)") % {"value": value})
    return int(value)


DEFAULT_ACTION_ROLES = (
    "viewer=call,transfer,attended,pickup,pause,presence;"
    "supervisor=call,transfer,attended,pickup,pause,presence,listen;admin=all"
)

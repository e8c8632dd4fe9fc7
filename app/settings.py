"""Every setting in one typed table, read once from `settings.env` and the environment.

The environment overrides the file; the file overrides the defaults here. A bad value
raises `SettingsError` naming the setting, which the CLI turns into one line and exit 2.
Keep `settings.env` and `SETTINGS` in step: a test checks that they agree.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from app.store.contract import check_prefix, parse_memcached_url

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "settings.env"


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def _text(value: str) -> str:
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{value!r} is not a TCP port (1-65535)")
    return int(value)


def _port_or_zero(value: str) -> int:
    return 0 if value == "0" else _port(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(f"{value!r} must be a number above 0")
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
        head, _, port = value.rpartition(":")
        if port.isdigit() and (host := _bare_host(head)) is not None:
            raise ValueError(
                f"{value!r} holds a port: write {host} here and put the port in {port_setting}={port}"
            )
        raise ValueError(f"{value!r} is not a host name or address (IPv6 as is: fd00::5)")

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
        raise ValueError(f"{value!r} is not a comma-separated list of AMI event classes")
    return value


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{value!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return level


def _tenant_pattern(value: str) -> str:
    """A regular expression matched on the whole context, whose first group is the firm
    (FreePBX multi-tenant: from-internal-(.+)); "" for one firm."""
    if not value:
        return value
    try:
        pattern = re.compile(value)
    except re.error as error:
        raise ValueError(f"{value!r} is not a regular expression ({error})") from None
    if pattern.groups < 1:
        raise ValueError(f"{value!r} has no group: put the firm's part in ( ), e.g. from-internal-(.+)")
    return value


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise ValueError(f"{value!r} is not a number of workers (1-64)")
    return int(value)


_TRUE_WORDS = ("on", "yes", "true", "1")
_FALSE_WORDS = ("off", "no", "false", "0")


def _on_off(value: str) -> bool:
    """Every boolean setting: on/off, and the usual yes/no, true/false, 1/0 (any case)."""
    word = value.lower()
    if word not in _TRUE_WORDS + _FALSE_WORDS:
        raise ValueError(f"{value!r} is not on or off (yes/no, true/false, 1/0 work too)")
    return word in _TRUE_WORDS


# The only keywords frame-ancestors knows (CSP 3). Unquoted, `self` is a host named "self":
# the browser then matches no origin at all, and the header blocks every embed, ours too.
_CSP_KEYWORDS = ("'self'", "'none'")


def _frame_ancestors(value: str) -> str:
    # Goes into a header: one CSP source list, nothing that could end or split it.
    if not re.fullmatch(r"[A-Za-z0-9'*:/.\- ]{1,500}", value) or not value.strip():
        raise ValueError(f"{value!r} is not a CSP source list like 'self' https://crm.example.com")
    sources = value.split()
    for source in sources:
        if source.lower() in ("self", "none"):
            keyword = f"'{source.lower()}'"
            raise ValueError(
                f'{source} must be quoted: {keyword} (in a shell or systemd: FRAME_ANCESTORS="{keyword}"); '
                "unquoted it is a host name and blocks every embed"
            )
        if "'" in source and source.lower() not in _CSP_KEYWORDS:
            raise ValueError(f"{source} is not a CSP keyword of frame-ancestors ('self' or 'none')")
    if len(sources) > 1 and "'none'" in (source.lower() for source in sources):
        raise ValueError("'none' stands alone: with other sources the browser ignores it")
    return " ".join(sources)


def _root_path(value: str) -> str:
    if value and not re.fullmatch(r"(/[A-Za-z0-9_.\-]+)+", value):
        raise ValueError(f"{value!r} must be empty or a path like /blf (no trailing slash)")
    return value


def _lease_ttl(value: str) -> int:
    if not value.isdigit() or not 2 <= int(value) <= 300:
        raise ValueError(f"{value!r} is not a whole number of seconds (2-300)")
    return int(value)


def _send_buffer(value: str) -> int:
    # Below 16 KiB a tile message of a big panel goes out in many small pieces; above
    # 16 MiB, 5,000 viewers that stop reading could hold 80 GB.
    if not value.isdigit() or not 16_384 <= int(value) <= 16_777_216:
        raise ValueError(f"{value!r} is not a number of bytes (16384-16777216)")
    return int(value)


def _title(value: str) -> str:
    if not 1 <= len(value) <= 80:
        raise ValueError("must be 1 to 80 characters")
    return value


# The most extensions a range may name (the demo PBX and `simulate` take one).
MAX_EXTENSIONS = 10_000


def parse_extension_range(text: str) -> list[str]:
    """`100-149` or `100-104,200,300-301` -> the extensions, in order, without repeats.
    A range with leading zeros keeps its width (`001-003`)."""
    if not text.strip():
        raise ValueError("no extensions given (expected e.g. 100-149 or 100-104,200)")
    result: dict[str, None] = {}
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"([0-9]+)(?:\s*-\s*([0-9]+))?", part)
        if match is None:
            raise ValueError(f"{part!r} is not an extension number or a range like 100-149")
        first, last = match.group(1), match.group(2) or match.group(1)
        low, high = int(first), int(last)
        if low > high:
            raise ValueError(f"range {part!r} runs backwards")
        if len(last) > 64:
            raise ValueError(f"{last[:20]}... is too long for an extension")
        if len(result) + high - low + 1 > MAX_EXTENSIONS:
            raise ValueError(f"{text.strip()[:40]!r} gives more than {MAX_EXTENSIONS} extensions")
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
        raise ValueError(f"{value[:40]!r} is not an audience (1-200 printable characters, no spaces)")
    return value


# --- who may see what (app/auth) ---

AUTH_MODES = ("none", "users", "proxy")
MIN_SECRET_KEY_BYTES = 32  # HMAC-SHA1/256 keys: shorter ones can be guessed offline from one cookie


def _auth(value: str) -> str:
    # Empty is the default, "none" said by nobody: the panel stays open on loopback only.
    # AUTH=none written out (environment or settings.env) is the admin's explicit choice.
    if value and value.lower() not in AUTH_MODES:
        raise ValueError(f"{value!r} is not one of none, users, proxy")
    return value.lower()


def _secret_key(value: str) -> str:
    if value and len(value.encode()) < MIN_SECRET_KEY_BYTES:
        raise ValueError(
            f"is {len(value.encode())} bytes, at least {MIN_SECRET_KEY_BYTES} needed; make one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


def _lifetime(value: str) -> int:
    # A minute at least (else a sign-in ends before the page loads), 30 days at most.
    if not value.isdigit() or not 60 <= int(value) <= 30 * 24 * 3600:
        raise ValueError(f"{value!r} is not a number of seconds (60-2592000)")
    return int(value)


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an address or network like 10.0.0.5 or 10.0.0.0/24") from None
    return tuple(networks)


def _header_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", value):
        raise ValueError(f"{value!r} is not an HTTP header name like Remote-User")
    return value.lower()


def _host_names(value: str) -> tuple[str, ...]:
    names = tuple(item.lower() for item in value.replace(",", " ").split())
    for name in names:
        bare = name[2:] if name.startswith("*.") else name
        if name != "*" and _bare_host(bare) is None:
            raise ValueError(f"{name!r} is not a host name (panel.example.com, *.example.com or *)")
    return names


def check_auth(settings: Settings) -> None:
    """What one AUTH mode needs from the other settings (SettingsError naming the missing one)."""
    if settings.auth in ("users", "proxy") and not settings.secret_key:
        raise SettingsError(
            "SECRET_KEY",
            f"required with AUTH={settings.auth}; make one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    if settings.auth == "users" and not settings.users_file:
        raise SettingsError("USERS_FILE", "required with AUTH=users (blf-panel user add NAME creates it)")
    if settings.auth == "proxy" and not settings.trusted_proxies:
        raise SettingsError("TRUSTED_PROXIES", "required with AUTH=proxy: the proxy's address(es)")
    if settings.auth == "proxy" and not settings.proxy_scopes_file:
        raise SettingsError("PROXY_SCOPES_FILE", "required with AUTH=proxy: which group sees what")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str
    parse: Callable[[str], Any]


SETTINGS: tuple[Setting, ...] = (
    Setting("AMI_HOST", "", "host name or address of the PBX; empty: the demo PBX", _host_of("AMI_PORT")),
    Setting("AMI_PORT", "5038", "AMI TCP port", _port),
    Setting("AMI_USERNAME", "blf", "AMI user (manager.conf section)", _text),
    Setting("AMI_SECRET", "blfsecret", "AMI secret of that user", _text),
    Setting("AMI_EVENTS", "call,agent,system", "AMI event classes asked for at login", _ami_events),
    Setting("AMI_PING_INTERVAL", "5", "seconds between pings that check the PBX", _positive_float),
    Setting("AMI_PING_TIMEOUT", "3", "seconds a ping may take before the link is dead", _positive_float),
    Setting("AMI_RECONNECT_MAX", "30", "longest wait between reconnect attempts (s)", _positive_float),
    Setting("AMI_AUTH_RETRY", "60", "wait after a refused login before trying again (s)", _positive_float),
    Setting("AMI_BOOT_WAIT", "60", "longest wait for a starting PBX to finish booting (s)", _positive_float),
    Setting("MEMCACHED_URL", "", "memcached://HOST:PORT; empty keeps states in-process", _memcached_url),
    Setting("STORE_PREFIX", "blf:", "prefix of every memcached key", _prefix),
    Setting("STORE_TIMEOUT", "1", "seconds a memcached call may take", _positive_float),
    Setting("PUBLISH_WINDOW", "0.05", "seconds between published versions at most", _non_negative_float),
    Setting("DEMO_EXTENSIONS", "100-149", "extensions of the demo PBX", _extension_range),
    Setting("DEMO_CHURN", "2", "state changes per second on the demo PBX", _non_negative_float),
    Setting("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR", _log_level),
    Setting("HOST", "127.0.0.1", "address `blf-panel serve` listens on, no port", _host_of("PORT")),
    Setting("PORT", "8000", "port `blf-panel serve` listens on", _port),
    Setting("WORKERS", "1", "web worker processes (more than 1 needs MEMCACHED_URL)", _workers),
    Setting("COLLECTOR", "on", "on: this host may hold the AMI connection; off: web only", _on_off),
    Setting("ROOT_PATH", "", "path prefix behind a proxy, e.g. /blf", _root_path),
    Setting("FRAME_ANCESTORS", "'self'", "who may embed the panel (CSP, 'self' quoted)", _frame_ancestors),
    Setting("PANEL_TITLE", "Extensions", "title of the panel page", _title),
    Setting("STORE_POLL", "0.01", "seconds between checks of the version key", _positive_float),
    Setting("HEARTBEAT", "5", "seconds between keep-alive messages to viewers", _positive_float),
    Setting("SEND_TIMEOUT", "10", "seconds a viewer may block a send before it is dropped", _positive_float),
    Setting("SEND_BUFFER", "65536", "bytes a viewer may have unsent before its sends block", _send_buffer),
    Setting("LEASE_TTL", "4", "seconds the collector lease lives unless renewed", _lease_ttl),
    Setting("DIRECTORY_FILE", "", "CSV exten,name,group of names and groups (empty: none)", _text),
    Setting("SHOW_CALLER_NUMBERS", "on", "off hides outside callers' numbers on the tiles", _on_off),
    Setting("TENANT_FROM_CONTEXT", "", "regex on the hint's context; group 1 is the firm", _tenant_pattern),
    Setting("METRICS_LISTEN", "", "PORT or HOST:PORT of Prometheus /metrics; empty: off", _metrics_listen),
    Setting("AUTH", "", "who may see the panel: none, users or proxy (empty: none, loopback only)", _auth),
    Setting("USERS_FILE", "", "users file of AUTH=users (blf-panel user add NAME)", _text),
    Setting("SECRET_KEY", "", "signs sessions; 32 bytes or more, required unless AUTH=none", _secret_key),
    Setting("SESSION_LIFETIME", "43200", "seconds a sign-in lasts", _lifetime),
    Setting("TRUSTED_PROXIES", "", "addresses/networks of the proxy of AUTH=proxy", _networks),
    Setting("PROXY_USER_HEADER", "Remote-User", "header naming the user (AUTH=proxy)", _header_name),
    Setting(
        "PROXY_GROUPS_HEADER", "Remote-Groups", "header listing the user's groups (AUTH=proxy)", _header_name
    ),
    Setting("PROXY_SCOPES_FILE", "", "file mapping groups to role and scope (AUTH=proxy)", _text),
    Setting("ALLOWED_HOSTS", "", "host names the panel answers to, besides loopback ones", _host_names),
    Setting("EMBED_SECRET", "", "key of signed embed links (32+ bytes); empty: off", _secret_key),
    Setting("EMBED_SECRET_PREVIOUS", "", "the key before EMBED_SECRET, still accepted", _secret_key),
    Setting("EMBED_AUDIENCE", "", "the aud an embed link must carry; empty: none", _audience),
)


@dataclass(frozen=True)
class Settings:
    """The parsed settings; built once by `load_settings` and passed down."""

    ami_host: str
    ami_port: int
    ami_username: str
    ami_secret: str
    ami_events: str
    ami_ping_interval: float
    ami_ping_timeout: float
    ami_reconnect_max: float
    ami_auth_retry: float
    ami_boot_wait: float
    memcached_url: str
    store_prefix: str
    store_timeout: float
    publish_window: float
    demo_extensions: str
    demo_churn: float
    log_level: str
    host: str
    port: int
    workers: int
    collector: bool
    root_path: str
    frame_ancestors: str
    panel_title: str
    store_poll: float
    heartbeat: float
    send_timeout: float
    send_buffer: int
    lease_ttl: int
    directory_file: str
    show_caller_numbers: bool
    tenant_from_context: str
    metrics_listen: tuple[str, int] | None
    auth: str
    users_file: str
    secret_key: str
    session_lifetime: int
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    proxy_user_header: str
    proxy_groups_header: str
    proxy_scopes_file: str
    allowed_hosts: tuple[str, ...]
    embed_secret: str
    embed_secret_previous: str
    embed_audience: str

    @property
    def demo(self) -> bool:
        return not self.ami_host

    @property
    def auth_mode(self) -> str:
        """none, users or proxy; `auth` itself is "" when nobody said (none, loopback only)."""
        return self.auth or "none"


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines; `#` starts a comment line; double quotes around a value are
    removed (single quotes stay: CSP needs them, as in FRAME_ANCESTORS='self')."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"{path.name} line {number}", f"expected NAME=value, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values[name.strip()] = value
    return values


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = SETTINGS_FILE
) -> Settings:
    """Defaults, then `settings.env`, then the environment."""
    environ = os.environ if environ is None else environ
    from_file = read_env_file(env_file) if env_file is not None else {}
    parsed: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name, from_file.get(setting.name, setting.default))
        try:
            parsed[setting.name.lower()] = setting.parse(raw.strip())
        except ValueError as error:
            raise SettingsError(setting.name, str(error)) from None
    names = {f.name for f in fields(Settings)}
    assert names == set(parsed), "Settings and SETTINGS disagree"
    settings = Settings(**parsed)
    check_auth(settings)
    return settings

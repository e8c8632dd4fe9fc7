"""Every setting in one typed table, read once from `settings.env` and the environment.

The environment overrides the file; the file overrides the defaults here. A bad value
raises `SettingsError` naming the setting, which the CLI turns into one line and exit 2.
Keep `settings.env` and `SETTINGS` in step: a test checks that they agree.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from app.i18n import _
from app.setting_values import (  # noqa: F401 - re-exported: the public names of settings
    _CSP_KEYWORDS,
    _FALSE_WORDS,
    _HOST_NAME_RE,
    _TRUE_WORDS,
    ACTION_NAMES,
    AUTH_MODES,
    DEFAULT_ACTION_ROLES,
    MAX_EXTENSIONS,
    MIN_SECRET_KEY_BYTES,
    _action_rate,
    _action_roles,
    _ami_events,
    _audience,
    _auth,
    _bare_host,
    _extension_range,
    _frame_ancestors,
    _header_name,
    _host_names,
    _host_of,
    _language,
    _lease_ttl,
    _lifetime,
    _log_level,
    _memcached_url,
    _metrics_listen,
    _networks,
    _non_negative_float,
    _on_off,
    _optional_header_name,
    _port,
    _port_or_zero,
    _positive_float,
    _prefix,
    _root_path,
    _secret_key,
    _send_buffer,
    _tenant_pattern,
    _text,
    _title,
    _workers,
    parse_extension_range,
)

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "settings.env"


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def check_auth(settings: Settings) -> None:
    """What one AUTH mode needs from the other settings (SettingsError naming the missing one)."""
    if settings.auth in ("users", "proxy") and not settings.secret_key:
        raise SettingsError(
            "SECRET_KEY",
            _(
                "required with AUTH=%(auth)s; make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
            % {"auth": settings.auth},
        )
    if settings.auth == "users" and not settings.users_file:
        raise SettingsError("USERS_FILE", _("required with AUTH=users (blf-panel user add NAME creates it)"))
    if settings.auth == "proxy" and not settings.trusted_proxies:
        raise SettingsError("TRUSTED_PROXIES", _("required with AUTH=proxy: the proxy's address(es)"))
    if settings.auth == "proxy" and not settings.proxy_scopes_file:
        raise SettingsError("PROXY_SCOPES_FILE", _("required with AUTH=proxy: which group sees what"))


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
    Setting("LANGUAGE", "", "en or ru; empty: each browser's Accept-Language (else en)", _language),
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
    Setting(
        "PROXY_EXTENSION_HEADER",
        "",
        "header naming the user's own extension, to act from the panel (AUTH=proxy); empty: none",
        _optional_header_name,
    ),
    Setting("ALLOWED_HOSTS", "", "host names the panel answers to, besides loopback ones", _host_names),
    Setting("EMBED_SECRET", "", "key of signed embed links (32+ bytes); empty: off", _secret_key),
    Setting("EMBED_SECRET_PREVIOUS", "", "the key before EMBED_SECRET, still accepted", _secret_key),
    Setting("EMBED_AUDIENCE", "", "the aud an embed link must carry; empty: none", _audience),
    Setting("ACTIONS", "off", "on: signed-in users may act from the panel (POST /actions/...)", _on_off),
    Setting("AMI_ACTION_USERNAME", "blf-actions", "AMI user of the actions (write access)", _text),
    Setting("AMI_ACTION_SECRET", "", "AMI secret of the actions' user", _text),
    Setting(
        "ACTION_IDLE_TIMEOUT", "60", "seconds the actions' AMI session stays open unused", _positive_float
    ),
    Setting("ACTION_RATE", "20", "actions a user may send a minute", _action_rate),
    Setting(
        "ACTION_ROLES", DEFAULT_ACTION_ROLES, "what each role may do: role=action,...;...", _action_roles
    ),
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
    language: str
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
    proxy_extension_header: str
    allowed_hosts: tuple[str, ...]
    embed_secret: str
    embed_secret_previous: str
    embed_audience: str
    actions: bool
    ami_action_username: str
    ami_action_secret: str
    action_idle_timeout: float
    action_rate: int
    action_roles: tuple[tuple[str, frozenset[str]], ...]

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
            raise SettingsError(
                f"{path.name} line {number}", _("expected NAME=value, got %(line)r") % {"line": line}
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values[name.strip()] = value
    return values


def raw_values(
    environ: Mapping[str, str] | None = None, env_file: Path | None = SETTINGS_FILE
) -> dict[str, str]:
    """The settings' text as `load_settings` reads it (the environment over `settings.env`),
    unchecked, and an unreadable file read as empty: for what is needed before the settings are
    checked, the CLI's language (that of their error messages)."""
    environ = os.environ if environ is None else environ
    try:
        from_file = read_env_file(env_file) if env_file is not None else {}
    except (SettingsError, OSError, UnicodeDecodeError):
        from_file = {}  # load_settings reports it, in the language found without it
    return {**from_file, **environ}


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

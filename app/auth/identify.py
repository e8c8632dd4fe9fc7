"""The door: `identify` is the one function that says who makes a request (session,
proxy headers or embed token) and what they may see; `Door` runs it before every route
and the /events fast path calls it too. Do not break: no route runs without
`state["user"]` and `state["scope"]` set by `identify`, and a denied request gets no data.
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.proxy import ProxyDenied, ProxyUsers
from app.auth.sessions import SessionCodec
from app.auth.throttle import Throttle
from app.auth.users import User, UsersFile
from app.i18n import LANGUAGES, N_, negotiate
from app.said import Said
from app.scope import ALL
from app.settings import Settings

log = logging.getLogger(__name__)

# AUTH=none: everyone sees everything, and may do what a viewer may (no actions).
ANONYMOUS = User("", "viewer", ALL, None)
OPEN_PATHS = ("/healthz", "/signin")  # and /static/: the sign-in page needs its CSS
TOKEN_PATHS = ("/embed", "/events")
STREAM_PATHS = ("/embed", "/events")  # and /api/: answered 401, never redirected

# Who the current request is, for the templates (the sign-out button): (user, csrf token).
visitor: contextvars.ContextVar[tuple[User, str] | None] = contextvars.ContextVar("visitor", default=None)

FORBIDDEN = N_("Forbidden.")
NOT_SIGNED_IN = N_("Not signed in.")
CROSS_SITE = N_("Forbidden: cross-site request.")
# A refused embed link's sentence is tokens.py's (TokenRejected.message): translated in `said`.


class Denied(Exception):
    """`message`: English, as marked (N_) where written; translated where it is sent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Auth:
    """The door's parts for one app, built once from the settings."""

    settings: Settings
    users: UsersFile | None = None
    proxy: ProxyUsers | None = None
    codec: SessionCodec | None = None
    throttle: Throttle = field(default_factory=Throttle)

    @classmethod
    def from_settings(cls, settings: Settings) -> Auth:
        auth = cls(settings)
        if settings.auth_mode == "users":
            auth.users = UsersFile(settings.users_file)
            auth.users.current()  # a bad line is logged at start, not at the first sign-in
        if settings.auth_mode == "proxy":
            auth.proxy = ProxyUsers(
                settings.proxy_scopes_file,
                settings.trusted_proxies,
                settings.proxy_user_header,
                settings.proxy_groups_header,
                settings.proxy_extension_header,
            )
            auth.proxy.grants.current()
        if settings.secret_key:
            auth.codec = SessionCodec(settings.secret_key, settings.session_lifetime)
        return auth


def route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def request_language(scope: Scope, configured: str) -> str:
    """The language of a request's words: a stream's `?lang=` (its page's, app.main), else
    `configured` (LANGUAGE), else the browser's Accept-Language (i18n.negotiate)."""
    asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("lang", [""])[0]
    if asked in LANGUAGES:
        return asked
    accept = next((value for name, value in scope.get("headers", ()) if name == b"accept-language"), b"")
    return negotiate(accept.decode("latin-1"), configured)


def said(scope: Scope, configured: str, message: str) -> str:
    """`message` (an English sentence marked N_ where written) in the request's language."""
    return Said(message).in_(request_language(scope, configured))


def peer_of(scope: Scope) -> str:
    """The address of the TCP peer (`Panel` records it before uvicorn's proxy headers could
    have replaced `client` with an X-Forwarded-For value), else the client address."""
    peer = scope.get("blf.peer") or scope.get("client") or ("", 0)
    return str(peer[0])


def identify(scope: Scope, auth: Auth) -> User:
    """Who makes this request; Denied (401/403, with a plain message) when nobody may.
    An embed link's token (`?token=` on /embed and /events) is the authority there,
    whatever the session; else AUTH says: everyone, the session's user, the proxy's."""
    path = route_path(scope)
    if path in TOKEN_PATHS and b"token=" in scope.get("query_string", b""):
        tokens = parse_qs(scope["query_string"].decode("latin-1")).get("token")
        if tokens:
            return _embed_user(tokens[0], scope, auth)
    mode = auth.settings.auth_mode
    if mode == "none":
        return ANONYMOUS
    if mode == "proxy":
        assert auth.proxy is not None
        try:
            return auth.proxy.identify(scope["headers"], peer_of(scope))
        except ProxyDenied as denied:
            log.warning("AUTH=proxy: %s %s refused (%d): %s", scope["method"], path, denied.status, denied)
            raise Denied(denied.status, FORBIDDEN if denied.status == 403 else NOT_SIGNED_IN) from None
    user, _ = session_user(scope, auth)
    if user is None:
        raise Denied(401, NOT_SIGNED_IN)
    return user


def session_user(scope: Scope, auth: Auth) -> tuple[User | None, str]:
    """The signed-in user of the session cookie (None when nobody, expired, removed or
    the password changed since), and the session's CSRF token."""
    assert auth.codec is not None and auth.users is not None
    session = auth.codec.load(scope)
    csrf = str(session.get("csrf", ""))
    name, signed_at = session.get("user"), session.get("at")
    if not isinstance(name, str) or not isinstance(signed_at, (int, float)):
        return None, csrf
    if time.time() - signed_at > auth.settings.session_lifetime:  # from the sign-in, not sliding
        return None, csrf
    account = auth.users.account(name)
    if account is None or session.get("pw") != account.stamp(auth.settings.secret_key):
        return None, csrf
    return account.user, csrf


def _embed_user(token: str, scope: Scope, auth: Auth) -> User:
    from app.auth.tokens import TokenRejected, scope_from_token  # part C's room

    try:
        return User("embed", "viewer", scope_from_token(token, auth.settings), None)  # type: ignore[arg-type]
    except TokenRejected as rejected:
        log.warning("embed token from %s refused: %s", peer_of(scope), rejected.reason)
        raise Denied(403, rejected.message) from None


def denied_response(denied: Denied, scope: Scope, auth: Auth) -> Response:
    """A page asked without a session goes to the sign-in page (303); the streams, the
    embed and the API get the status and one plain sentence, never data."""
    path = route_path(scope)
    page = path not in STREAM_PATHS and not path.startswith("/api/") and scope["method"] in ("GET", "HEAD")
    if denied.status == 401 and page and auth.settings.auth_mode == "users":
        return RedirectResponse(f"{scope.get('root_path', '')}/signin", status_code=303)
    message = said(scope, auth.settings.language, denied.message)
    return PlainTextResponse(message, status_code=denied.status, headers={"Cache-Control": "no-store"})


def admit(scope: Scope, user: User) -> None:
    """The contract with the routes: `request.state.user` and `request.state.scope`."""
    state = scope.setdefault("state", {})
    state["user"], state["scope"] = user, user.scope


def _cross_origin(scope: Scope) -> bool:
    """A form sent from another site (Origin names another host than Host)."""
    headers = dict(scope["headers"])
    origin, host = headers.get(b"origin"), headers.get(b"host")
    return origin is not None and (
        origin == b"null" or urlsplit(origin.decode("latin-1")).netloc.encode() != host
    )


class Door:
    """Runs `identify` before every route but the open ones (health, sign-in, static)."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if scope["method"] not in ("GET", "HEAD") and _cross_origin(scope):
            log.warning(
                "%s %s from %s refused: a form sent from another site", scope["method"], path, peer_of(scope)
            )
            refused = said(scope, self.auth.settings.language, CROSS_SITE)
            await PlainTextResponse(refused, status_code=403)(scope, receive, send)
            return
        if path in OPEN_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        try:
            user = identify(scope, self.auth)
        except Denied as denied:
            await denied_response(denied, scope, self.auth)(scope, receive, send)
            return
        admit(scope, user)
        csrf = (
            str(scope.get("session", {}).get("csrf", "")) if self.auth.settings.auth_mode == "users" else ""
        )
        token = visitor.set((user, csrf))
        try:
            await self.app(scope, receive, send)
        finally:
            visitor.reset(token)

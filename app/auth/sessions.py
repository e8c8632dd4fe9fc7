"""The signed session cookie: Starlette's SessionMiddleware writes it (Secure when the
request came over TLS), `SessionCodec` reads the same cookie where no middleware runs
(the /events fast path). Do not break: both use one signer and one format.
"""

from __future__ import annotations

import json
from base64 import b64decode
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any

import itsdangerous
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "blf_session"


class SessionCodec:
    """Reads the cookie exactly as SessionMiddleware 1.x does (base64 JSON, TimestampSigner)."""

    def __init__(self, secret_key: str, max_age: int) -> None:
        self.signer = itsdangerous.TimestampSigner(str(secret_key))
        self.max_age = max_age

    def load(self, scope: Scope) -> Mapping[str, Any]:
        """The session of this request: the middleware's, else the cookie's; {} if none."""
        if "session" in scope:
            return scope["session"]  # type: ignore[no-any-return]
        for name, value in scope["headers"]:
            if name == b"cookie":
                morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
                if morsel is not None:
                    return self._decode(morsel.value)
        return {}

    def _decode(self, cookie: str) -> Mapping[str, Any]:
        try:
            data = json.loads(b64decode(self.signer.unsign(cookie.encode(), max_age=self.max_age)))
        except (itsdangerous.BadSignature, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


class Sessions:
    """SessionMiddleware with `Secure` on the cookie when the request came over https
    (uvicorn takes the scheme from X-Forwarded-Proto of a trusted proxy): one middleware
    per answer, as its flags are fixed at construction."""

    def __init__(self, app: ASGIApp, secret_key: str, max_age: int) -> None:
        options: dict[str, Any] = {"session_cookie": COOKIE, "max_age": max_age, "same_site": "lax"}
        self.plain = SessionMiddleware(app, secret_key, https_only=False, **options)
        self.tls = SessionMiddleware(app, secret_key, https_only=True, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = self.tls if scope.get("scheme") in ("https", "wss") else self.plain
        await chosen(scope, receive, send)

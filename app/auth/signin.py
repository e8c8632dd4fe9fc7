"""AUTH=users: the sign-in page, sign-in and sign-out, and the CSRF token every form of
ours carries. Do not break: a failed sign-in says the same whether the name exists, a
throttled one checks no password, and no password reaches a log line.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth.identify import Auth, peer_of, request_language, session_user
from app.auth.users import check_password
from app.i18n import N_
from app.said import Said
from app.schema import MAX_NAME, clean_text

log = logging.getLogger(__name__)

CSRF_FIELD = "csrf"
WRONG = N_("Wrong name or password.")
THROTTLED = N_("Too many failed sign-ins: try again in %(seconds)d s.")
EXPIRED_FORM = N_("The form has expired or did not come from this panel: reload the page and try again.")


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (also before sign-in: the sign-in form
    carries one, so no other site can sign a browser in as someone else)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def checked_form(request: Request) -> FormData:
    """The posted form, 403 unless it carries this session's CSRF token."""
    form = await request.form(max_files=0, max_fields=8, max_part_size=4096)
    sent, expected = form.get(CSRF_FIELD), request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        log.warning(
            "%s %s from %s refused: CSRF token missing or wrong",
            request.method,
            request.url.path,
            peer_of(request.scope),
        )
        raise HTTPException(403, EXPIRED_FORM)  # app.main's error page translates it
    return form


def _page(
    request: Request,
    status: int = 200,
    message: str = "",
    name: str = "",
    headers: dict[str, str] | None = None,
    **values: object,
) -> Response:
    """The sign-in page in the request's language: `message` (marked N_) translated and
    filled with `values`."""
    renderer = request.app.state.hub.renderer
    lang = request_language(request.scope, request.app.state.settings.language)
    html = renderer.page(
        "signin.html",
        lang,
        csrf=csrf_token(request),
        message=Said(message, **values).in_(lang),
        user_name=name,
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


async def signin_page(request: Request) -> Response:
    return _page(request)


async def signin(request: Request) -> Response:
    auth: Auth = request.app.state.auth
    assert auth.users is not None
    form = await checked_form(request)
    name = clean_text(str(form.get("name", "")), MAX_NAME)
    password = str(form.get("password", ""))
    address = peer_of(request.scope)
    keys = (f"user:{name.casefold()}", f"addr:{address}")
    wait = auth.throttle.wait(*keys)
    if wait > 0:
        # Refused unchecked, right or wrong: the answer tells nothing about the password.
        log.warning(
            "sign-in as %r from %s refused unchecked: too many failures, %.0f s to wait", name, address, wait
        )
        seconds = max(1, round(wait))
        return _page(request, 429, THROTTLED, name, {"Retry-After": str(seconds)}, seconds=seconds)
    account = auth.users.account(name)
    # argon2 takes ~50 ms of CPU: off the event loop, or every viewer's stream waits for it.
    if not await asyncio.to_thread(check_password, account, password):
        auth.throttle.failed(*keys)
        log.warning("failed sign-in as %r from %s", name, address)
        return _page(request, 401, WRONG, name)
    assert account is not None
    auth.throttle.succeeded(keys[0])
    request.session.clear()  # a new session: nothing from before the sign-in carries over
    request.session.update(
        user=account.user.name,
        pw=account.stamp(auth.settings.secret_key),
        at=time.time(),
        csrf=secrets.token_urlsafe(32),
    )
    log.info("signed in: %s (%s) from %s", account.user.name, account.user.role, address)
    return RedirectResponse("./", status_code=303)


async def signout(request: Request) -> Response:
    auth: Auth = request.app.state.auth
    await checked_form(request)
    user, _ = session_user(request.scope, auth)
    request.session.clear()
    log.info("signed out: %s from %s", user.name if user else "(expired session)", peer_of(request.scope))
    return RedirectResponse("signin", status_code=303)


ROUTES = [
    Route("/signin", signin_page, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
]

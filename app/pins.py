"""A viewer's pinned colleagues: the few they transfer to most, shown first on the panel,
and the only ones whose changes their screen reader announces.

Kept in a cookie of the browser (no account needed, none of the server's state), or given
in the URL (`?pins=101,105`, for a wallboard or a bookmark). Pinning is a form POST that
sets the cookie and sends the browser back: no script. The Door refuses a POST from
another site (its Origin), so no other page can change a viewer's pins.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth.identify import said
from app.i18n import N_
from app.states import EXTEN_RE

COOKIE = "blf-pins"
MAX_PINS = 12  # a row or two of tiles: the colleagues one transfers to most, not a second panel
SEPARATOR = "~"  # not in an extension (EXTEN_RE), and a cookie may hold it as it is
YEAR = 365 * 24 * 3600
NOT_AN_EXTENSION = N_("Choose a colleague's extension to pin.")


def parse_pins(raw: str | None, separator: str = SEPARATOR) -> tuple[str, ...]:
    """Pins as written (cookie or URL): valid extensions only, each once, at most MAX_PINS;
    anything else is dropped (the cookie is the browser's: it may be old or edited)."""
    if not raw or len(raw) > 40 * MAX_PINS:
        return ()
    pins = dict.fromkeys(p for p in raw.split(separator) if EXTEN_RE.fullmatch(p))
    return tuple(pins)[:MAX_PINS]


def pins_of(request: Request) -> tuple[str, ...]:
    """The request's pins: the URL's `pins` when given (a wallboard's), else the cookie's."""
    if "pins" in request.query_params:
        return parse_pins(request.query_params["pins"], ",")
    return parse_pins(request.cookies.get(COOKIE))


def toggled(pins: tuple[str, ...], exten: str) -> tuple[str, ...]:
    """`exten` pinned (at the end) or unpinned; the oldest pin goes when there are too many."""
    if exten in pins:
        return tuple(p for p in pins if p != exten)
    return (*pins, exten)[-MAX_PINS:]


async def toggle(request: Request) -> Response:
    """POST /pins, `exten=105`: pin or unpin 105, then back to the page the form was on."""
    form = await request.form(max_files=0, max_fields=4, max_part_size=256)
    exten = str(form.get("exten", ""))
    if not EXTEN_RE.fullmatch(exten):
        message = said(request.scope, request.app.state.settings.language, NOT_AN_EXTENSION)
        return PlainTextResponse(message, status_code=400)
    pins = toggled(parse_pins(request.cookies.get(COOKIE)), exten)
    response = RedirectResponse(_back(request), status_code=303)
    response.set_cookie(
        COOKIE,
        SEPARATOR.join(pins),
        max_age=YEAR if pins else 0,
        path=request.scope.get("root_path") or "/",
        httponly=True,
        samesite="lax",
    )
    return response


def _back(request: Request) -> str:
    """The page the form was on (the Referer, when it is ours), else the panel."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and referer.netloc == request.headers.get("host") and referer.path.startswith("/"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "./"


ROUTES = [Route("/pins", toggle, methods=["POST"])]

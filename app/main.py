"""The Starlette app: the lifespan wires store, collector and hub; routes serve the page,
the embed, the event stream, the snapshot API and the health check.

Every URL the pages contain is relative, so the app works under any path prefix.
Nothing from the request reaches the store or a template unchecked.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.actions import PRESENCES, Actions
from app.auth.identify import Auth, Denied, Door, admit, denied_response, identify, route_path, visitor
from app.auth.identify import request_language as language_of_request
from app.auth.sessions import Sessions
from app.auth.signin import ROUTES as SIGNIN_ROUTES
from app.auth.signin import csrf_token
from app.directory import group_slug
from app.hub import Hub
from app.i18n import LANGUAGES, N_, translations
from app.look import PIN, Look
from app.metrics import Metrics, forget_process
from app.pins import ROUTES as PIN_ROUTES
from app.pins import pins_of
from app.queues import QUEUE_RE
from app.runtime import lead_or_follow, lease_owner, running_collector, store_from
from app.said import Said
from app.scope import ALL as SEE_ALL
from app.scope import Scope as UserScope
from app.scope import scoped_snapshot
from app.settings import Settings, load_settings
from app.sse import EventStream, Viewers, encode, end_streams_at_shutdown, event_stream
from app.states import EXTEN_RE
from app.store import MemoryStore, StoreError
from app.tasks import Health, background, supervise
from app.tiles import PRESENCE_LABELS, Renderer
from app.transport import DescriptorWatch, transport_of
from app.view import View, serves

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_VIEW_EXTENSIONS = 500
MAX_VIEW_PARAM = 4000
MAX_QUERY = 40
GROUP_SLUG = re.compile(r"[a-z0-9._\-]{1,40}")
PRESENCE_CHOICES = [(state, PRESENCE_LABELS[state]) for state in PRESENCES]  # me.html's menu


# Starlette's own details (http.HTTPStatus phrases) that reach an error page.
STARLETTE_DETAILS = (N_("Not Found"), N_("Method Not Allowed"))
DEFAULT_TITLE = N_("Extensions")  # PANEL_TITLE's default (app/settings.py)


def panel_title(title: str, lang: str) -> str:
    """PANEL_TITLE as a page in `lang` shows it: the default in that language, any other
    as the sysadmin wrote it."""
    return translations(lang).gettext(title) if title == DEFAULT_TITLE else title


class BadView(ValueError):
    """A malformed or over-long view in the URL: `message` English (marked N_), filled with
    `values`; said in the reader's language on the error page."""

    def __init__(self, message: str, **values: object) -> None:
        self.said = Said(message, **values)
        super().__init__(self.said)


def user_scope(request: Request) -> UserScope:
    """What the request may see: set by the sign-in (or an embed token) before any route
    runs; everything only where nothing set it (AUTH=none)."""
    return getattr(request.state, "scope", SEE_ALL)


def parse_view(request: Request, *, wallboard: bool = False) -> View:
    """`?ext=101,102`, `?group=sales`, `?q=ann`, `?queue=support` as a View within the
    request's scope (the URL only narrows it); `wallboard`: /queues; `?view=wall` shows it
    on a big screen; 400 on anything malformed."""
    raw_group = request.query_params.get("group", "").strip()
    if len(raw_group) > MAX_VIEW_PARAM:
        raise BadView(N_("the group is longer than %(most)d characters"), most=MAX_VIEW_PARAM)
    group = group_slug(raw_group)[:40] if raw_group else ""
    if raw_group and not GROUP_SLUG.fullmatch(group):
        raise BadView(N_("the group must be a group's name, like sales or front-desk"))
    query = request.query_params.get("q", "").strip()
    if len(query) > MAX_QUERY:
        raise BadView(N_("the search is longer than %(most)d characters"), most=MAX_QUERY)
    query = "".join(ch for ch in query if ch.isprintable())
    queue = request.query_params.get("queue", "").strip()
    if queue and not QUEUE_RE.fullmatch(queue):
        raise BadView(N_("the queue must be a queue's name, like support (letters, digits, _.+-)"))
    # The wallboard's stream says so (`queues=1`): /events serves both.
    wallboard = wallboard or request.query_params.get("queues") == "1"
    display = request.query_params.get("view", "")
    if display not in ("", "wall"):
        raise BadView(N_("the view must be wall (a wallboard for a big screen: ?view=wall) or left out"))
    extens = _parse_extens(request.query_params.get("ext"))
    scope = user_scope(request)
    return View(extens, group, query, scope, queue=queue, wallboard=wallboard, wall=display == "wall")


def _parse_extens(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if len(raw) > MAX_VIEW_PARAM:
        raise BadView(N_("the ext list is longer than %(most)d characters"), most=MAX_VIEW_PARAM)
    items = [item.strip() for item in raw.split(",")]
    if len(items) > MAX_VIEW_EXTENSIONS:
        raise BadView(N_("the ext list holds more than %(most)d extensions"), most=MAX_VIEW_EXTENSIONS)
    for number, item in enumerate(items, 1):
        if not EXTEN_RE.fullmatch(item):
            message = N_("item %(number)d of the ext list is not an extension (digits, letters, _+*#.-)")
            raise BadView(message, number=number)
    return tuple(dict.fromkeys(items))


def _view_query(view: View, token: str | None = None) -> str:
    """The view as URL parameters, ending in & (for `events?...since=N`); a signed embed
    link's token travels with it, so the stream has the same authority as the frame."""
    params: dict[str, str] = {"token": token} if token else {}
    if view.extens is not None:
        params["ext"] = ",".join(view.extens)
    if view.group:
        params["group"] = view.group
    if view.query:
        params["q"] = view.query
    if view.queue:
        params["queue"] = view.queue
    if view.wallboard:
        params["queues"] = "1"
    if view.wall:
        params["view"] = "wall"
    return urlencode(params, safe=",") + "&" if params else ""


def request_language(request: Request) -> str:
    """LANGUAGE, else the browser's Accept-Language; the stream is told its page's (`lang`)."""
    return language_of_request(request.scope, request.app.state.settings.language)


def as_drawn(request: Request, view: View, *, panel: bool) -> View:
    """`view` as this viewer draws it: in their language; on the full panel (`panel`), with
    their pins first and the controls their role gives them on each tile. A wallboard has
    no controls: it is looked at from across the room."""
    lang = request_language(request)
    if not panel:
        return replace(view, lang=lang)
    pins = pins_of(request)
    if view.wall:
        return replace(view, lang=lang, pins=pins)
    actions: Actions | None = request.app.state.actions
    user = getattr(request.state, "user", None)
    controls = {PIN} | (actions.tile_controls(user) if actions is not None else set())
    return replace(view, lang=lang, pins=pins, controls=frozenset(controls))


async def page(request: Request) -> Response:
    return await _render_view(request, "page.html", panel=True)


async def embed(request: Request) -> Response:
    return await _render_view(request, "embed.html")


async def queues_page(request: Request) -> Response:
    """The wallboard: every queue the viewer may see, as tiles (`?queue=` one of them)."""
    return await _render_view(request, "queues.html", wallboard=True)


async def _render_view(
    request: Request, template: str, *, wallboard: bool = False, panel: bool = False
) -> Response:
    hub: Hub = request.app.state.hub
    view = as_drawn(request, parse_view(request, wallboard=wallboard), panel=panel)
    await hub.ready.wait()
    tiles = hub.whole_view(view)
    context = {
        "tiles_html": Markup(tiles),  # noqa: S704 - rendered by our autoescaping templates
        "link_html": Markup(hub.renderer.link(hub.link, oob=False, lang=view.lang)),  # noqa: S704
        "events_url": (
            f"events?{_view_query(view, request.query_params.get('token'))}"
            f"since={hub.version}&lang={view.lang}{'&panel=1' if panel else ''}"
        ),
        "count": len(hub.keys_for(view)),
        "total": len(hub.keys_for(View(scope=view.scope))),  # the header says "10 of 50"
        "groups": [(name, group_slug(name)) for name in hub.groups(view.scope)],
        "group": view.group,
        "query": view.query,
        "queue": view.queue,
        "wall": view.wall,  # no chrome, tiles sized to fill the screen (wall.css)
        "has_queues": bool(hub.queues_for(View(scope=view.scope))),
    }
    if panel:
        context.update(pins=view.pins, me=_me(request, hub))
    html = hub.renderer.page(template, view.lang, **context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _me(request: Request, hub: Hub) -> dict[str, Any] | None:
    """The signed-in user's own controls (me.html), when they may act at all."""
    actions: Actions | None = request.app.state.actions
    user = getattr(request.state, "user", None)
    if actions is None or user is None or not user.extension:
        return None
    allowed = actions.roles.get(user.role, frozenset())
    if not allowed:
        return None
    mine = hub.by_exten.get(user.extension, [])  # the keys of the user's own extension
    return {
        "extension": user.extension,
        "tiles": [hub.ids[key] for key in mine],  # no Act menu on one's own tile
        "csrf": csrf_token(request),
        "can_pause": "pause" in allowed and any(serves(hub.extensions[key]) for key in mine),
        "can_presence": "presence" in allowed,
        "presences": PRESENCE_CHOICES,
    }


async def events(request: Request) -> EventStream:
    hub: Hub = request.app.state.hub
    view = as_drawn(request, parse_view(request), panel=request.query_params.get("panel") == "1")
    await hub.ready.wait()
    return event_stream(request, hub, view, viewers=request.app.state.viewers)


async def snapshot_api(request: Request) -> Response:
    """The snapshot exactly as the store holds it (the memcached contract); to a scope,
    only the extensions it holds (and no outside numbers where it hides them)."""
    scope = user_scope(request)
    try:
        raw = await request.app.state.store.read_snapshot_bytes()
    except StoreError as error:
        return JSONResponse({"error": f"store unreachable: {error}"}, status_code=503)
    if raw is None:
        return JSONResponse({"error": "no snapshot published yet"}, status_code=503)
    if not scope.everything or not scope.show_numbers:
        raw = json.dumps(scoped_snapshot(json.loads(raw), scope), separators=(",", ":")).encode()
    return Response(raw, media_type="application/json", headers={"Cache-Control": "no-store"})


async def healthz(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    health: Health = request.app.state.health
    ok = hub.link.ok and health.ok
    body: dict[str, object] = {
        "status": "ok" if ok else "degraded",
        "pbx_connected": hub.pbx.ok,
        "store_ok": hub.store_ok,
        "version": hub.version,
    }
    if hub.check_collector:
        body["collector_running"] = hub.collector_ok
    if not health.ok:
        body["failing"] = sorted(health.failing)  # the names of the parts being restarted
    if request.app.state.settings.auth_mode != "none":
        # Open to load balancers, so it tells strangers no more than up or not.
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadView)
    return _error_page(request, 400, exc.said)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # its detail: our sentence (N_), or Starlette's phrase
    return _error_page(request, exc.status_code, Said(exc.detail))


def _error_page(request: Request, status: int, said: Said) -> Response:
    """`said` in the request's language on the HTML page, English in the JSON body."""
    renderer: Renderer = request.app.state.hub.renderer
    if "text/html" in request.headers.get("accept", ""):
        lang = request_language(request)
        message = said.in_(lang)
        html = renderer.page("error.html", lang, title=f"{status}", status=status, message=message)
        return HTMLResponse(html, status_code=status)
    return JSONResponse({"error": str(said)}, status_code=status)


def security_headers(frame_ancestors: str) -> list[tuple[bytes, bytes]]:
    """The framing policy (FRAME_ANCESTORS), scripts only from our own files, and no-sniff,
    for every response. htmx 4 evaluates `hx-on:*` and re-runs a `<script>` in swapped
    content: with script-src 'self' an injected one does not run, should escaping ever miss."""
    policy = f"frame-ancestors {frame_ancestors}; script-src 'self'; object-src 'none'; base-uri 'none'"
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    ]


class SecurityHeaders:
    """Adds `security_headers` to every response (but the streams: see `Panel`)."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Panel(Starlette):
    """Starlette, except that a well-formed request for the event stream skips the
    middleware stack: its three `send` wrappers ran for every message of every viewer,
    about a tenth of the server's time at 1,000 viewers (docs/benchmarks.md). So the
    security headers and `identify` run here; a malformed request or a host the fast path
    does not know at once take the normal path (error page, TrustedHostMiddleware).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        # The TCP peer, before anything trusts X-Forwarded-For (uvicorn's proxy headers
        # have already replaced `client` with it when the peer was 127.0.0.1).
        transport = transport_of(send)
        peer = transport.get_extra_info("peername") if transport is not None else None
        if peer:
            scope["blf.peer"] = peer
        if scope["method"] in ("GET", "HEAD") and route_path(scope) == "/events" and self._known_host(scope):
            scope["app"] = self
            auth: Auth = self.state.auth
            try:
                admit(scope, identify(scope, auth))
            except Denied as denied:
                response = denied_response(denied, scope, auth)
                response.raw_headers += self.state.security_headers
                await response(scope, receive, send)
                return
            try:
                stream = await events(Request(scope, receive))
            except BadView:
                pass
            else:
                stream.headers = [*stream.headers, *self.state.security_headers]
                await stream(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _known_host(self, scope: Scope) -> bool:
        """The Host is one of ALLOWED_HOSTS written out (a wildcard one, or a wrong one,
        takes the normal path, where TrustedHostMiddleware decides)."""
        hosts: frozenset[str] | None = self.state.exact_hosts
        if hosts is None:
            return True
        for name, value in scope["headers"]:
            if name == b"host":  # as TrustedHostMiddleware reads it
                return value.decode("latin-1").split(":")[0] in hosts
        return False


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(settings: Settings) -> list[str]:
    """ALLOWED_HOSTS, the loopback names (always), and HOST when it is one address."""
    hosts = [*LOOPBACK_NAMES, *settings.allowed_hosts]
    if settings.host not in ("", "0.0.0.0", "::") and settings.host not in hosts:
        hosts.append(settings.host)
    return hosts


def create_app(settings: Settings | None = None) -> Starlette:
    """The app for one process. Settings are read once here and passed down."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = store_from(settings)
        shared = not isinstance(store, MemoryStore)
        # With memcached the hub has connections of its own: however hard /api/snapshot is
        # polled, the viewers' states keep moving and are not greyed for a slow answer.
        hub_store = store_from(settings) if shared else store
        # Made here, after `serve` chose the multi-process directory (app.metrics).
        app.state.metrics = metrics = Metrics()
        # The default language first: what a page gets when its viewer's is not one of ours.
        default = settings.language or "en"
        renderer = Renderer(demo=settings.demo, languages=[default, *(x for x in LANGUAGES if x != default)])
        for lang, env in renderer.envs.items():
            env.globals["visitor"] = visitor.get  # the page's sign-out button
            env.globals["title"] = panel_title(settings.panel_title, lang)  # every page's
        hub = Hub(
            hub_store,
            renderer,
            encode,
            poll_interval=settings.store_poll,
            heartbeat=settings.heartbeat,
            check_collector=shared,
            metrics=metrics,
            look=Look(default),
        )
        app.state.settings, app.state.store, app.state.hub = settings, store, hub
        app.state.security_headers = headers
        app.state.viewers = viewers = Viewers(settings.send_timeout, settings.send_buffer, metrics)
        app.state.descriptors = descriptors = DescriptorWatch()  # one line when out of them
        # A part that fails is started again; until it runs well, /healthz says 503.
        app.state.health = health = Health()

        def supervised(name: str, start: Callable[[], Coroutine[Any, Any, None]]) -> Any:
            return background(supervise(name, start, health), f"{name}-supervisor")

        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(store.close)
            if shared:
                stack.push_async_callback(hub_store.close)
            if settings.collector and shared:
                # Its own connections: a busy hub or API must never delay a lease renewal
                # (a late renewal loses the lease and stops the collector).
                collector_store = store_from(settings)
                stack.push_async_callback(collector_store.close)
                owner = lease_owner()
                lead = functools.partial(lead_or_follow, settings, collector_store, owner, health, metrics)
                await stack.enter_async_context(supervised("lease", lead))
            elif settings.collector:
                acting = actions.session if actions is not None else None  # the demo PBX's port
                await stack.enter_async_context(running_collector(settings, store, health, metrics, acting))
            await stack.enter_async_context(supervised("hub", hub.run))
            await stack.enter_async_context(supervised("viewers-watch", viewers.run))
            await stack.enter_async_context(background(descriptors.run(), "descriptor-watch"))
            await stack.enter_async_context(background(end_streams_at_shutdown(hub), "shutdown-watch"))
            stack.callback(forget_process, os.getpid())  # a worker's viewers end with it
            stack.callback(hub.close)  # whatever stops us, no stream outlives the app
            if actions is not None:  # ACTIONS=on: its AMI session ends with the app
                stack.push_async_callback(actions.close)
            yield

    headers = security_headers(settings.frame_ancestors)
    auth = Auth.from_settings(settings)
    # ACTIONS=on mounts POST /actions/<action> (app/actions.py); off, the URL is a 404.
    actions = Actions(settings) if settings.actions else None
    app = Panel(
        routes=[
            *(SIGNIN_ROUTES if settings.auth_mode == "users" else []),
            Route("/", page),
            Route("/embed", embed),
            Route("/queues", queues_page),
            Route("/events", events),
            Route("/api/snapshot", snapshot_api),
            Route("/healthz", healthz),
            *(actions.routes if actions is not None else []),
            *PIN_ROUTES,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
        exception_handlers={BadView: _bad_request, HTTPException: _http_error},
    )
    hosts = allowed_hosts(settings)
    app.state.auth = auth
    app.state.actions = actions
    app.state.exact_hosts = None if "*" in hosts else frozenset(h for h in hosts if "*" not in h)
    app.add_middleware(Door, auth=auth)  # innermost: it reads the session
    # A session holds the CSRF token of a signed-in user, and of a proxy's user who may act.
    if settings.auth_mode == "users" or (settings.auth_mode == "proxy" and settings.actions):
        app.add_middleware(Sessions, secret_key=settings.secret_key, max_age=settings.session_lifetime)
    # A web page on another site can reach a LAN panel by DNS rebinding: its own name then
    # points at the panel, and only the Host header still tells.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    app.add_middleware(SecurityHeaders, headers=headers)
    return app

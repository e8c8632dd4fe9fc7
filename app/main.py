"""The Starlette app: the lifespan wires store, collector and hub; routes serve the page,
the embed, the event stream, the snapshot API and the health check.

Every URL the pages contain is relative, so the app works under any path prefix.
Nothing from the request reaches the store or a template unchecked.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.directory import group_slug
from app.hub import Hub, View
from app.metrics import Metrics, forget_process
from app.runtime import lead_or_follow, lease_owner, running_collector, store_from
from app.settings import Settings, load_settings
from app.sse import EventStream, Viewers, encode, end_streams_at_shutdown, event_stream
from app.states import EXTEN_RE
from app.store import MemoryStore, StoreError
from app.tasks import Health, background, supervise
from app.tiles import Renderer
from app.transport import DescriptorWatch

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_VIEW_EXTENSIONS = 500
MAX_VIEW_PARAM = 4000
MAX_QUERY = 40
GROUP_SLUG = re.compile(r"[a-z0-9._\-]{1,40}")


class BadView(ValueError):
    """A malformed or over-long extension list in the URL."""


def parse_view(request: Request) -> View:
    """`?ext=101,102`, `?group=sales`, `?q=ann` as a View; 400 on anything malformed."""
    raw_group = request.query_params.get("group", "").strip()
    group = group_slug(raw_group)[:40] if raw_group else ""
    if raw_group and not GROUP_SLUG.fullmatch(group):
        raise BadView("the group must be a group's name, like sales or front-desk")
    query = request.query_params.get("q", "").strip()
    if len(query) > MAX_QUERY:
        raise BadView(f"the search is longer than {MAX_QUERY} characters")
    query = "".join(ch for ch in query if ch.isprintable())
    return View(_parse_extens(request.query_params.get("ext")), group, query)


def _parse_extens(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if len(raw) > MAX_VIEW_PARAM:
        raise BadView(f"the ext list is longer than {MAX_VIEW_PARAM} characters")
    items = [item.strip() for item in raw.split(",")]
    if len(items) > MAX_VIEW_EXTENSIONS:
        raise BadView(f"the ext list holds more than {MAX_VIEW_EXTENSIONS} extensions")
    for number, item in enumerate(items, 1):
        if not EXTEN_RE.fullmatch(item):
            raise BadView(f"item {number} of the ext list is not an extension (digits, letters, _+*#.-)")
    return tuple(dict.fromkeys(items))


def _view_query(view: View) -> str:
    """The view as URL parameters, ending in & (for `events?...since=N`)."""
    params: dict[str, str] = {}
    if view.extens is not None:
        params["ext"] = ",".join(view.extens)
    if view.group:
        params["group"] = view.group
    if view.query:
        params["q"] = view.query
    return urlencode(params, safe=",") + "&" if params else ""


async def page(request: Request) -> Response:
    return await _render_view(request, "page.html")


async def embed(request: Request) -> Response:
    return await _render_view(request, "embed.html")


async def _render_view(request: Request, template: str) -> Response:
    hub: Hub = request.app.state.hub
    settings: Settings = request.app.state.settings
    view = parse_view(request)
    await hub.ready.wait()
    tiles = hub.whole_view(view)
    context = {
        "title": settings.panel_title,
        "tiles_html": Markup(tiles),  # noqa: S704 - rendered by our autoescaping templates
        "link_html": Markup(hub.renderer.link(hub.link, oob=False)),  # noqa: S704
        "events_url": f"events?{_view_query(view)}since={hub.version}",
        "count": len(hub.keys_for(view)),
        "groups": [(name, group_slug(name)) for name in hub.groups()],
        "group": view.group,
        "query": view.query,
    }
    html = hub.renderer.page(template, **context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


async def events(request: Request) -> EventStream:
    hub: Hub = request.app.state.hub
    view = parse_view(request)
    await hub.ready.wait()
    return event_stream(request, hub, view, viewers=request.app.state.viewers)


async def snapshot_api(request: Request) -> Response:
    """The snapshot exactly as the store holds it (the memcached contract)."""
    try:
        raw = await request.app.state.store.read_snapshot_bytes()
    except StoreError as error:
        return JSONResponse({"error": f"store unreachable: {error}"}, status_code=503)
    if raw is None:
        return JSONResponse({"error": "no snapshot published yet"}, status_code=503)
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
    return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error_page(request, 400, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_page(request, exc.status_code, exc.detail)


def _error_page(request: Request, status: int, message: str) -> Response:
    renderer: Renderer = request.app.state.hub.renderer
    if "text/html" in request.headers.get("accept", ""):
        html = renderer.page("error.html", title=f"{status}", status=status, message=message)
        return HTMLResponse(html, status_code=status)
    return JSONResponse({"error": message}, status_code=status)


def security_headers(frame_ancestors: str) -> list[tuple[bytes, bytes]]:
    """The framing policy (FRAME_ANCESTORS) and no-sniff, for every response."""
    return [
        (b"content-security-policy", f"frame-ancestors {frame_ancestors}".encode()),
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
    security headers are set here; a malformed request takes the normal path (error page).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and _route_path(scope) == "/events":
            scope["app"] = self
            try:
                stream = await events(Request(scope, receive))
            except BadView:
                pass
            else:
                stream.headers = [*stream.headers, *self.state.security_headers]
                await stream(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


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
        hub = Hub(
            hub_store,
            Renderer(demo=settings.demo),
            encode,
            poll_interval=settings.store_poll,
            heartbeat=settings.heartbeat,
            check_collector=shared,
            metrics=metrics,
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
                await stack.enter_async_context(running_collector(settings, store, health, metrics))
            await stack.enter_async_context(supervised("hub", hub.run))
            await stack.enter_async_context(supervised("viewers-watch", viewers.run))
            await stack.enter_async_context(background(descriptors.run(), "descriptor-watch"))
            await stack.enter_async_context(background(end_streams_at_shutdown(hub), "shutdown-watch"))
            stack.callback(forget_process, os.getpid())  # a worker's viewers end with it
            stack.callback(hub.close)  # whatever stops us, no stream outlives the app
            yield

    headers = security_headers(settings.frame_ancestors)
    app = Panel(
        routes=[
            Route("/", page),
            Route("/embed", embed),
            Route("/events", events),
            Route("/api/snapshot", snapshot_api),
            Route("/healthz", healthz),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
        exception_handlers={BadView: _bad_request, HTTPException: _http_error},
    )
    app.add_middleware(SecurityHeaders, headers=headers)
    return app

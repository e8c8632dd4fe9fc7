"""`blf-panel`: simulate a PBX, collect from one, watch the cache table.

A bad setting or argument is one line on stderr and exit code 2; Ctrl-C and
SIGTERM stop a long-running command cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from app.cli_args import build_parser, speak_argparse
from app.i18n import _, cli_translations, install_cli, ngettext
from app.metrics import Metrics, multiprocess_dir, serve_metrics
from app.runtime import lead_or_follow, lease_owner, running_collector, store_from
from app.settings import Settings, SettingsError, load_settings, parse_extension_range, raw_values
from app.store import MemoryStore, StoreUnavailable
from app.supervisor import CollectorProcess
from app.watch import TableView, wait_for_link

log = logging.getLogger("blf-panel")


class UsageError(Exception):
    """Bad input on the command line; shown as one line, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    install_cli(cli_translations(raw_values()))  # the language of everything below, help included
    speak_argparse()
    parser = build_parser(COMMANDS)
    args = parser.parse_args(argv)  # a mistake: the usage of the command and one line, exit 2
    try:
        settings = load_settings()
    except SettingsError as error:
        print(_("blf-panel: bad setting %(error)s") % {"error": error}, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if not inspect.iscoroutinefunction(args.command):
            return args.command(settings, args)
        return _run_until_signal(lambda: args.command(settings, args))
    except UsageError as error:
        print(f"blf-panel: {error}", file=sys.stderr)
        return 2


def _run_until_signal(start: Callable[[], Awaitable[int]]) -> int:
    """Run a command; SIGTERM and SIGINT cancel it and it exits 0."""

    async def runner() -> int:
        task = asyncio.ensure_future(start())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            log.info("stopped")
            return 0

    return asyncio.run(runner())


# --- commands ---


async def simulate_command(settings: Settings, args: argparse.Namespace) -> int:
    from app.sim import load_names, run_simulator  # only this command plays the PBX

    try:
        extensions = parse_extension_range(args.extensions)
    except ValueError as error:
        raise UsageError(f"--extensions: {error}") from None
    if args.churn < 0:
        raise UsageError(_("--churn must be 0 or more"))
    try:
        names = load_names(args.names) if args.names else None
    except (OSError, ValueError) as error:
        raise UsageError(f"--names: {error}") from None
    try:
        await run_simulator(
            host=args.host,
            port=args.port,
            extensions=extensions,
            username=args.username or settings.ami_username,
            secret=args.secret or settings.ami_secret,
            churn=args.churn,
            context=args.context,
            names=names,
            queues=args.queues,
        )
    except OSError as error:
        raise UsageError(
            _("cannot listen on %(host)s:%(port)s: %(error)s")
            % {"host": args.host, "port": args.port, "error": error.strerror or error}
        ) from None
    return 0


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    """The panel under uvicorn. With MEMCACHED_URL, the collector runs as a process of its
    own beside the workers (`blf-panel collect`, which takes the lease); without, the
    single worker runs it (or the demo PBX) itself."""
    import uvicorn

    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    workers = args.workers or settings.workers
    root_path = settings.root_path if args.root_path is None else args.root_path
    if workers < 1:
        raise UsageError(_("--workers must be 1 or more"))
    if workers > 1 and not settings.memcached_url:
        raise UsageError(
            _(
                "--workers %(workers)d needs MEMCACHED_URL: worker processes share the states "
                "through memcached (the in-process store cannot be shared)"
            )
            % {"workers": workers}
        )
    http_options = _door_of_serve(settings, host)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}{root_path}/"
    if settings.demo:
        print(
            _("blf-panel: panel at %(url)s showing the demo PBX (built-in simulator)") % {"url": url},
            flush=True,
        )
    else:
        shown = _("blf-panel: panel at %(url)s showing the PBX at %(pbx)s") % {
            "url": url,
            "pbx": settings.ami_host,
        }
        print(shown, flush=True)
    # uvicorn raises the SIGTERM it caught again once it has shut down; left at its default,
    # that kills this process before the collector process below is stopped. Like Ctrl-C, it
    # now just ends uvicorn.run, and serve exits 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.ExitStack() as stack:
        if settings.metrics_listen:
            # Every worker and the collector child count into files of one directory, and
            # serve shows their sum; the children must not bind the metrics address too.
            stack.enter_context(multiprocess_dir())
            os.environ["METRICS_LISTEN"] = ""
            stack.callback(_serve_metrics(settings.metrics_listen, None).shutdown)
        if settings.collector and settings.memcached_url:
            stack.enter_context(CollectorProcess(env=os.environ.copy()))  # stopped when we return
            # The workers read their settings from this environment, each in its own process.
            # The collector runs beside them now: a worker that collected too would share its
            # event loop with the fan-out to the viewers again, and delay every state change.
            os.environ["COLLECTOR"] = "off"
        uvicorn.run(
            # Several workers are processes of their own (multiprocessing spawn): each is set
            # to die with serve, however serve ends (worker_app). One runs in this process.
            "app.cli:worker_app" if workers > 1 else "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            root_path=root_path,
            proxy_headers=True,
            **http_options,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=5,
        )
    return 0


# The request line and headers together, beyond loopback: 4 times nginx's 8 KB line
# (an embed link's token is up to 6,000 characters), far below what stalls a worker.
MAX_HEADER_BYTES = 32 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _door_of_serve(settings: Settings, host: str) -> dict[str, Any]:
    """What listening on `host` asks of the settings, and the uvicorn options it takes.
    On loopback (nginx in front) nothing changes. Beyond it, AUTH must have been chosen,
    and headers are capped: httptools reads headers of any size (a 300 MB one took a
    worker's CPU for 9 s, /healthz answered 503), h11 stops at `MAX_HEADER_BYTES` (400, connection closed)."""
    if is_loopback(host):
        return {}
    if not settings.auth:
        raise UsageError(
            _(
                "serve on %(host)s would open the panel to the network without sign-in: set AUTH=users "
                "or AUTH=proxy (README: Who may see what), or AUTH=none to let everyone who reaches it "
                "see it all"
            )
            % {"host": host}
        )
    if settings.auth == "none":
        log.warning(
            "AUTH=none on %s: anyone who can reach this address sees every extension, name and caller", host
        )
    if not settings.allowed_hosts:
        log.warning(
            "ALLOWED_HOSTS is empty: only localhost, 127.0.0.1, ::1 and %s are answered (400 otherwise)", host
        )
    return {"http": "h11", "h11_max_incomplete_event_size": MAX_HEADER_BYTES}


def user_command(settings: Settings, args: argparse.Namespace) -> int:
    """Edit USERS_FILE; the password is read from the terminal (twice) or one line of stdin,
    never from the command line (where `ps` and the shell history would show it)."""
    from pathlib import Path

    from app.auth.users import NAME_RE, edit_users, format_line, hash_password, user_fields
    from app.scope import ScopeError, parse_scope
    from app.states import EXTEN_RE

    if not settings.users_file:
        raise UsageError(_("user needs USERS_FILE: the file the users are kept in"))
    path = Path(settings.users_file)
    if not NAME_RE.fullmatch(args.name):
        raise UsageError(
            _("%(name)r is not a user name (letters, digits and ._@+-, up to 64)") % {"name": args.name[:40]}
        )
    if args.ext and not EXTEN_RE.fullmatch(args.ext):
        raise UsageError(_("--ext %(ext)r is not an extension") % {"ext": args.ext[:20]})
    try:
        if args.scope is not None:
            parse_scope(args.scope)
        if args.action == "remove":
            edit_users(path, args.name, None, must_exist=True)
        elif args.action == "add":
            line = format_line(
                args.name, hash_password(_read_password()), args.role or "viewer", args.scope or "*", args.ext
            )
            edit_users(path, args.name, line, must_exist=False)
        else:  # passwd: a new password; role, scope and extension as they were unless given
            name, _hash, role, scope, ext = user_fields(path, args.name)
            line = format_line(
                name, hash_password(_read_password()), args.role or role, args.scope or scope, args.ext or ext
            )
            edit_users(path, args.name, line, must_exist=True)
    except ScopeError as error:
        raise UsageError(f"user {args.action}: {error.said.shown()}") from None
    except (LookupError, OSError) as error:
        raise UsageError(f"user {args.action}: {error}") from None
    done = _("blf-panel: user %(name)s: removed from %(path)s") if args.action == "remove" else None
    done = done or _("blf-panel: user %(name)s: saved in %(path)s")
    print(done % {"name": args.name, "path": path})
    return 0


def _read_password() -> str:
    import getpass

    from app.auth.users import MIN_PASSWORD

    if sys.stdin.isatty():
        password = getpass.getpass(_("Password: "))
        if getpass.getpass(_("Again: ")) != password:
            raise UsageError(_("the two passwords differ"))
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise UsageError(
            ngettext(
                "the password must be at least %(least)d character",
                "the password must be at least %(least)d characters",
                MIN_PASSWORD,
            )
            % {"least": MIN_PASSWORD}
        )
    return password


def worker_app() -> Any:
    """The app of one `serve --workers N` worker, which uvicorn starts with multiprocessing
    spawn. A SIGKILLed (or crashed) serve would leave its workers running, holding the port
    and serving states nobody updates any more: first, have the kernel SIGTERM this worker
    when serve dies (uvicorn's SIGTERM handling then ends its streams and stops it). With
    them the resource tracker serve started goes too: it ends when its last user has."""
    import multiprocessing

    from app.main import create_app
    from app.supervisor import die_with_parent

    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_it = die_with_parent(parent.pid)
        if die_with_it is not None:
            die_with_it()
    return create_app()


async def collect_command(settings: Settings, args: argparse.Namespace) -> int:
    metrics = Metrics()
    # As serve's child it counts into serve's files (METRICS_LISTEN is emptied for it).
    server = _serve_metrics(settings.metrics_listen, metrics) if settings.metrics_listen else None
    store = store_from(settings)
    if isinstance(store, MemoryStore):
        log.warning("MEMCACHED_URL is empty: states stay inside this process; set it to share them")
    try:
        if isinstance(store, MemoryStore):
            async with running_collector(settings, store, metrics=metrics):
                await asyncio.Future()  # until a signal cancels us
        else:  # take the lease like a serving host would: web hosts see it held
            await lead_or_follow(settings, store, lease_owner(), metrics=metrics)
    finally:
        await store.close()
        if server is not None:
            server.shutdown()
    return 0


def _serve_metrics(listen: tuple[str, int], metrics: Metrics | None) -> Any:
    try:
        return serve_metrics(listen, metrics)
    except OSError as error:
        raise UsageError(f"METRICS_LISTEN {listen[0]}:{listen[1]}: {error.strerror or error}") from None


async def watch_command(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Read the store like any viewer would. With no MEMCACHED_URL there is nothing to
    read from another process, so the collector (or the demo) runs in this one."""
    store = store_from(settings)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        if isinstance(store, MemoryStore):
            collector = await stack.enter_async_context(running_collector(settings, store))
            if args.once:
                await wait_for_link(collector, timeout=10.0)
        view = TableView(out, as_json=args.json, live=not args.once)
        known: int | None = None
        first, down = True, False
        while True:
            try:
                if first:  # show what there is now, then wait for changes
                    version = await store.read_version()
                else:
                    version = await store.wait_for_version(known, poll_interval=0.2)
                snapshot = await store.read_snapshot()
            except StoreUnavailable as error:
                if args.once:
                    print(_("blf-panel: store unreachable: %(error)s") % {"error": error}, file=sys.stderr)
                    return 1
                if not down:
                    print(_("store unreachable (%(error)s); retrying") % {"error": error}, file=sys.stderr)
                down = True
                await asyncio.sleep(1.0)
                continue
            first = down = False
            if snapshot is None:
                if args.once:
                    print(
                        _(
                            "blf-panel: no snapshot in the store yet: is `blf-panel collect` running "
                            "with the same MEMCACHED_URL and STORE_PREFIX?"
                        ),
                        file=sys.stderr,
                    )
                    return 1
                known = version
                continue
            known = version
            view.show(snapshot)
            if args.once:
                return 0


async def check_command(settings: Settings, args: argparse.Namespace) -> int:
    """Log in as the collector would, try every action, wait for events, check memcached;
    print what works and what does not with the fix; exit 1 when the panel lacks something."""
    from app.check import CheckFailed, run_check  # only this command probes

    if settings.demo:
        raise UsageError(_("check needs AMI_HOST: with it empty the panel runs its own demo PBX"))
    if not 0 <= args.wait <= 3600:
        raise UsageError(_("--wait must be 0 to 3600 seconds"))
    try:
        return await run_check(settings, wait=args.wait, out=sys.stdout)
    except CheckFailed as error:
        print(f"blf-panel: {error}", file=sys.stderr)
        return 1


def embed_url_command(settings: Settings, args: argparse.Namespace) -> int:
    """A ready `/embed?token=...` URL signed with EMBED_SECRET, as a CRM's server mints one."""
    from urllib.parse import quote

    from app.auth.tokens import mint_token, parse_ttl

    if not settings.embed_secret:
        raise UsageError(_("embed-url needs EMBED_SECRET (32 bytes or more): embed links are off without it"))
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # as serve shows it
    host = f"[{host}]" if ":" in host else host
    base = (args.base or f"http://{host}:{settings.port}{settings.root_path}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(_("--base %(base)r is not an http:// or https:// URL") % {"base": base[:60]})
    split = {
        name: [item for item in getattr(args, name).split(",") if item.strip()]
        for name in ("ext", "group", "firm")
    }
    if not any(split.values()):
        raise UsageError(_("name what the link shows: --ext 101,102, --group sales and/or --firm acme"))
    try:
        token = mint_token(
            settings.embed_secret,
            ttl=parse_ttl(args.ttl),
            extensions=split["ext"],
            groups=split["group"],
            firms=split["firm"],
            show_numbers=args.numbers == "on",
            audience=settings.embed_audience,
        )
    except ValueError as error:
        raise UsageError(f"embed-url: {error}") from None
    print(f"{base}/embed?token={quote(token, safe='')}")
    return 0


COMMANDS = {
    "simulate": simulate_command,
    "serve": serve_command,
    "collect": collect_command,
    "watch": watch_command,
    "check": check_command,
    "user": user_command,
    "embed-url": embed_url_command,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

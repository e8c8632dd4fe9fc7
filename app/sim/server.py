"""The simulator on a TCP port: `Simulator` serves the `Pbx` model to sessions; `run_simulator`.
Do not break: `stop()` ends every task and connection the simulator owns, and nothing reaches a
client while it is frozen (tests rely on both)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

from app.sim.churn import Churn, demo_queues
from app.sim.events import connected_lines, shutdown_event
from app.sim.model import Pbx, Sleep
from app.sim.session import Session
from app.sim.users import ManagerUser
from app.sim.wire import MAX_FRAME_BYTES, SYSTEM

log = logging.getLogger(__name__)

# How long a simulated boot takes after `core restart`: the hints appear over its first 60%,
# the module actions answer from 80% on, FullyBooted comes at the end. Asterisk 22.10.1 took
# logins 0.56 s after the command (transcript 22), before its modules were loaded; a real
# boot takes seconds. 1 s keeps tests short, and a client that logs in again at once (the
# simulator's port never closes) sees the whole of it.
BOOT_SECONDS = 1.0
BOOT_HINT_STEPS = 4


class Simulator(Pbx):
    """A fake Asterisk PBX listening on a TCP port: the `Pbx` model, whose events go to every
    logged-in client that asked for them, and `churn` random device changes a second. Its
    manager users: `username`/`secret` with every class, and `users` (classes, eventfilters;
    one named like the first replaces it)."""

    def __init__(
        self,
        extensions: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "blf",
        secret: str = "blfsecret",
        context: str = "ext-local",
        churn: float = 0.0,
        seed: int | None = None,
        names: Mapping[str, str] | None = None,
        sleep: Sleep = asyncio.sleep,
        users: Iterable[ManagerUser] = (),
    ) -> None:
        if churn < 0:
            raise ValueError("churn must be 0 or more changes per second")
        super().__init__(extensions, context=context, seed=seed, names=names, sleep=sleep)
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        # manager.conf: one section per user; Asterisk finds a user by name, case ignored.
        self.users = {u.username.lower(): u for u in (ManagerUser(username, secret), *users)}
        self.churn = churn
        self.logins = 0
        self.peak_sessions = 0  # most logged-in clients at once (one collector: 1)
        self._churn = Churn(self, churn, seed)
        self._server: asyncio.Server | None = None
        self._sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # churn, restarts, boots; stop() ends them
        self._booting: asyncio.Task[None] | None = None
        self._fully_booted = asyncio.Event()
        self._fully_booted.set()
        self._thawed = asyncio.Event()
        self._thawed.set()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- lifecycle ---

    async def start(self) -> None:
        """Bind and serve; with port 0 the chosen port is in `self.port` afterwards."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self.port, limit=MAX_FRAME_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._boot()
        if self.churn > 0:
            self._spawn(self._churn.run(), name=f"ami-simulator-churn-{self.port}")
        log.info(
            "simulated Asterisk on %s:%d: %d hints in %s, churn %g/s",
            self.host,
            self.port,
            len(self._hints),
            self.context,
            self.churn,
        )

    async def stop(self) -> None:
        """Stop churn and restarts, close the listener and every client; safe to call twice."""
        tasks = list(self._tasks)
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        server, self._server = self._server, None
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
            if server is not None:
                server.close()
            sessions = list(self._sessions)
            for session in sessions:
                session.abort()
            self._thawed.set()  # sessions still waiting for a thaw end at once too
            await asyncio.gather(*(s.close("abort") for s in sessions))
            if server is not None:
                await server.wait_closed()
        finally:
            self._thawed.set()
            if server is not None:
                log.info("simulated Asterisk on port %d stopped", self.port)

    # --- control API (tests, demo) ---

    @property
    def sessions(self) -> int:
        """Clients connected and logged in right now."""
        return sum(1 for session in self._sessions if session.authenticated)

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    def inject(self, data: bytes) -> None:
        """Send raw bytes to every logged-in client, whatever its event mask: malformed or
        hostile frames for the collector's input checks. Nothing goes out while frozen."""
        if self.frozen:
            return
        for session in list(self._sessions):
            if session.authenticated:
                session.send(data)

    async def drop_all(self) -> None:
        """Reset every client connection (a network failure); keep listening."""
        victims = list(self._sessions)
        log.info("dropping %d client connections", len(victims))
        await asyncio.gather(*(s.close("reset") for s in victims))

    async def restart(self, extensions: list[str] | None = None, *, boot: float = BOOT_SECONDS) -> None:
        """`core restart now`: Shutdown to every client, close them, optionally load a new
        set of extensions, and take logins again at once on the same port, booting for
        `boot` seconds (0: booted at once, with uptime 0)."""
        if extensions is not None:
            self._set_extensions(extensions)  # a bad list raises before anyone is told
        victims = list(self._sessions)
        log.info("restarting: %d clients get Shutdown", len(victims))
        self.emit(SYSTEM, shutdown_event())  # to exactly the victims: nothing awaited since
        if self._booting is not None:
            self._booting.cancel()
        self.begin_boot()  # whoever logs in from now on finds a PBX that is starting
        self._fully_booted.clear()
        await asyncio.gather(*(s.close("graceful") for s in victims))
        self._forget_calls()
        if boot > 0:
            self._booting = self._spawn(self._boot_up(boot), name=f"ami-simulator-boot-{self.port}")
        else:
            self._booted()

    def _booted(self) -> None:
        self.finish_boot()
        self._fully_booted.set()
        log.info("booted: FullyBooted")

    async def wait_booted(self) -> None:
        """Until a boot in progress has ended with FullyBooted (at once when none is)."""
        await self._fully_booted.wait()

    async def _boot_up(self, seconds: float) -> None:
        per_step = -(-len(self._hints) // BOOT_HINT_STEPS)
        for _ in range(BOOT_HINT_STEPS):
            await asyncio.sleep(seconds * 0.6 / BOOT_HINT_STEPS)
            self.load_hints(per_step)
        await asyncio.sleep(seconds * 0.2)
        self.load_modules()
        await asyncio.sleep(seconds * 0.2)
        self._booted()

    def freeze(self) -> None:
        """Become a silent peer: sockets stay open, nothing is answered or sent."""
        log.info("frozen: no answers, no events")
        self._thawed.clear()

    def thaw(self) -> None:
        log.info("thawed")
        self._thawed.set()

    # --- what sessions ask for ---

    def check_credentials(self, username: str, secret: str) -> bool:
        """Asterisk finds the user case-insensitively; the secret must match exactly."""
        return self.manager_user(username, secret) is not None

    def manager_user(self, username: str, secret: str) -> ManagerUser | None:
        """The user these credentials log in as, or None."""
        user = self.users.get(username.lower())
        if user is None or not hmac.compare_digest(secret.encode(), user.secret.encode()):
            return None
        return user

    async def wait_thawed(self) -> None:
        await self._thawed.wait()

    def connected(self) -> list[str]:
        """The `manager show connected` output lines for every logged-in session."""
        rows = [s.listing() for s in self._sessions if s.authenticated]
        return connected_lines(rows, time.time())

    def schedule_restart(self) -> None:
        """A restart asked for by a client runs apart from that client's session, which it
        closes."""
        self._spawn(self.restart(), name=f"ami-simulator-restart-{self.port}")

    # --- internals ---

    def emit(self, category: int, data: bytes) -> None:
        """An event to every logged-in session whose mask has `category`; none while frozen."""
        if self.frozen:
            return
        for session in list(self._sessions):
            session.send_event(category, data)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as stop() ran
            writer.transport.abort()
            return
        session = Session(self, reader, writer)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task of the simulator: named, held until it ends, and its crash logged."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (problem := task.exception()) is not None:
            log.error("simulator task %s crashed", task.get_name(), exc_info=problem)


async def run_simulator(
    host: str,
    port: int,
    extensions: list[str],
    username: str,
    secret: str,
    churn: float,
    context: str,
    names: Mapping[str, str] | None = None,
    queues: bool = False,
) -> None:
    """Serve a simulated PBX until cancelled (`blf-panel simulate`); `queues`: the demo's
    queues even without churn (the benchmark pauses their members itself)."""
    simulator = Simulator(
        extensions,
        host=host,
        port=port,
        username=username,
        secret=secret,
        context=context,
        churn=churn,
        names=names,
    )
    if churn > 0 or queues:  # churn sends callers through the demo's queues and pauses agents
        demo_queues(simulator)
    async with simulator:
        await asyncio.Event().wait()

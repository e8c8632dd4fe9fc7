"""An AMI server that plays an Asterisk 22 PBX, for tests, the demo and `blf-panel simulate`.

It speaks the real wire protocol, byte for byte as recorded in tests/fixtures/ami/, so the
collector can be exercised end to end without a PBX. Each extension N has the hint
`N => Custom:N`; device states change through `Setvar DEVICE_STATE(Custom:N)`, the control API
(`set_device_state`, `restart`, `drop_all`, `freeze`) or random call traffic ("churn").
Where the brief and Asterisk differ, Asterisk's behaviour (main/manager.c, funcs/func_devstate.c)
wins, because the point is to find the collector's bugs before a real PBX does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime
from typing import Any

from app.states import (
    CONTEXT_RE,
    DEVICE_STATES,
    EXTEN_RE,
    STATUS_TEXT,
    aggregate_status,
    hint_devices,
)

log = logging.getLogger(__name__)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
MAX_FRAME_BYTES = 64 * 1024  # one client message; a client sending more is dropped
MAX_PENDING_BYTES = 8 * 1024 * 1024  # unread output before a client is dropped
WRITE_TIMEOUT = 5.0  # Asterisk drops a client that does not read (writetimeout)
CLOSE_TIMEOUT = 1.0  # time a graceful close may take before the socket is aborted
MAX_EXTENSIONS = 10_000

# manager.h EVENT_FLAG_* and the names manager.c perms[] gives them; "all" is INT_MAX.
EVENT_CLASSES: dict[str, int] = {
    name: 1 << bit
    for bit, name in enumerate(
        "system call log verbose command agent user config dtmf reporting cdr dialplan"
        " originate agi cc aoc test security message".split()
    )
}
ALL_EVENTS = 0x7FFFFFFF
SYSTEM = EVENT_CLASSES["system"]
CALL = EVENT_CLASSES["call"]
SECURITY = EVENT_CLASSES["security"]
_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})  # ast_true()
_FALSE = frozenset({"no", "false", "n", "f", "0", "off"})  # ast_false()

# The states func_devstate accepts (ast_devstate_val); UNKNOWN means "not a state" there.
SETTABLE_STATES = frozenset(DEVICE_STATES) - {"UNKNOWN"}
_DEVICE_STATE_FUNC = re.compile(r"DEVICE_STATE\((.*)\)", re.IGNORECASE | re.DOTALL)

# Churn: the next state of a device, with weights. An idle phone rings (incoming call) or goes
# straight to INUSE (it dials out), a ringing one is answered or missed, a call is put on hold
# or hung up; now and then a phone drops off the network and comes back.
_CHURN_NEXT: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "NOT_INUSE": (("RINGING", "INUSE", "UNAVAILABLE"), (0.6, 0.35, 0.05)),
    "RINGING": (("INUSE", "NOT_INUSE"), (0.8, 0.2)),
    "INUSE": (("NOT_INUSE", "ONHOLD"), (0.7, 0.3)),
    "ONHOLD": (("INUSE",), (1.0,)),
}
_CHURN_ACTIVE_SHARE = 0.5  # how often churn moves an ongoing call on rather than starting one

# The CLI commands the `Command` action knows; anything else is "No such command".
_RELOAD_COMMANDS = frozenset({"dialplan reload"})
_RESTART_COMMANDS = frozenset({"core restart now", "core restart gracefully", "core restart when convenient"})
# A few real commands more, only so the "No such command" text names the right prefix.
_OTHER_COMMANDS = (
    "core show channels",
    "core show uptime",
    "core show version",
    "core show hints",
    "devstate change",
    "dialplan show",
    "module reload",
    "pjsip show endpoints",
)


# --- wire format ---


def encode(headers: Iterable[tuple[str, object]]) -> bytes:
    """One AMI message: `Key: Value` lines and a blank line, all CRLF."""
    text = "".join(f"{key}: {value}\r\n" for key, value in headers) + "\r\n"
    return text.encode("latin-1", "replace")


def response(status: str, action_id: str, *headers: tuple[str, object]) -> bytes:
    """A reply; `ActionID` comes right after `Response` and only when the client sent one."""
    lead: list[tuple[str, object]] = [("Response", status)]
    if action_id:
        lead.append(("ActionID", action_id))
    return encode([*lead, *headers])


def error(action_id: str, message: str) -> bytes:
    return response("Error", action_id, ("Message", message))


def extension_status(
    exten: str, context: str, hint: str, status: int, *, list_id: str | None = None
) -> bytes:
    """An ExtensionStatus event: unsolicited it carries `Privilege: call,all`; as an item of
    ExtensionStateList (list_id given) it carries the ActionID instead (transcript 03)."""
    if list_id is None:
        lead = [("Privilege", "call,all")]
    else:
        lead = [("ActionID", list_id)] if list_id else []
    return encode(
        [
            ("Event", "ExtensionStatus"),
            *lead,
            ("Exten", exten),
            ("Context", context),
            ("Hint", hint),
            ("Status", status),
            ("StatusText", STATUS_TEXT.get(status, "Unknown")),
        ]
    )


def device_state_change(device: str, state: str, *, list_id: str | None = None) -> bytes:
    """A DeviceStateChange event, unsolicited or as a DeviceStateList item (transcript 04)."""
    if list_id is None:
        lead = [("Privilege", "call,all")]
    else:
        lead = [("ActionID", list_id)] if list_id else []
    return encode([("Event", "DeviceStateChange"), *lead, ("Device", device), ("State", state)])


def list_complete(event: str, action_id: str, count: int) -> bytes:
    lead = [("ActionID", action_id)] if action_id else []
    return encode([("Event", event), *lead, ("EventList", "Complete"), ("ListItems", count)])


def command_output(status: str, action_id: str, lines: Iterable[str]) -> bytes:
    """The reply to `Action: Command` since Asterisk 14: one `Output:` header per line."""
    output = [("Output", line) for line in lines]
    return response(status, action_id, ("Message", "Command output follows"), *output)


def shutdown_event() -> bytes:
    return encode(
        [
            ("Event", "Shutdown"),
            ("Privilege", "system,all"),
            ("Shutdown", "Cleanly"),
            ("Restart", "True"),
        ]
    )


def event_mask(text: str) -> int | None:
    """The event classes an `Events:`/`EventMask:` value asks for, as manager.c's
    strings_to_mask(): a number, on/off words, or a comma list of class names (matched
    exactly, as ast_instring does). None for an empty value: the mask stays as it was."""
    if not text:
        return None
    if re.fullmatch(r"[0-9]+", text):
        return int(text) & ALL_EVENTS
    if text.lower() in _FALSE:
        return 0
    if text.lower() in _TRUE:
        return ALL_EVENTS
    mask = 0
    for name in text.split(","):
        mask |= ALL_EVENTS if name == "all" else EVENT_CLASSES.get(name, 0)
    return mask


def devstate_write(argument: str, value: str) -> tuple[str, str] | None:
    """The (device, state) `Set(DEVICE_STATE(argument)=value)` sets, or None where
    func_devstate's devstate_write() refuses: not a `Custom:` device, or a value that
    ast_devstate_val() does not know (UNKNOWN included). Asterisk then answers
    "Variable not set" and changes nothing."""
    prefix, name = argument[:7], argument[7:]
    state = value.upper()
    if prefix.lower() != "custom:" or not name or state not in SETTABLE_STATES:
        return None
    return f"Custom:{name}", state


def _ami_address(sockaddr: Any) -> str:
    """`IPV4/TCP/127.0.0.1/15038`, as security events name an address."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return "IPV4/TCP/0.0.0.0/0"
    host, port = sockaddr[0], sockaddr[1]
    return f"IPV{6 if ':' in host else 4}/TCP/{host}/{port}"


def _event_tv() -> str:
    """`2026-11-26T15:21:30.236+0000`: local time, milliseconds, numeric zone."""
    now = datetime.now().astimezone()
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}{now:%z}"


def _timestamp() -> str:
    """Ping's `Timestamp`: epoch seconds with 6 decimals (%ld.%06lu)."""
    ns = time.time_ns()
    return f"{ns // 1_000_000_000}.{ns // 1000 % 1_000_000:06d}"


# --- reading client messages ---


class FrameTooLarge(Exception):
    """A client message grew past MAX_FRAME_BYTES without its blank line: garbage."""


class Frame:
    """One client message. Lookups are case-insensitive and the first match wins, and only
    the blanks after the colon are skipped, as astman_get_header() does."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def get(self, name: str) -> str:
        prefix = name.lower() + ":"
        for line in self.lines:
            if line[: len(prefix)].lower() == prefix:
                return line[len(prefix) :].lstrip(" \t")
        return ""


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next message: lines up to a blank line (CRLF, or a bare LF from sloppy clients).
    Raises IncompleteReadError at EOF and FrameTooLarge/LimitOverrunError for garbage."""
    lines: list[str] = []
    size = 0
    while True:
        raw = await reader.readuntil(b"\n")
        size += len(raw)
        if size > MAX_FRAME_BYTES:
            raise FrameTooLarge(f"message over {MAX_FRAME_BYTES} bytes")
        line = raw.rstrip(b"\r\n").decode("latin-1")
        if line:
            lines.append(line)
        elif lines:
            return Frame(lines)
        else:
            size = 0  # blank lines between messages are not part of one


# --- the server ---


class Simulator:
    """A fake Asterisk PBX listening on a TCP port: hints `N => Custom:N` in `context`,
    device states kept per device, events to every logged-in client that asked for them."""

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
    ) -> None:
        if not CONTEXT_RE.fullmatch(context):
            raise ValueError(f"invalid dialplan context {context!r}")
        if churn < 0:
            raise ValueError("churn must be 0 or more changes per second")
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.context = context
        self.churn = churn
        self.logins = 0
        self.peak_sessions = 0  # most logged-in clients at once (one collector: 1)
        self._rng = random.Random(seed)
        self._hints: dict[str, str] = {}  # exten -> hint, in dialplan order
        self._device_hints: dict[str, list[str]] = {}  # device -> extens whose hint has it
        self._hint_devices: list[str] = []  # what churn picks from
        self._devices: dict[str, str] = {}  # device -> state; kept across restarts, like astdb
        self._active: dict[str, None] = {}  # devices not NOT_INUSE, ordered (seedable churn)
        self._set_extensions(extensions)
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._churn_task: asyncio.Task[None] | None = None
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._started_at = self._reloaded_at = time.monotonic()

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
        self._started_at = self._reloaded_at = time.monotonic()
        if self.churn > 0:
            self._churn_task = asyncio.create_task(self._churn(), name=f"ami-simulator-churn-{self.port}")
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
        tasks = [task for task in (self._churn_task, *self._tasks) if task is not None]
        self._churn_task = None
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
    def extensions(self) -> list[str]:
        return list(self._hints)

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    def device_state(self, device: str) -> str:
        return self._devices.get(device, "UNKNOWN")

    def extension_status(self, exten: str) -> int:
        return self._status(exten)

    def set_device_state(self, device: str, state: str) -> None:
        """Change a device as `devstate change` / Setvar DEVICE_STATE would. Unlike Setvar,
        UNKNOWN is allowed (a real channel driver can report it)."""
        state = state.upper()
        if state not in DEVICE_STATES:
            raise ValueError(f"{state!r} is not one of {', '.join(DEVICE_STATES)}")
        self._change_device(device, state)

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

    async def restart(self, extensions: list[str] | None = None) -> None:
        """`core restart now`: Shutdown to every client, close them, optionally load a new
        set of extensions, and come back at once on the same port with uptime 0."""
        if extensions is not None:
            self._set_extensions(extensions)  # a bad list raises before anyone is told
        victims = list(self._sessions)
        log.info("restarting: %d clients get Shutdown", len(victims))
        self._broadcast(SYSTEM, shutdown_event(), victims)
        self._started_at = self._reloaded_at = time.monotonic()
        await asyncio.gather(*(s.close("graceful") for s in victims))

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
        return username.lower() == self.username.lower() and hmac.compare_digest(
            secret.encode(), self.secret.encode()
        )

    async def wait_thawed(self) -> None:
        await self._thawed.wait()

    def fully_booted(self) -> bytes:
        now = time.monotonic()
        return encode(
            [
                ("Event", "FullyBooted"),
                ("Privilege", "system,all"),
                ("Uptime", int(now - self._started_at)),
                ("LastReload", int(now - self._reloaded_at)),
                ("Status", "Fully Booted"),
            ]
        )

    def extension_state_list(self, action_id: str) -> bytes:
        """ExtensionStateList, as transcript 03: ack, one item per hint, completion."""
        if not self._hints:
            return error(action_id, "No dialplan hints are available")
        items = [
            extension_status(exten, self.context, hint, self._status(exten), list_id=action_id)
            for exten, hint in self._hints.items()
        ]
        return b"".join(
            [
                response(
                    "Success",
                    action_id,
                    ("EventList", "start"),
                    ("Message", "Extension Statuses will follow"),
                ),
                *items,
                list_complete("ExtensionStateListComplete", action_id, len(items)),
            ]
        )

    def device_state_list(self, action_id: str) -> bytes:
        """DeviceStateList, as transcript 04."""
        items = [
            device_state_change(device, state, list_id=action_id) for device, state in self._devices.items()
        ]
        return b"".join(
            [
                response(
                    "Success",
                    action_id,
                    ("EventList", "start"),
                    ("Message", "Device State Changes will follow"),
                ),
                *items,
                list_complete("DeviceStateListComplete", action_id, len(items)),
            ]
        )

    def reload_dialplan(self) -> None:
        """`dialplan reload`: every hint is re-sent, changed or not (transcript 20)."""
        self._reloaded_at = time.monotonic()
        for exten in self._hints:
            self._broadcast(CALL, self._extension_event(exten))

    def schedule_restart(self) -> None:
        """A restart asked for by a client runs apart from that client's session, which it
        closes."""
        self._spawn(self.restart(), name=f"ami-simulator-restart-{self.port}")

    # --- internals ---

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as stop() ran
            writer.transport.abort()
            return
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)

    def _set_extensions(self, extensions: Iterable[str]) -> None:
        hints: dict[str, str] = {}
        for exten in extensions:
            if not EXTEN_RE.fullmatch(exten):
                raise ValueError(f"invalid extension {exten!r}")
            hints[exten] = f"Custom:{exten}"
        if len(hints) > MAX_EXTENSIONS:
            raise ValueError(f"more than {MAX_EXTENSIONS} extensions")
        self._hints = hints
        self._device_hints = {}
        for exten, hint in hints.items():
            for device in hint_devices(hint):
                self._device_hints.setdefault(device, []).append(exten)
                self._devices.setdefault(device, "NOT_INUSE")
        self._hint_devices = list(self._device_hints)

    def _status(self, exten: str) -> int:
        return aggregate_status(
            self._devices.get(device, "UNKNOWN") for device in hint_devices(self._hints[exten])
        )

    def _extension_event(self, exten: str) -> bytes:
        return extension_status(exten, self.context, self._hints[exten], self._status(exten))

    def _change_device(self, device: str, state: str) -> None:
        """Set a device; a DeviceStateChange when its state changed, and an ExtensionStatus
        for each hint whose aggregate status changed with it (as the stasis cache does)."""
        if self._devices.get(device) == state:
            return
        extens = self._device_hints.get(device, [])
        before = {exten: self._status(exten) for exten in extens}
        self._devices[device] = state
        if state == "NOT_INUSE":
            self._active.pop(device, None)
        else:
            self._active[device] = None
        log.debug("%s is now %s", device, state)
        self._broadcast(CALL, device_state_change(device, state))
        for exten in extens:
            if self._status(exten) != before[exten]:
                self._broadcast(CALL, self._extension_event(exten))

    def _broadcast(self, category: int, data: bytes, sessions: Iterable[_Session] | None = None) -> None:
        if self.frozen:
            return
        for session in list(self._sessions if sessions is None else sessions):
            session.send_event(category, data)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _churn(self) -> None:
        """About `churn` device changes a second (a Poisson process), following call patterns."""
        while True:
            await asyncio.sleep(self._rng.expovariate(self.churn))
            self._churn_step()

    def _churn_step(self) -> None:
        device = self._churn_device()
        if device is None:
            return
        states, weights = _CHURN_NEXT.get(self._devices.get(device, ""), (("NOT_INUSE",), (1.0,)))
        self._change_device(device, self._rng.choices(states, weights)[0])

    def _churn_device(self) -> str | None:
        """Half the time move an ongoing call on, so calls end instead of piling up."""
        active = [device for device in self._active if device in self._device_hints]
        if active and self._rng.random() < _CHURN_ACTIVE_SHARE:
            return self._rng.choice(active)
        if not self._hint_devices:
            return None
        return self._rng.choice(self._hint_devices)


class _Session:
    """One client connection: reads actions, answers them, and passes on the events its
    event mask asks for once it has logged in."""

    def __init__(
        self, simulator: Simulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._sim = simulator
        self._reader = reader
        self._writer = writer
        self._task = asyncio.current_task()
        self._done = asyncio.Event()
        self.peer = _ami_address(writer.get_extra_info("peername"))
        self.authenticated = False
        self.event_mask = ALL_EVENTS  # Asterisk's default is "Events: on"
        self._actions: dict[str, Callable[[Frame, str], bool]] = {
            "login": self._login,
            "logoff": self._logoff,
            "ping": self._ping,
            "events": self._events,
            "extensionstatelist": self._extension_state_list,
            "devicestatelist": self._device_state_list,
            "setvar": self._setvar,
            "command": self._command,
        }

    # --- connection ---

    async def run(self) -> None:
        log.debug("AMI client connected from %s", self.peer)
        try:
            await self._converse()
        except (asyncio.IncompleteReadError, ConnectionError):
            log.debug("AMI client %s went away", self.peer)
        except (asyncio.LimitOverrunError, FrameTooLarge):
            log.warning("dropping AMI client %s: message over %d bytes", self.peer, MAX_FRAME_BYTES)
            self._writer.transport.abort()
        except TimeoutError:
            log.warning("dropping AMI client %s: it does not read its replies", self.peer)
            self._writer.transport.abort()
        finally:
            self.authenticated = False
            self._close_transport()
            self._done.set()

    async def _converse(self) -> None:
        await self._sim.wait_thawed()  # a frozen PBX does not even send its banner
        self.send(BANNER)
        while True:
            frame = await read_frame(self._reader)
            if self._sim.frozen:
                log.debug("frozen: %s's %r goes unanswered", self.peer, frame.get("Action"))
                continue
            keep_open = self._handle(frame)
            await asyncio.wait_for(self._writer.drain(), WRITE_TIMEOUT)
            if not keep_open:
                return

    async def close(self, how: str) -> None:
        """End the connection: "graceful" flushes what was sent (Shutdown, Goodbye) first,
        "abort" throws it away, "reset" also sends a TCP RST, like a broken network."""
        if how == "graceful":
            self._writer.close()
        else:
            self.abort(reset=how == "reset")
        try:
            await asyncio.wait_for(self._done.wait(), CLOSE_TIMEOUT)
        except TimeoutError:  # e.g. a session still waiting for a thaw
            self._writer.transport.abort()
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()
            await self._done.wait()

    def abort(self, *, reset: bool = False) -> None:
        """Drop the connection now, unsent data and all; `reset` sends a TCP RST."""
        if reset:
            sock = self._writer.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    def _close_transport(self) -> None:
        """Flush and close; abort instead if the client still has not read it in a while."""
        if self._writer.transport.is_closing():
            return
        self._writer.close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._writer.transport.abort)

    def send(self, data: bytes) -> None:
        if self._writer.transport.is_closing():
            return
        self._writer.write(data)
        if self._writer.transport.get_write_buffer_size() > MAX_PENDING_BYTES:
            log.warning("dropping AMI client %s: it does not read its events", self.peer)
            self._writer.transport.abort()

    def send_event(self, category: int, data: bytes) -> None:
        if self.authenticated and self.event_mask & category == category:
            self.send(data)

    # --- actions; each answers and says whether the connection stays open ---

    def _handle(self, frame: Frame) -> bool:
        action = frame.get("Action")
        action_id = frame.get("ActionID")
        if not action:
            self.send(error(action_id, "Missing action in request"))
            return True
        name = action.lower()
        if not self.authenticated and name not in ("login", "logoff"):
            self.send(error(action_id, "Permission denied"))
            return True
        handler = self._actions.get(name)
        if handler is None:
            self.send(
                error(
                    action_id,
                    f"Invalid/unknown command: {action}."
                    " Use Action: ListCommands to show available commands.",
                )
            )
            return True
        log.debug("%s: %s", self.peer, action)
        return handler(frame, action_id)

    def _login(self, frame: Frame, action_id: str) -> bool:
        if self.authenticated:
            self.send(response("Success", action_id, ("Message", "Already authenticated")))
            return True
        username = frame.get("Username")
        if not self._sim.check_credentials(username, frame.get("Secret")):
            log.info("AMI login of %r from %s failed", username, self.peer)
            self.send(error(action_id, "Authentication failed"))
            return False  # Asterisk hangs up at once (transcript 02)
        mask = event_mask(frame.get("Events"))
        if mask is not None:
            self.event_mask = mask
        self.authenticated = True
        self._sim.logins += 1
        self._sim.peak_sessions = max(self._sim.peak_sessions, self._sim.sessions)
        log.info("AMI user %s logged in from %s", username, self.peer)
        self.send(response("Success", action_id, ("Message", "Authentication accepted")))
        if self.event_mask & SYSTEM:
            self.send(self._sim.fully_booted())
        if self.event_mask & SECURITY:
            self.send(self._successful_auth(username))
        return True

    def _successful_auth(self, username: str) -> bytes:
        """The security event Asterisk queues after a login (transcript 01)."""
        now = _event_tv()
        return encode(
            [
                ("Event", "SuccessfulAuth"),
                ("Privilege", "security,all"),
                ("EventTV", now),
                ("Severity", "Informational"),
                ("Service", "AMI"),
                ("EventVersion", "1"),
                ("AccountID", username),
                ("SessionID", f"0x{id(self):x}"),
                ("LocalAddress", _ami_address(self._writer.get_extra_info("sockname"))),
                ("RemoteAddress", self.peer),
                ("UsingPassword", "0"),
                ("SessionTV", now),
            ]
        )

    def _logoff(self, frame: Frame, action_id: str) -> bool:
        self.send(response("Goodbye", action_id, ("Message", "Thanks for all the fish.")))
        return False

    def _ping(self, frame: Frame, action_id: str) -> bool:
        self.send(response("Success", action_id, ("Ping", "Pong"), ("Timestamp", _timestamp())))
        return True

    def _events(self, frame: Frame, action_id: str) -> bool:
        mask = event_mask(frame.get("EventMask"))
        if mask is None:
            self.send(error(action_id, "Invalid event mask"))
            return True
        self.event_mask = mask
        self.send(response("Success", action_id, ("Events", "On" if mask else "Off")))
        return True

    def _extension_state_list(self, frame: Frame, action_id: str) -> bool:
        self.send(self._sim.extension_state_list(action_id))
        return True

    def _device_state_list(self, frame: Frame, action_id: str) -> bool:
        self.send(self._sim.device_state_list(action_id))
        return True

    def _setvar(self, frame: Frame, action_id: str) -> bool:
        variable = frame.get("Variable")
        value = frame.get("Value")
        if not variable:
            self.send(error(action_id, "No variable specified"))
        elif frame.get("Channel"):
            self.send(error(action_id, "No such channel"))  # the simulator has no channels
        elif match := _DEVICE_STATE_FUNC.fullmatch(variable):
            target = devstate_write(match.group(1), value)
            if target is None:
                self.send(error(action_id, "Variable not set"))
            else:  # the reply goes out before the events (transcript 11)
                self.send(response("Success", action_id, ("Message", "Variable Set")))
                self._sim.set_device_state(*target)
        elif variable.endswith(")"):  # some other dialplan function: not registered here
            self.send(error(action_id, "Variable not set"))
        else:
            self.send(response("Success", action_id, ("Message", "Variable Set")))
        return True

    def _command(self, frame: Frame, action_id: str) -> bool:
        command = frame.get("Command")
        words = command.split()
        line = " ".join(words).lower()
        if not words:
            self.send(error(action_id, "No command provided"))
        elif line in _RELOAD_COMMANDS:
            self.send(command_output("Success", action_id, ["Dialplan reloaded."]))
            self._sim.reload_dialplan()
        elif line in _RESTART_COMMANDS:
            # The CLI handler never returns (Asterisk exec()s itself): no reply, only Shutdown.
            self._sim.schedule_restart()
        else:
            best = _best_command_prefix(words)
            self.send(
                command_output(
                    "Error",
                    action_id,
                    [
                        f"No such command '{command}'"
                        f" (type 'core show help {best}' for other possible commands)"
                    ],
                )
            )
        return True


def _best_command_prefix(words: list[str]) -> str:
    """cli.c find_best(): the words up to and including the first one no command starts with."""
    known = [c.split() for c in (*_RELOAD_COMMANDS, *_RESTART_COMMANDS, *_OTHER_COMMANDS)]
    for count in range(1, len(words) + 1):
        prefix = [w.lower() for w in words[:count]]
        if not any(command[:count] == prefix for command in known):
            return " ".join(words[:count])
    return " ".join(words)


# --- helpers for the CLI ---


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


async def run_simulator(
    host: str,
    port: int,
    extensions: list[str],
    username: str,
    secret: str,
    churn: float,
    context: str,
) -> None:
    """Serve a simulated PBX until cancelled (`blf-panel simulate`)."""
    simulator = Simulator(
        extensions,
        host=host,
        port=port,
        username=username,
        secret=secret,
        context=context,
        churn=churn,
    )
    async with simulator:
        await asyncio.Event().wait()

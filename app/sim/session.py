"""One client's AMI session: banner, login, the actions it answers, the events its mask lets through.
Do not break: a reply goes out before the events its action causes (transcripts 11, 12), a client
that is not logged in gets no events at all, and its user's classes and eventfilters (users.py)
decide what it may run and read, as in manager.c."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.sim import transfers
from app.sim.events import db_get_response, successful_auth
from app.sim.model import DEVICE_STATE_FUNC, PRESENCE_STATE_FUNC, devstate_write, presence_write
from app.sim.users import ManagerUser, admits
from app.sim.wire import (
    ALL_EVENTS,
    BANNER,
    MAX_FRAME_BYTES,
    SECURITY,
    SYSTEM,
    Frame,
    FrameTooLarge,
    ami_address,
    command_output,
    error,
    event_list,
    event_mask,
    read_frame,
    response,
    timestamp,
)

if TYPE_CHECKING:
    from app.sim.server import Simulator

log = logging.getLogger(__name__)

MAX_PENDING_BYTES = 8 * 1024 * 1024  # unread output before a client is dropped
WRITE_TIMEOUT = 5.0  # Asterisk drops a client that does not read (writetimeout)
CLOSE_TIMEOUT = 1.0  # time a graceful close may take before the socket is aborted

# The CLI commands the `Command` action knows; anything else is "No such command".
_RELOAD_COMMANDS = frozenset({"dialplan reload"})
_RESTART_COMMANDS = frozenset({"core restart now", "core restart gracefully", "core restart when convenient"})
_SHOW_CONNECTED = "manager show connected"
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


class Session:
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
        self.peer = ami_address(writer.get_extra_info("peername"))
        self.authenticated = False
        self.username = ""
        self.user: ManagerUser | None = None  # the manager.conf user it logged in as
        self.started = int(time.time())  # Asterisk's sessionstart: when the client connected
        self.event_mask = ALL_EVENTS  # Asterisk's default is "Events: on"
        self._actions: dict[str, Callable[[Frame, str], bool]] = {
            "login": self._login,
            "logoff": self._logoff,
            "ping": self._ping,
            "events": self._events,
            "extensionstatelist": self._list(simulator.extension_state_list),
            "devicestatelist": self._list(simulator.device_state_list),
            "setvar": self._setvar,
            "command": self._command,
            "presencestatelist": self._list(simulator.presence_state_list),
            "coreshowchannels": self._list(simulator.core_show_channels),
            "pjsipshowendpoint": self._pjsip_show_endpoint,
            "dbget": self._db_get,
            "listcommands": self._list_commands,
            "queuestatus": self._queue_status,
            "queuesummary": self._queue_summary,
            "queuepause": self._queue_change,
            "queueadd": self._queue_change,
            "queueremove": self._queue_change,
            "queuepenalty": self._queue_change,
            "originate": self._moving(transfers.originate),
            "blindtransfer": self._moving(transfers.blind_transfer),
            "redirect": self._moving(transfers.redirect),
            "atxfer": self._moving(transfers.atxfer),
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

    def listing(self) -> tuple[str, str, int, int, int]:
        """This session as a `manager show connected` row: user, IP, start, fd, perms (its
        read classes; the row shows them in both permission columns)."""
        peer = self._writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else ""
        sock = self._writer.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        return self.username, ip, self.started, fd, self.user.read_mask if self.user else ALL_EVENTS

    def send_event(self, category: int, data: bytes) -> None:
        """manager.c process_events(): every class of the event in the session's mask (its
        user's read classes and what it asked for), then the user's eventfilters."""
        if not self.authenticated or self.event_mask & category != category:
            return
        if self.user is None or admits(self.user.filters, data):
            self.send(data)

    # --- actions; each answers and says whether the connection stays open ---

    def _list(self, build: Callable[[str], bytes]) -> Callable[[Frame, str], bool]:
        """A list action whose whole reply the PBX builds from the ActionID."""

        def handler(frame: Frame, action_id: str) -> bool:
            self.send(build(action_id))
            return True

        return handler

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
        handler = self._actions.get(name) if self._sim.knows_action(name) else None  # booting: not yet
        if handler is None:
            self.send(
                error(
                    action_id,
                    f"Invalid/unknown command: {action}."
                    " Use Action: ListCommands to show available commands.",
                )
            )
            return True
        if self.user is not None and not self.user.may(name):
            log.debug("%s: %s refused to %s", self.peer, action, self.username)
            self.send(error(action_id, "Permission denied"))
            return True
        log.debug("%s: %s", self.peer, action)
        return handler(frame, action_id)

    def _login(self, frame: Frame, action_id: str) -> bool:
        if self.authenticated:
            self.send(response("Success", action_id, ("Message", "Already authenticated")))
            return True
        username = frame.get("Username")
        user = self._sim.manager_user(username, frame.get("Secret"))
        if user is None:
            log.info("AMI login of %r from %s failed", username, self.peer)
            self.send(error(action_id, "Authentication failed"))
            return False  # Asterisk hangs up at once (transcript 02)
        # manager.c authenticate(): the events asked for, within the user's read classes.
        mask = event_mask(frame.get("Events"))
        self.event_mask = user.read_mask if mask is None else user.read_mask & mask
        self.user = user
        self.authenticated = True
        self.username = username
        self._sim.logins += 1
        self._sim.peak_sessions = max(self._sim.peak_sessions, self._sim.sessions)
        log.info("AMI user %s logged in from %s", username, self.peer)
        self.send(response("Success", action_id, ("Message", "Authentication accepted")))
        if self.event_mask & SYSTEM:
            self.send(self._sim.fully_booted())
        if self.event_mask & SECURITY:  # a queued event: the user's eventfilters apply to it
            local = ami_address(self._writer.get_extra_info("sockname"))
            self.send_event(SECURITY, successful_auth(username, f"0x{id(self):x}", local, self.peer))
        return True

    def _logoff(self, frame: Frame, action_id: str) -> bool:
        self.send(response("Goodbye", action_id, ("Message", "Thanks for all the fish.")))
        return False

    def _ping(self, frame: Frame, action_id: str) -> bool:
        self.send(response("Success", action_id, ("Ping", "Pong"), ("Timestamp", timestamp())))
        return True

    def _events(self, frame: Frame, action_id: str) -> bool:
        mask = event_mask(frame.get("EventMask"))
        if mask is None:
            self.send(error(action_id, "Invalid event mask"))
            return True
        # set_eventmask(): within the read classes; the reply tells what was asked, not granted.
        self.event_mask = (self.user.read_mask if self.user else ALL_EVENTS) & mask
        self.send(response("Success", action_id, ("Events", "On" if mask else "Off")))
        return True

    def _setvar(self, frame: Frame, action_id: str) -> bool:
        variable = frame.get("Variable")
        value = frame.get("Value")
        if not variable:
            self.send(error(action_id, "No variable specified"))
        elif frame.get("Channel") and not self._sim.has_channel(frame.get("Channel")):
            self.send(error(action_id, "No such channel"))
        elif match := DEVICE_STATE_FUNC.fullmatch(variable):
            target = devstate_write(match.group(1), value)
            if target is None:
                self.send(error(action_id, "Variable not set"))
            else:  # the reply goes out before the events (transcript 11)
                self.send(response("Success", action_id, ("Message", "Variable Set")))
                self._sim.set_device_state(*target)
        elif match := PRESENCE_STATE_FUNC.fullmatch(variable):
            if presence_write(match.group(1), value) is None:
                self.send(error(action_id, "Variable not set"))
            else:  # the reply goes out before the events (transcript 12)
                self.send(response("Success", action_id, ("Message", "Variable Set")))
                self._sim.write_presence(match.group(1), value)
        elif variable.endswith(")"):  # some other dialplan function: not registered here
            self.send(error(action_id, "Variable not set"))
        else:
            self.send(response("Success", action_id, ("Message", "Variable Set")))
        return True

    def _moving(
        self, answer: Callable[[Simulator, Frame, str], transfers.Reply]
    ) -> Callable[[Frame, str], bool]:
        """An action of app/sim/transfers.py: its reply goes out before its events."""

        def handler(frame: Frame, action_id: str) -> bool:
            reply, change = answer(self._sim, frame, action_id)
            self.send(reply)
            if change is not None:
                change()
            return True

        return handler

    def _queue_status(self, frame: Frame, action_id: str) -> bool:
        self.send(self._sim.queues.status(action_id, frame.get("Queue"), frame.get("Member")))
        return True

    def _queue_summary(self, frame: Frame, action_id: str) -> bool:
        self.send(self._sim.queues.summary(action_id, frame.get("Queue")))
        return True

    def _queue_change(self, frame: Frame, action_id: str) -> bool:
        """QueuePause/QueueAdd/QueueRemove/QueuePenalty: the reply goes out before the
        events the change causes (transcript 17)."""
        queues, action = self._sim.queues, frame.get("Action").lower()
        queue, interface = frame.get("Queue"), frame.get("Interface")
        if action == "queuepause":
            reply, change = queues.pause(
                action_id, queue, interface, frame.get("Paused"), frame.get("Reason")
            )
        elif action == "queueadd":
            reply, change = queues.add(action_id, frame.get)
        elif action == "queueremove":
            reply, change = queues.remove(action_id, queue, interface)
        else:
            reply, change = queues.penalty(action_id, queue, interface, frame.get("Penalty"))
        self.send(reply)
        if change is not None:
            change()
        return True

    def _list_commands(self, frame: Frame, action_id: str) -> bool:
        """manager.c action_listcommands(): one `Name: synopsis (Priv: ...)` line per action
        registered now (a booting PBX has not all) that the user may run, in one message."""
        assert self.user is not None  # only a logged-in client gets here
        lines = [(name, text) for name, text in self.user.commands() if self._sim.knows_action(name.lower())]
        self.send(response("Success", action_id, *lines))
        return True

    def _pjsip_show_endpoint(self, frame: Frame, action_id: str) -> bool:
        """res_pjsip ami_show_endpoint(); its error texts end in a newline, which Asterisk
        sends as it is, inside the Message line."""
        endpoint = frame.get("Endpoint")
        if endpoint[:6].lower() == "pjsip/":
            endpoint = endpoint[6:]
        detail = self._sim.endpoint_detail(endpoint, action_id) if endpoint else None
        if not frame.get("Endpoint"):
            self.send(error(action_id, "PJSIPShowEndpoint requires an endpoint name\n"))
        elif detail is None:
            self.send(error(action_id, f"Unable to retrieve endpoint {endpoint}\n"))
        else:
            message = "Following are Events for each object associated with the Endpoint"
            self.send(event_list(action_id, message, [detail], "EndpointDetailComplete"))
        return True

    def _db_get(self, frame: Frame, action_id: str) -> bool:
        """main/db.c manager_dbget(): the value comes in a DBGetResponse whose ActionID is last."""
        family, key = frame.get("Family"), frame.get("Key")
        value = self._sim.db_get(family, key) if family and key else None
        if not family:
            self.send(error(action_id, "No family specified."))
        elif not key:
            self.send(error(action_id, "No key specified."))
        elif value is None:
            self.send(error(action_id, "Database entry not found"))
        else:
            item = db_get_response(family, key, value, action_id)
            self.send(event_list(action_id, "Result will follow", [item], "DBGetComplete"))
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
        elif line == _SHOW_CONNECTED:
            self.send(command_output("Success", action_id, self._sim.connected()))
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
    known = [c.split() for c in (*_RELOAD_COMMANDS, *_RESTART_COMMANDS, _SHOW_CONNECTED, *_OTHER_COMMANDS)]
    for count in range(1, len(words) + 1):
        prefix = [w.lower() for w in words[:count]]
        if not any(command[:count] == prefix for command in known):
            return " ".join(words[:count])
    return " ".join(words)

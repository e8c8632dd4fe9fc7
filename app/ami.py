"""The AMI session over panoramisk: framing we can trust, login, list actions, replies
that fail when the link dies, and the PBX's own word that it has booted. No policy: when to
connect, what to ask and what to do with the answers is the collector's. Do not break: an
error reply is an `ActionFailed`, never an empty list (a booting PBX answers errors).

panoramisk 1.4 internals we rely on, each because its public API cannot do the job
(checked against 1.4; its unreleased 1.5 changes `send_action`'s return type):
- `AMIProtocol.data_received` is replaced (`AmiProtocol`): panoramisk decodes each chunk
  before splitting frames, so one bad byte or a huge frame breaks the session; ours splits
  bytes on the blank line first, caps a frame at 64 KiB and numbers arrivals.
- `Manager.connection_made(future)` is called by `AmiSession.open` with a connection we
  made ourselves under a timeout: it is what wires the protocol and sends `Login`
  (`authenticated_future`); `Manager.connect` would retry and reconnect on its own.
- `Manager.ping`, `connection_lost` and `_connected` are overridden: panoramisk would
  ping and reconnect by itself, and parks the actions of a dead link instead of failing
  them; the collector decides both.
- `Action.completed` (`ListAction`): panoramisk ends a list only at an event whose name
  ends in "Complete"; Asterisk's own end marker is `EventList: Complete`.
- `Manager.dispatch` is extended and panoramisk's own `FullyBooted` handler removed: it
  would start an unowned task to resend actions parked on a dead link (we park none), and
  the `FullyBooted` Asterisk writes right after the login reply is dispatched before anyone
  outside could register for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024  # a real AMI frame is a few hundred bytes
ACTION_TIMEOUT = 30.0  # a full list of thousands of hints still arrives within this
# Asterisk's answer to an action no loaded module has registered (manager.c process_message):
# during a boot, until the module that brings it is loaded.
UNKNOWN_ACTION = "Invalid/unknown command"
# manager.c: no `write` permission for the action's class; also, for a moment, an action whose
# module is registered but not yet running.
PERMISSION_DENIED = "Permission denied"
# ast_true()/ast_false() words: an `Events:` value that is one of them means all or nothing.
_ALL_OR_NOTHING = frozenset({"yes", "true", "y", "t", "1", "on", "no", "false", "n", "f", "0", "off"})


@dataclass(frozen=True)
class AmiTarget:
    """Where and as whom the collector logs in."""

    host: str
    port: int
    username: str
    secret: str
    events: str = "call,agent,system"  # AMI_EVENTS: lamps, calls, presence; queues; boot, reloads
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    reconnect_max: float = 30.0
    auth_retry: float = 60.0
    boot_wait: float = 60.0

    @property
    def address(self) -> str:
        """`host:port`, an IPv6 address in brackets; nothing about who logs in."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.username}@{self.address}"


def login_events(events: str) -> str:
    """The `Events:` of the login: AMI_EVENTS plus `system`, the class of `FullyBooted`
    (manager.c action_login sends it only to a session whose events hold system; the
    user also needs `read = system`). "on"/"off" and their like already say all or none."""
    classes = events.split(",")
    if events.lower() in _ALL_OR_NOTHING or "system" in classes or "all" in classes:
        return events
    return f"{events},system"


class LoginRefused(Exception):
    """The PBX answered the Login with an error: wrong user or secret."""


class LinkLost(Exception):
    """The AMI connection closed, or the PBX stopped answering."""


class ActionFailed(Exception):
    """The PBX answered an action with `Response: Error`."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action}: {message}")
        self.action = action
        self.message = message

    @property
    def unavailable(self) -> bool:
        """The action cannot run here now (not loaded yet, or not allowed), as opposed to
        an answer about what was asked (no such endpoint, no such database entry)."""
        return self.message.startswith(UNKNOWN_ACTION) or self.message.startswith(PERMISSION_DENIED)


def link_error(error: BaseException) -> str:
    """Why the PBX cannot be reached, in a few words for every viewer's banner: from the
    kind of error only, never from what the PBX said or the settings hold (no user name,
    no secret)."""
    if isinstance(error, LoginRefused):
        return "login refused"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "host name not found"
    if isinstance(error, TimeoutError):
        return "no answer"
    if isinstance(error, LinkLost):
        return "connection closed"
    if isinstance(error, OSError) and error.strerror:
        return " ".join(error.strerror.lower().split())[:80]
    return type(error).__name__


class AmiProtocol(AMIProtocol):
    """panoramisk's protocol with framing we can trust: bytes are split on the blank
    line before decoding, a frame that is too big or not UTF-8 is logged and skipped,
    and each message gets an arrival number so list items and events can be ordered."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._buffer = bytearray()
        self._discarding = False
        self._bad_utf8 = False  # warn once per connection, not once per frame
        self.arrivals = 0

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_FRAME_BYTES:
                    if not self._discarding:
                        log.warning("AMI frame over %d bytes; skipping it", MAX_FRAME_BYTES)
                    self._discarding = True
                    del self._buffer[:-3]  # keep a possible partial terminator
                return
            frame = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            if self._discarding or len(frame) > MAX_FRAME_BYTES:
                if not self._discarding:
                    log.warning("AMI frame over %d bytes; skipping it", MAX_FRAME_BYTES)
                self._discarding = False
                continue
            self._frame_received(frame)

    def _frame_received(self, frame: bytes) -> None:
        try:
            text = frame.decode("utf-8")
        except UnicodeDecodeError:
            # A trunk may send Latin-1 caller names: keep the frame (a name shows a
            # replacement character; keys with one fail validation and are skipped).
            level = logging.DEBUG if self._bad_utf8 else logging.WARNING
            log.log(level, "AMI frame is not UTF-8; undecodable bytes replaced: %r", frame[:80])
            self._bad_utf8 = True
            text = frame.decode("utf-8", "replace")
        message = Message.from_line(text.strip())
        if message is None:
            if "Asterisk Call Manager/" not in text:
                log.warning("AMI frame without Event or Response; skipping it: %r", text[:80])
            return
        self.arrivals += 1
        message.arrival = self.arrivals
        self.handle_message(message)


class ListAction(Action):
    """An action answered by a list; it ends at `EventList: Complete`, whatever the
    closing event is called (panoramisk only knows names ending in Complete)."""

    @property
    def completed(self) -> bool:
        if str(self.responses[-1].get("EventList", "")).lower() == "complete":
            return True
        return super().completed


class AmiSession(Manager):
    """One AMI connection. Unlike a plain panoramisk Manager it never reconnects by
    itself and never pings on its own: the `Collector` owns both decisions. `booted` is
    done once the PBX has said `FullyBooted` on this connection (at login, or when a boot
    in progress ends)."""

    def __init__(self, target: AmiTarget) -> None:
        super().__init__(
            host=target.host,
            port=target.port,
            username=target.username,
            secret=target.secret,
            events=login_events(target.events),
            protocol_factory=AmiProtocol,
            loop=asyncio.get_running_loop(),
            ping_delay=0,
        )
        self.callbacks["FullyBooted"].remove(self.send_awaiting_actions)
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.booted: asyncio.Future[None] = self.loop.create_future()

    @property
    def arrivals(self) -> int:
        """Frames received so far on this connection (any frame: a sign of life)."""
        protocol = self.protocol
        return protocol.arrivals if isinstance(protocol, AmiProtocol) else 0

    def dispatch(self, event: Message) -> list[str]:
        if event.event == "FullyBooted" and not self.booted.done():
            self.booted.set_result(None)
        return super().dispatch(event)  # type: ignore[no-any-return]

    async def open(self, timeout: float) -> None:
        """Connect and log in; raises OSError, TimeoutError or LoginRefused."""
        async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
            _transport, protocol = await self.loop.create_connection(
                AmiProtocol, self.config["host"], self.config["port"]
            )
        done: asyncio.Future[Any] = self.loop.create_future()
        done.set_result((_transport, protocol))
        self.connection_made(done)  # panoramisk wires the protocol and sends Login
        login = self.authenticated_future
        reply = await self.request_future(login, timeout)
        if not reply.success:
            raise LoginRefused(reply.message or "login refused")

    async def request(self, action: dict[str, str], timeout: float = ACTION_TIMEOUT) -> Any:
        return await self.request_future(self.send_action(Action(action)), timeout)

    async def request_list(self, name: str, timeout: float = ACTION_TIMEOUT, **fields: str) -> list[Message]:
        """The items of a list action; raises ActionFailed when the PBX answers an error
        (an action not loaded yet during a boot, no hints at all, no such endpoint)."""
        action = ListAction({"Action": name, **fields})
        reply = await self.request_future(self.send_action(action), timeout)
        if isinstance(reply, list):
            return [m for m in reply if "event" in m and str(m.get("EventList", "")).lower() != "complete"]
        if not reply.success:
            raise ActionFailed(name, str(reply.message or ""))
        return []

    async def request_future(self, future: asyncio.Future[Any], timeout: float) -> Any:
        """Wait for an action's reply, but give up when the link is lost, or when nothing at
        all arrived for `timeout` seconds (panoramisk parks actions of a dead connection
        instead of failing them). A PBX still sending a long list before our reply is busy,
        not silent: 10,000 hints are about 1.5 MB, seconds over a slow link."""
        seen = self.arrivals
        while True:
            done, _ = await asyncio.wait({future, self.lost}, timeout=timeout, return_when="FIRST_COMPLETED")
            if future in done:
                return future.result()
            if self.lost in done:
                raise LinkLost("connection closed")
            if self.arrivals == seen:
                raise TimeoutError(f"no answer within {timeout:g}s")
            seen = self.arrivals

    def ping(self) -> None:  # panoramisk's own pinger: never needed, the Collector pings
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connected = False
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        super().close()
        if not self.lost.done():
            self.lost.set_result(None)

"""The actions' own AMI session: at most one per web process, opened on the first action and
closed after ACTION_IDLE_TIMEOUT without one. Do not break: it logs in as the action user with
`Events: off` (never the collector's read-only user), so the PBX sees none while nobody acts.

Every web worker opens its own session to AMI_HOST, also on a host without the collector:
relaying through the collector (memcached or a socket) would add a hop and a process to the
100 ms budget of a click, and would give the collector write access it must not have.

The demo PBX (AMI_HOST empty) is the simulator the panel starts itself, on a port it learns only
then: `reach` points the session at it (runtime.running_collector). A process that does not run
it (the demo's collector runs beside the workers with MEMCACHED_URL) has no PBX to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket

from app.tasks import log_crash

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds for the connection, the banner and the login
REPLY_TIMEOUT = 10.0  # Originate with Async: true answers at once; a list of channels in ms
MAX_FRAME = 65536  # as the collector's reader (app/ami.py): a bigger frame is no AMI reply

Frame = dict[str, str]


class PbxUnreachable(RuntimeError):
    """The action session could not be opened or was lost; the message is words."""


def encode(name: str, fields: dict[str, str]) -> bytes:
    # A CR or LF inside a value would start a new header: the caller's values are checked,
    # this is the last guard.
    lines = [f"Action: {name}"]
    for key, value in fields.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"{key} holds a line break")
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse(raw: bytes) -> Frame:
    frame: Frame = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep and key not in frame:
            frame[key] = value
    return frame


class ActionSession:
    """One logged-in AMI connection, opened when `run` or `items` first needs it. An empty
    `host`: the demo PBX, until `reach` says where it listens."""

    def __init__(self, host: str, port: int, username: str, secret: str, idle_timeout: float) -> None:
        self.host, self.port = host, port
        self.username, self.secret = username, secret
        self.idle_timeout = idle_timeout
        self.opened = 0  # logins so far (a test and /metrics read it)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[list[Frame]]] = {}
        self._lists: dict[str, list[Frame]] = {}

    @property
    def open(self) -> bool:
        return self._writer is not None

    def reach(self, host: str, port: int, secret: str) -> None:
        """Act on the PBX at `host`:`port` with `secret` from now on (the demo PBX, once
        started); a session open to another one ends first."""
        self.host, self.port, self.secret = host, port, secret
        if self._reader_task is not None:
            self._reader_task.cancel()

    async def run(self, name: str, **fields: str) -> Frame:
        """Send one action, return its reply (`Response: Success` or `Error`)."""
        return (await self._ask(name, fields, listing=False))[0]

    async def items(self, name: str, **fields: str) -> list[Frame]:
        """A list action (CoreShowChannels): its items; PbxUnreachable when refused."""
        frames = await self._ask(name, fields, listing=True)
        if frames[0].get("Response") != "Success":
            raise PbxUnreachable(f"the PBX refused {name}: {frames[0].get('Message', 'no reason given')}")
        return [f for f in frames[1:] if f.get("EventList") != "Complete"]

    async def _ask(self, name: str, fields: dict[str, str], *, listing: bool) -> list[Frame]:
        writer = await self._connect()
        action_id = f"act-{next(self._ids)}"
        future: asyncio.Future[list[Frame]] = asyncio.get_running_loop().create_future()
        self._waiting[action_id] = future
        if listing:
            self._lists[action_id] = []
        try:
            writer.write(encode(name, {**fields, "ActionID": action_id}))
            async with asyncio.timeout(REPLY_TIMEOUT):
                return await future
        except TimeoutError:
            raise PbxUnreachable(f"the PBX did not answer {name} within {REPLY_TIMEOUT:g} s") from None
        finally:
            self._waiting.pop(action_id, None)
            self._lists.pop(action_id, None)

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._opening:
            if self._writer is not None:
                return self._writer
            if not self.host:
                raise PbxUnreachable(
                    "the demo PBX does not run in this process: acting needs AMI_HOST set,"
                    " or the demo without MEMCACHED_URL"
                )
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_FRAME)
                    with contextlib.suppress(OSError, AttributeError):
                        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    await reader.readline()  # "Asterisk Call Manager/..."
                    login = {"Username": self.username, "Secret": self.secret, "Events": "off"}
                    writer.write(encode("Login", {**login, "ActionID": "act-login"}))
                    reply = parse(await reader.readuntil(b"\r\n\r\n"))
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
                raise PbxUnreachable(f"cannot reach the PBX at {self.host}:{self.port} ({error})") from None
            if reply.get("Response") != "Success":
                writer.close()
                log.error("AMI login of the action user %r refused: %s", self.username, reply.get("Message"))
                raise PbxUnreachable("the PBX refused the panel's action user (see the server log)")
            self.opened += 1
            log.info("action session to %s:%d opened", self.host, self.port)
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read(reader, writer), name="ami-action-session")
            self._reader_task.add_done_callback(log_crash)
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Hand each reply to its waiter; close after `idle_timeout` with nothing waited for."""
        reason = "idle"
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
                except TimeoutError:
                    if any(not future.done() for future in self._waiting.values()):
                        continue  # an action still waits (REPLY_TIMEOUT bounds it)
                    break
                self._take(parse(raw))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            reason = f"lost: {error}"
        finally:
            self._writer = None
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(PbxUnreachable("the connection to the PBX was lost"))
            writer.close()
            log.info("action session to %s:%d closed (%s)", self.host, self.port, reason)

    def _take(self, frame: Frame) -> None:
        action_id = frame.get("ActionID", "")
        future = self._waiting.get(action_id)
        if future is None or future.done():
            return
        if action_id in self._lists:
            frames = self._lists[action_id]
            frames.append(frame)
            # a list ends with its Complete event, or at once when the PBX refused it
            if frame.get("EventList") == "Complete" or (
                len(frames) == 1 and frame.get("Response") == "Error"
            ):
                future.set_result(frames)
        elif "Response" in frame:
            future.set_result([frame])

    async def close(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

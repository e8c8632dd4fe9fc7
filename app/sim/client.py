"""A raw AMI client: how a script, a test or a benchmark drives a PBX (or the simulator) over TCP.

`action` waits for the reply with its ActionID. `send` only writes; after `read_replies` a task
takes every reply off the socket, so an open-loop sender never backs up, and `action` still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket

USERNAME, SECRET = "blf", "blfsecret"  # the simulator's defaults
TIMEOUT = 10.0  # seconds for the connection, the banner and each reply
USERS_RE = re.compile(r"(\d+) users? connected\.")

# One frame: CRLF `Key: Value` lines, ended by a blank line. A key that repeats (a Command's
# `Output`, one a line) holds its values joined by "\n".
Frame = dict[str, str]


class AmiError(RuntimeError):
    """The PBX refused a login or an action."""


def encode(name: str, **fields: str) -> bytes:
    """One action as it goes on the wire."""
    lines = [f"Action: {name}", *(f"{key}: {value}" for key, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse(raw: bytes) -> Frame:
    frame: Frame = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            frame[key] = f"{frame[key]}\n{value}" if key in frame else value
    return frame


def device_state(device: str, value: str) -> dict[str, str]:
    """The fields of a `Setvar` that sets a device state, e.g. ("Custom:105", "INUSE")."""
    return {"Variable": f"DEVICE_STATE({device})", "Value": value}


class AmiClient:
    """One logged-in AMI session. `reader` and `writer` stay open to a caller that counts
    bytes or writes pre-encoded actions itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer = reader, writer
        self.timeout = timeout
        self.errors = 0  # `Response: Error` replies the reply reader saw
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Frame]] = {}
        self._replies: asyncio.Task[None] | None = None

    @classmethod
    async def login(
        cls,
        port: int,
        *,
        host: str = "127.0.0.1",
        username: str = USERNAME,
        secret: str = SECRET,
        events: bool = False,
        timeout: float = TIMEOUT,
    ) -> AmiClient:
        """Connect, read the banner and log in, with events on or off; AmiError if refused."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(reader, writer, timeout)
        try:
            await asyncio.wait_for(reader.readline(), timeout)  # "Asterisk Call Manager/..."
            events_field = "on" if events else "off"
            reply = await client.action("Login", Username=username, Secret=secret, Events=events_field)
            if reply.get("Response") != "Success":
                raise AmiError(
                    f"AMI login as {username!r} on port {port} refused: {reply.get('Message', reply)}"
                )
        except BaseException:
            writer.close()
            raise
        return client

    def send(self, name: str, **fields: str) -> str:
        """Write one action without waiting; returns its ActionID (a fresh one unless given)."""
        action_id = fields.pop("ActionID", None) or f"c-{next(self._ids)}"
        self.writer.write(encode(name, ActionID=action_id, **fields))
        return action_id

    async def action(self, name: str, **fields: str) -> Frame:
        """Send one action and return the reply with its ActionID; other frames are skipped."""
        action_id = fields.setdefault("ActionID", f"c-{next(self._ids)}")
        if self._replies is None:
            self.send(name, **fields)
            await self.writer.drain()
            return await self.reply(action_id)
        # the reader task hands the reply over, to a future in place before the action goes
        future = self._waiting[action_id] = asyncio.get_running_loop().create_future()
        try:
            self.send(name, **fields)
            await self.writer.drain()
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self._waiting.pop(action_id, None)

    async def reply(self, action_id: str) -> Frame:
        """Read frames up to the reply to an action `send` wrote (not while `read_replies` runs)."""
        if self._replies is not None:
            raise RuntimeError("the reply reader takes the replies; use action()")
        async with asyncio.timeout(self.timeout):
            while True:
                frame = parse(await self.reader.readuntil(b"\r\n\r\n"))
                if frame.get("ActionID") == action_id:
                    return frame

    def read_replies(self) -> None:
        """From now on a task takes every frame off the socket, counts the errors and hands
        each reply that `action` waits for over; `close` ends it."""
        if self._replies is None:
            name = f"ami-replies-{self.writer.get_extra_info('sockname')[1]}"
            self._replies = asyncio.create_task(self._read_replies(), name=name)

    async def _read_replies(self) -> None:
        try:
            while True:
                frame = parse(await self.reader.readuntil(b"\r\n\r\n"))
                if frame.get("Response") == "Error":
                    self.errors += 1
                future = self._waiting.get(frame.get("ActionID", ""))
                if future is not None and not future.done():
                    future.set_result(frame)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            # the PBX went away (or sent a frame past the reader's limit): no reply will come
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"AMI connection lost: {exc}"))

    async def setvar(self, device: str, value: str) -> None:
        """Set a device state, e.g. ("Custom:105", "INUSE"); AmiError if refused."""
        reply = await self.action("Setvar", **device_state(device, value))
        if reply.get("Response") != "Success":
            raise AmiError(f"Setvar DEVICE_STATE({device})={value} refused: {reply.get('Message')}")

    async def command(self, text: str) -> list[str]:
        """A CLI command's output lines (`Action: Command`; one `Output:` a line since Asterisk 14)."""
        reply = await self.action("Command", Command=text)
        if reply.get("Response") != "Success":
            raise AmiError(f"command {text!r} failed: {reply.get('Output', reply.get('Message'))}")
        return reply["Output"].split("\n") if "Output" in reply else []

    async def sessions(self) -> int:
        """Logged-in AMI sessions at the PBX, this one included (`manager show connected`)."""
        lines = await self.command("manager show connected")
        for line in lines:
            if match := USERS_RE.search(line):
                return int(match.group(1))
        raise AmiError(f"no user count in the output of `manager show connected`: {lines}")

    async def close(self) -> None:
        """End the reply reader, if any, and the connection."""
        if self._replies is not None:
            self._replies.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replies
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

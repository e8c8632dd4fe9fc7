"""What the simulator's tests share: the Asterisk 22 transcripts and ways to compare with them,
and a raw AMI client that sends bytes and reads whole messages."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ami"
TIMEOUT = 3.0  # an awaited reply that takes this long is a failure
SILENCE = 0.2  # how long "nothing arrives" is watched for
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
# Headers whose values depend on time, addresses or memory, not on the protocol.
VARIABLE = ("Uptime", "LastReload", "EventTV", "SessionID", "LocalAddress", "RemoteAddress", "SessionTV")
VARIABLE_RE = re.compile(rb"^(%s): [^\r\n]*" % "|".join((*VARIABLE, "Timestamp")).encode(), re.M)
PRESENCE_HINT_RE = re.compile(rb"^(Hint: Custom:[^,\r\n]*),CustomPresence:[^\r\n]*", re.M)

Headers = list[tuple[str, str]]


# --- transcripts ---


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def normalize(data: bytes, renames: dict[bytes, bytes] | None = None) -> bytes:
    """Blank out the values that differ between any two runs; rename our extensions to the
    transcript's. The simulator's hints are `N => Custom:N,CustomPresence:N`: the presence part
    goes, for the lamps of transcripts 09 and 11, whose hints have none."""
    data = VARIABLE_RE.sub(rb"\1: *", data)
    data = PRESENCE_HINT_RE.sub(rb"\1", data)
    for ours, theirs in (renames or {}).items():
        data = data.replace(b"Exten: " + ours + b"\r\n", b"Exten: " + theirs + b"\r\n")
    return data


def messages(data: bytes) -> list[bytes]:
    """The messages of a server stream, each with its blank line, after the banner."""
    assert data.startswith(BANNER)
    body = data[len(BANNER) :]
    assert body == b"" or body.endswith(b"\r\n\r\n")
    return [part + b"\r\n\r\n" for part in body.split(b"\r\n\r\n")[:-1]]


def client_frames(name: str) -> list[bytes]:
    data = fixture(name)
    return [part + b"\r\n\r\n" for part in data.split(b"\r\n\r\n")[:-1]]


def parse(message: bytes) -> Headers:
    lines = message.decode().removesuffix("\r\n\r\n").split("\r\n")
    return [(key, value) for key, _, value in (line.partition(": ") for line in lines)]


def field(message: bytes, name: str) -> str:
    return dict(parse(message))[name]


def shape(message: bytes, fixed: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Header names in order; values only for the headers named in `fixed`."""
    return [(key, value if key in fixed else "*") for key, value in parse(message)]


def segments(stream: list[bytes]) -> list[Counter[bytes]]:
    """The messages as runs that each start at a Response: within a run Asterisk sends
    DeviceStateChange and ExtensionStatus in either order (transcript README)."""
    runs: list[Counter[bytes]] = [Counter()]
    for message in stream:
        if message.startswith(b"Response:"):
            runs.append(Counter())
        runs[-1][message] += 1
    return runs


# --- a raw AMI client ---


class Client:
    """Just enough AMI to drive the simulator: bytes out, whole messages in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = bytearray()

    @property
    def port(self) -> int:
        return self.writer.get_extra_info("sockname")[1]

    async def banner(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        self.received += line
        return line

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, action: str, **headers: str) -> None:
        lines = [f"Action: {action}", *(f"{key}: {value}" for key, value in headers.items())]
        await self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def read(self, timeout: float = TIMEOUT) -> bytes:
        message = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.received += message
        return message

    async def read_many(self, count: int) -> list[bytes]:
        return [await self.read() for _ in range(count)]

    async def read_to_eof(self) -> bytes:
        """Everything up to the server's close; a reset counts as a close."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        except ConnectionResetError:
            rest = b""
        self.received += rest
        return bytes(self.received)

    async def expect_silence(self) -> None:
        with pytest.raises(TimeoutError):
            await self.read(timeout=SILENCE)

    async def expect_closed(self) -> None:
        try:
            data = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        except ConnectionResetError:
            data = b""
        assert data == b""

    async def action(self, action: str, **headers: str) -> bytes:
        await self.send(action, **headers)
        return await self.read()

    async def login(self, events: str = "call", secret: str = "blfsecret") -> bytes:
        """Log in; with only `call` events asked for, the reply is the one message."""
        await self.send("Login", Username="blf", Secret=secret, Events=events, ActionID="login")
        return await self.read()

    async def ping(self, action_id: str = "ping") -> bytes:
        """A round trip: whatever was sent before the Pong has been read by then."""
        reply = await self.action("Ping", ActionID=action_id)
        assert field(reply, "Ping") == "Pong", reply
        return reply

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


Connect = Callable[..., Awaitable[Client]]


async def replay(client: Client, frames: list[bytes]) -> bytes:
    """Send a transcript's client bytes and collect the server's until it hangs up."""
    await client.send_raw(b"".join(frames))
    return await client.read_to_eof()

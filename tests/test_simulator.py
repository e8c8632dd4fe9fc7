"""The simulator over real TCP, checked byte for byte against the Asterisk 22 transcripts."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from app.simulator import (
    MAX_EXTENSIONS,
    MAX_FRAME_BYTES,
    Simulator,
    parse_extension_range,
)
from app.states import DEVICE_STATES, DEVICE_TO_STATUS, STATUS_TEXT

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
TIMEOUT = 3.0  # an awaited reply that takes this long is a failure
SILENCE = 0.2  # how long "nothing arrives" is watched for
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
# Headers whose values depend on time, addresses or memory, not on the protocol.
VARIABLE = ("Uptime", "LastReload", "EventTV", "SessionID", "LocalAddress", "RemoteAddress", "SessionTV")
VARIABLE_RE = re.compile(rb"^(%s): [^\r\n]*" % "|".join((*VARIABLE, "Timestamp")).encode(), re.M)

Headers = list[tuple[str, str]]


# --- transcripts ---


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def normalize(data: bytes, renames: dict[bytes, bytes] | None = None) -> bytes:
    """Blank out the values that differ between any two runs; rename our extensions to the
    transcript's (the simulator's hints are `N => Custom:N`)."""
    data = VARIABLE_RE.sub(rb"\1: *", data)
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


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(["100", "101", "102"], context="blf") as simulator:
        yield simulator


@pytest.fixture
async def connect(sim: Simulator) -> AsyncIterator[Connect]:
    """Open clients (to `sim` unless told otherwise), all closed at teardown."""
    opened: list[Client] = []

    async def _connect(target: Simulator | None = None, *, banner: bool = True) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", (target or sim).port)
        client = Client(reader, writer)
        opened.append(client)
        if banner:
            assert await client.banner() == BANNER
        return client

    yield _connect
    for client in opened:
        await client.close()


async def replay(client: Client, frames: list[bytes]) -> bytes:
    """Send a transcript's client bytes and collect the server's until it hangs up."""
    await client.send_raw(b"".join(frames))
    return await client.read_to_eof()


# --- byte for byte against the transcripts ---


async def test_login_ping_logoff_match_transcript_01(connect: Connect) -> None:
    async with Simulator(["100"], context="blf") as pbx:
        client = await connect(pbx)
        ours = await replay(client, client_frames("01-login-banner-fullybooted.client.txt"))
        assert normalize(ours) == normalize(fixture("01-login-banner-fullybooted.txt"))
        found = dict(header for message in messages(ours) for header in parse(message))
        assert found["LocalAddress"] == f"IPV4/TCP/127.0.0.1/{pbx.port}"
        assert found["RemoteAddress"] == f"IPV4/TCP/127.0.0.1/{client.port}"
        assert re.fullmatch(r"[0-9]+\.[0-9]{6}", found["Timestamp"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", found["EventTV"])
        assert re.fullmatch(r"0x[0-9a-f]+", found["SessionID"])
        assert found["Uptime"] == found["LastReload"] == "0"


async def test_wrong_secret_matches_transcript_02_and_hangs_up(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    ours = await replay(client, client_frames("02-login-wrong-secret.client.txt"))
    assert ours == fixture("02-login-wrong-secret.txt")
    assert sim.logins == 0


async def test_events_off_then_on_matches_transcript_09(connect: Connect) -> None:
    async with Simulator(["lamp1"], context="blf") as pbx:
        client = await connect(pbx)
        login, call, on, off, logoff = client_frames("09-login-events-off-then-on.client.txt")
        await client.send_raw(login)
        await client.read()
        pbx.set_device_state("Custom:lamp1", "INUSE")  # the CLI stimuli of the recording
        await client.send_raw(call)
        await client.read()
        pbx.set_device_state("Custom:lamp1", "NOT_INUSE")
        ours = await replay(client, [on, off, logoff])
        assert normalize(ours, {b"lamp1": b"7001"}) == fixture("09-login-events-off-then-on.txt")


async def test_setvar_and_devstate_changes_match_transcript_11(connect: Connect) -> None:
    renames = {b"lamp1": b"7001", b"lamp2": b"7002", b"DND100": b"7100"}
    async with Simulator(list(map(bytes.decode, renames)), context="blf") as pbx:
        client = await connect(pbx)
        login, *setvars, logoff = client_frames("11-devstate-custom-lamp-and-setvar.client.txt")
        await client.send_raw(login)
        await client.read_many(3)  # Response, FullyBooted, SuccessfulAuth
        for state in ("INUSE", "RINGING", "ONHOLD", "UNAVAILABLE", "NOT_INUSE"):
            pbx.set_device_state("Custom:lamp1", state)
        await client.read_many(10)  # a DeviceStateChange and an ExtensionStatus each
        for frame in setvars:
            await client.send_raw(frame)
            await client.read_many(3)  # Response, DeviceStateChange, ExtensionStatus
        for state in ("BUSY", "NOT_INUSE"):
            pbx.set_device_state("Custom:DND100", state)
        ours = await replay(client, [logoff])
        theirs = fixture("11-devstate-custom-lamp-and-setvar.txt")
        assert segments(messages(normalize(ours, renames))) == segments(messages(normalize(theirs)))


async def test_restart_matches_transcript_21(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.send_raw(client_frames("21-core-restart-now.client.txt")[0])
    await client.read_many(3)
    await sim.restart()  # the recording's CLI `core restart now`
    ours = await client.read_to_eof()
    assert normalize(ours) == normalize(fixture("21-core-restart-now.txt"))


async def test_extension_state_list_has_the_form_of_transcripts_03_and_22(connect: Connect) -> None:
    theirs = messages(fixture("22-after-restart-reconnect.txt"))
    older = messages(fixture("03-extensionstatelist.txt"))
    assert [shape(m) for m in theirs[3:]] == [shape(m) for m in older[3:]]
    fixed = ("Response", "ActionID", "EventList", "Message", "Event", "Context")
    their_ack, their_item, their_end = theirs[3], theirs[4], theirs[-2]
    async with Simulator(["104", "105", "7001"], context="blf") as pbx:
        pbx.set_device_state("Custom:105", "RINGINUSE")
        client = await connect(pbx)
        await client.login()
        await client.send("ExtensionStateList", ActionID="blf-2")
        ack, *items, end = await client.read_many(5)
    assert shape(ack, fixed) == shape(their_ack, fixed)
    assert all(shape(item, fixed) == shape(their_item, fixed) for item in items)
    assert shape(end, fixed) == shape(their_end, fixed)
    assert [field(item, "Exten") for item in items] == ["104", "105", "7001"]
    assert [field(item, "Hint") for item in items] == ["Custom:104", "Custom:105", "Custom:7001"]
    assert [(field(i, "Status"), field(i, "StatusText")) for i in items] == [
        ("0", "Idle"),
        ("9", "InUse&Ringing"),
        ("0", "Idle"),
    ]
    assert field(end, "ListItems") == "3"
    assert b"Privilege" not in b"".join(items)


async def test_device_state_list_has_the_form_of_transcript_04(sim: Simulator, connect: Connect) -> None:
    theirs = messages(fixture("04-devicestatelist.txt"))
    fixed = ("Response", "ActionID", "EventList", "Message", "Event")
    sim.set_device_state("Custom:101", "ONHOLD")
    client = await connect()
    await client.login()
    await client.send("DeviceStateList", ActionID="blf-2")
    ack, *items, end = await client.read_many(5)
    assert shape(ack, fixed) == shape(theirs[3], fixed)
    assert all(shape(item, fixed) == shape(theirs[4], fixed) for item in items)
    assert shape(end, fixed) == shape(theirs[-2], fixed)
    assert [(field(i, "Device"), field(i, "State")) for i in items] == [
        ("Custom:100", "NOT_INUSE"),
        ("Custom:101", "ONHOLD"),
        ("Custom:102", "NOT_INUSE"),
    ]
    assert field(end, "ListItems") == "3"


async def test_dialplan_reload_resends_every_hint(sim: Simulator, connect: Connect) -> None:
    their_event = messages(fixture("20-dialplan-reload.txt"))[3]
    sim.set_device_state("Custom:101", "BUSY")
    client = await connect()
    await client.login()
    reply = await client.action("Command", Command="dialplan reload", ActionID="r1")
    assert reply == (
        b"Response: Success\r\nActionID: r1\r\nMessage: Command output follows\r\n"
        b"Output: Dialplan reloaded.\r\n\r\n"
    )
    events = await client.read_many(3)
    fixed = ("Event", "Privilege", "Context")
    assert all(shape(event, fixed) == shape(their_event, fixed) for event in events)
    assert [(field(e, "Exten"), field(e, "Status"), field(e, "StatusText")) for e in events] == [
        ("100", "0", "Idle"),
        ("101", "2", "Busy"),
        ("102", "0", "Idle"),
    ]
    await client.ping()


# --- device states ---


@pytest.mark.parametrize("state", [s for s in DEVICE_STATES if s != "NOT_INUSE"])
async def test_setvar_sets_a_device_state(sim: Simulator, connect: Connect, state: str) -> None:
    client = await connect()
    await client.login()
    reply = await client.action("Setvar", Variable="DEVICE_STATE(Custom:101)", Value=state, ActionID="set")
    if state == "UNKNOWN":  # ast_devstate_val() does not know it: func_devstate refuses
        assert reply == b"Response: Error\r\nActionID: set\r\nMessage: Variable not set\r\n\r\n"
        assert sim.device_state("Custom:101") == "NOT_INUSE"
        await client.ping()
        return
    assert reply == b"Response: Success\r\nActionID: set\r\nMessage: Variable Set\r\n\r\n"
    change = await client.read()
    assert change == (
        b"Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: Custom:101\r\n"
        + f"State: {state}\r\n\r\n".encode()
    )
    status = DEVICE_TO_STATUS[state]
    if status != 0:  # NOT_INUSE is 0 too: no ExtensionStatus when the hint did not change
        event = await client.read()
        assert event == (
            b"Event: ExtensionStatus\r\nPrivilege: call,all\r\nExten: 101\r\nContext: blf\r\n"
            + f"Hint: Custom:101\r\nStatus: {status}\r\nStatusText: {STATUS_TEXT[status]}\r\n\r\n".encode()
        )
    await client.ping()  # nothing else came first


async def test_every_device_state_in_turn_like_transcript_10(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    previous = 0
    # UNAVAILABLE -> INVALID and NOT_INUSE -> UNKNOWN change the device but not the hint.
    walk = ("INUSE", "RINGING", "ONHOLD", "UNAVAILABLE", "INVALID", "NOT_INUSE", "UNKNOWN", "BUSY")
    for state in (*walk, "RINGINUSE", "UNKNOWN"):
        sim.set_device_state("Custom:102", state)
        assert parse(await client.read())[2:] == [("Device", "Custom:102"), ("State", state)]
        status = DEVICE_TO_STATUS[state]
        if status != previous:
            event = await client.read()
            assert (field(event, "Status"), field(event, "StatusText")) == (str(status), STATUS_TEXT[status])
        previous = status
    await client.ping()  # and nothing else came
    assert sim.extension_status("102") == 0


async def test_same_state_again_sends_nothing(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    await client.action("Setvar", Variable="DEVICE_STATE(Custom:100)", Value="INUSE")
    await client.read_many(2)
    reply = await client.action("Setvar", Variable="DEVICE_STATE(Custom:100)", Value="inuse", ActionID="2")
    assert reply == b"Response: Success\r\nActionID: 2\r\nMessage: Variable Set\r\n\r\n"
    sim.set_device_state("Custom:100", "INUSE")
    await client.ping()


async def test_setvar_edge_cases(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    not_set = b"Response: Error\r\nMessage: Variable not set\r\n\r\n"
    assert await client.action("Setvar", Variable="FOO", Value="bar") == (
        b"Response: Success\r\nMessage: Variable Set\r\n\r\n"
    )
    assert await client.action("Setvar", Variable="DEVICE_STATE(PJSIP/100)", Value="INUSE") == not_set
    assert await client.action("Setvar", Variable="DEVICE_STATE(Custom:100)", Value="bogus") == not_set
    assert await client.action("Setvar", Variable="DEVICE_STATE(Custom:)", Value="INUSE") == not_set
    assert await client.action("Setvar", Variable="CALLERID(num)", Value="1") == not_set
    assert await client.action("Setvar", Value="1") == (
        b"Response: Error\r\nMessage: No variable specified\r\n\r\n"
    )
    await client.ping()  # none of these changed anything
    await client.action("Setvar", Variable="device_state(custom:999)", Value="busy")
    assert parse(await client.read())[2:] == [("Device", "Custom:999"), ("State", "BUSY")]
    await client.ping()  # a device without a hint has no ExtensionStatus
    with pytest.raises(ValueError):
        sim.set_device_state("Custom:100", "SLEEPING")


# --- event masks ---


async def test_events_reach_each_client_by_its_mask(sim: Simulator, connect: Connect) -> None:
    clients = {mask: await connect() for mask in ("on", "call", "system,call", "system", "off", "Call")}
    for mask, client in clients.items():
        reply = await client.login(events=mask)
        assert field(reply, "Message") == "Authentication accepted"
        if "system" in mask or mask == "on":
            assert field(await client.read(), "Event") == "FullyBooted"
        if mask == "on":
            assert field(await client.read(), "Event") == "SuccessfulAuth"
    sim.set_device_state("Custom:100", "RINGING")
    for mask, client in clients.items():
        if mask in ("on", "call", "system,call"):
            assert [field(m, "Event") for m in await client.read_many(2)] == [
                "DeviceStateChange",
                "ExtensionStatus",
            ]
        await client.ping()  # the others got nothing ("Call" is not a class name)


async def test_events_action_switches_events(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login(events="off")
    sim.set_device_state("Custom:100", "INUSE")
    await client.ping()
    assert await client.action("Events", EventMask="call", ActionID="e") == (
        b"Response: Success\r\nActionID: e\r\nEvents: On\r\n\r\n"
    )
    sim.set_device_state("Custom:100", "NOT_INUSE")
    assert len(await client.read_many(2)) == 2
    assert await client.action("Events", EventMask="system") == b"Response: Success\r\nEvents: On\r\n\r\n"
    sim.set_device_state("Custom:100", "INUSE")
    await client.ping()
    assert await client.action("Events", EventMask="off") == b"Response: Success\r\nEvents: Off\r\n\r\n"
    assert await client.action("Events") == b"Response: Error\r\nMessage: Invalid event mask\r\n\r\n"


# --- restarts, drops, a silent peer ---


async def test_core_restart_command_sends_shutdown_and_hangs_up_on_everyone(
    sim: Simulator, connect: Connect
) -> None:
    first, second = await connect(), await connect()
    for client in (first, second):
        await client.login(events="system,call")
        await client.read()  # FullyBooted
    await first.send("Command", Command="core restart now", ActionID="restart")
    shutdown = b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\nRestart: True\r\n\r\n"
    for client in (first, second):
        assert await client.read() == shutdown  # no reply to the command: Asterisk exec()s itself
        await client.expect_closed()
    again = await connect()
    await again.login()
    assert sim.logins == 3
    assert sim.sessions == 1


async def test_restart_loads_the_new_extensions(sim: Simulator, connect: Connect) -> None:
    old = await connect()
    await old.login(events="on")
    await old.read_many(2)
    sim.set_device_state("Custom:101", "INUSE")
    await old.read_many(2)
    await sim.restart(["101", "200"])
    assert field(await old.read(), "Event") == "Shutdown"
    await old.expect_closed()
    assert sim.sessions == 0
    new = await connect()
    await new.login(events="on")
    booted = await new.read()
    assert (field(booted, "Uptime"), field(booted, "LastReload")) == ("0", "0")
    await new.read()  # SuccessfulAuth
    await new.send("ExtensionStateList", ActionID="l")
    _, *items, end = await new.read_many(4)
    assert [(field(i, "Exten"), field(i, "Status")) for i in items] == [("101", "1"), ("200", "0")]
    assert field(end, "ListItems") == "2"
    assert sim.extensions == ["101", "200"]


async def test_drop_all_closes_clients_and_keeps_listening(sim: Simulator, connect: Connect) -> None:
    clients = [await connect(), await connect()]
    for client in clients:
        await client.login()
    assert sim.sessions == 2
    await sim.drop_all()
    assert sim.sessions == 0
    for client in clients:
        await client.expect_closed()
    fresh = await connect()
    await fresh.login()
    await fresh.ping()
    assert (sim.sessions, sim.logins) == (1, 3)


async def test_frozen_pbx_answers_nothing_until_thawed(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    sim.freeze()
    await client.send("Ping", ActionID="lost")
    await client.expect_silence()
    sim.set_device_state("Custom:100", "INUSE")
    late = await connect(banner=False)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(late.reader.readline(), SILENCE)
    sim.thaw()
    assert await late.banner() == BANNER
    assert field(await client.ping("after"), "ActionID") == "after"  # the frozen Ping was dropped
    assert sim.device_state("Custom:100") == "INUSE"


async def test_inject_sends_raw_bytes_to_logged_in_clients(sim: Simulator, connect: Connect) -> None:
    inside, outside = await connect(), await connect()
    await inside.login(events="off")
    sim.inject(b"Event: ExtensionStatus\r\nExten: 1 01\r\n\r\n")
    assert await inside.read() == b"Event: ExtensionStatus\r\nExten: 1 01\r\n\r\n"
    sim.freeze()
    sim.inject(b"garbage\r\n\r\n")
    sim.thaw()
    await inside.ping()
    assert await outside.action("Ping") == b"Response: Error\r\nMessage: Permission denied\r\n\r\n"


async def test_stop_hangs_up_and_closes_the_port(connect: Connect) -> None:
    pbx = Simulator(["100"], churn=5, seed=1)
    await pbx.start()
    client = await connect(pbx)
    await client.login()
    await pbx.stop()
    await client.expect_closed()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", pbx.port)
    await pbx.stop()  # twice is fine


# --- the protocol's rough edges ---


async def test_actions_before_login_are_denied(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    assert await client.action("Ping", ActionID="p") == (
        b"Response: Error\r\nActionID: p\r\nMessage: Permission denied\r\n\r\n"
    )
    denied = b"Response: Error\r\nMessage: Permission denied\r\n\r\n"
    assert await client.action("ExtensionStateList") == denied
    await client.login()
    assert await client.action("Login", Username="blf", Secret="blfsecret") == (
        b"Response: Success\r\nMessage: Already authenticated\r\n\r\n"
    )
    assert sim.logins == 1


async def test_unknown_and_missing_actions(connect: Connect) -> None:
    client = await connect()
    await client.login()
    assert await client.action("QueueStatus", ActionID="q") == (
        b"Response: Error\r\nActionID: q\r\nMessage: Invalid/unknown command: QueueStatus."
        b" Use Action: ListCommands to show available commands.\r\n\r\n"
    )
    await client.send_raw(b"ActionID: x\r\nfoo bar\r\n\r\n")
    assert parse(await client.read()) == [
        ("Response", "Error"),
        ("ActionID", "x"),
        ("Message", "Missing action in request"),
    ]
    reply = await client.action("Command", Command="core show foo", ActionID="c")
    assert parse(reply) == [
        ("Response", "Error"),
        ("ActionID", "c"),
        ("Message", "Command output follows"),
        (
            "Output",
            "No such command 'core show foo'"
            " (type 'core show help core show foo' for other possible commands)",
        ),
    ]


async def test_ping_without_action_id_and_sloppy_framing(connect: Connect) -> None:
    client = await connect()
    await client.send_raw(b"\r\naction: login\nusername: BLF\nsecret:blfsecret\nevents: off\n\n")
    assert await client.read() == b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n"
    reply = await client.action("Ping")
    assert re.fullmatch(rb"Response: Success\r\nPing: Pong\r\nTimestamp: [0-9]+\.[0-9]{6}\r\n\r\n", reply)


async def test_logoff_says_goodbye_and_hangs_up(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    assert await client.action("Logoff", ActionID="bye") == (
        b"Response: Goodbye\r\nActionID: bye\r\nMessage: Thanks for all the fish.\r\n\r\n"
    )
    await client.expect_closed()
    assert sim.sessions == 0


@pytest.mark.parametrize(
    "garbage",
    [b"A" * (MAX_FRAME_BYTES + 10), b"X-Junk: 0123456789\r\n" * (MAX_FRAME_BYTES // 20 + 10)],
    ids=["one-long-line", "endless-message"],
)
async def test_oversized_messages_get_the_client_dropped(connect: Connect, garbage: bytes) -> None:
    client = await connect()
    await client.login()
    try:
        await client.send_raw(garbage)
    except ConnectionError:
        pass
    await client.expect_closed()


async def test_no_hints_is_an_error_like_asterisk(connect: Connect) -> None:
    async with Simulator([]) as pbx:
        client = await connect(pbx)
        await client.login()
        assert await client.action("ExtensionStateList", ActionID="l") == (
            b"Response: Error\r\nActionID: l\r\nMessage: No dialplan hints are available\r\n\r\n"
        )


# --- churn ---

ALLOWED = {
    ("NOT_INUSE", "RINGING"),
    ("NOT_INUSE", "INUSE"),
    ("NOT_INUSE", "UNAVAILABLE"),
    ("RINGING", "INUSE"),
    ("RINGING", "NOT_INUSE"),
    ("INUSE", "ONHOLD"),
    ("INUSE", "NOT_INUSE"),
    ("ONHOLD", "INUSE"),
    ("UNAVAILABLE", "NOT_INUSE"),
}


async def churn_baseline(client: Client) -> dict[str, str]:
    """Device states from a DeviceStateList: the simulator writes the list in one go, so
    every event after it is a change from these states (churn began before the login)."""
    await client.send("DeviceStateList", ActionID="baseline")
    while not (await client.read()).startswith(b"Response: Success\r\nActionID: baseline\r\n"):
        pass  # changes made before the list; it includes them
    messages = []
    while not (message := await client.read()).startswith(b"Event: DeviceStateListComplete"):
        messages.append(message)
    return {field(m, "Device"): field(m, "State") for m in messages}


async def test_churn_follows_call_patterns(connect: Connect) -> None:
    async with Simulator(["100", "101", "102", "103"], churn=400, seed=7) as pbx:
        client = await connect(pbx)
        await client.login()
        states = await churn_baseline(client)
        seen: set[str] = set()
        while not seen >= {"RINGING", "INUSE", "NOT_INUSE", "ONHOLD"}:
            message = await client.read()
            device = field(message, "Device" if b"DeviceStateChange" in message else "Hint")
            if field(message, "Event") == "DeviceStateChange":
                assert (states[device], field(message, "State")) in ALLOWED
                states[device] = field(message, "State")
                seen.add(states[device])
            else:  # right after the change of its device
                assert field(message, "Status") == str(DEVICE_TO_STATUS[states[device]])


async def test_churn_is_seedable(caplog: pytest.LogCaptureFixture, connect: Connect) -> None:
    """The same seed gives the same changes (read from the simulator's own debug log,
    since a client only sees the changes after its login)."""
    caplog.set_level(logging.DEBUG, logger="app.simulator")
    runs = []
    for _ in range(2):
        caplog.clear()
        async with Simulator(["100", "101", "102", "103"], churn=400, seed=3) as pbx:
            client = await connect(pbx)
            await client.login()
            await client.read_many(40)  # at least 20 changes made: one or two events each
        runs.append([r.getMessage() for r in caplog.records if " is now " in r.getMessage()][:20])
    assert len(runs[0]) == 20
    assert runs[0] == runs[1]


# --- extension ranges for the CLI ---


def test_parse_extension_range() -> None:
    assert parse_extension_range("100-104") == ["100", "101", "102", "103", "104"]
    assert parse_extension_range(" 100-101, 200 ,300-301") == ["100", "101", "200", "300", "301"]
    assert parse_extension_range("7") == ["7"]
    assert parse_extension_range("100-101,101") == ["100", "101"]
    assert parse_extension_range("008-010") == ["008", "009", "010"]
    assert len(parse_extension_range(f"1-{MAX_EXTENSIONS}")) == MAX_EXTENSIONS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no extensions"),
        ("abc", "not an extension"),
        ("100-", "not an extension"),
        ("100,,101", "not an extension"),
        ("1e3", "not an extension"),
        ("149-100", "backwards"),
        (f"1-{MAX_EXTENSIONS + 1}", "more than"),
        ("1-9999999999999", "more than"),
    ],
)
def test_parse_extension_range_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_extension_range(text)

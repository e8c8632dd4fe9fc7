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
    MAX_FRAME_BYTES,
    Presence,
    Simulator,
    generated_name,
    load_names,
)
from app.states import DEVICE_STATES, DEVICE_TO_STATUS, STATUS_TEXT

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
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
    assert [field(item, "Hint") for item in items] == [
        "Custom:104,CustomPresence:104",
        "Custom:105,CustomPresence:105",
        "Custom:7001,CustomPresence:7001",
    ]
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


async def test_manager_show_connected_lists_logged_in_sessions(sim: Simulator, connect: Connect) -> None:
    first, second = await connect(), await connect()
    await first.login()
    await second.send("Login", Username="BLF", Secret="blfsecret", Events="off")
    await second.read()
    await connect()  # connected, not logged in: not listed
    reply = await first.action("Command", Command="manager  show Connected", ActionID="m1")
    headers = parse(reply)
    assert headers[:3] == [("Response", "Success"), ("ActionID", "m1"), ("Message", "Command output follows")]
    assert {name for name, _ in headers[3:]} == {"Output"}
    header, *rows, count = [value for _, value in headers[3:]]
    assert header == (
        "  Username         IP Address                                               Start       Elapsed     "
        "FileDes   HttpCnt   ReadPerms                                          WritePerms"
    )
    assert count == "2 users connected."
    assert sorted(row.split()[0] for row in rows) == ["BLF", "blf"]
    perms = "system,call,log,verbose,command,agent,user,config,"  # the first 50 characters
    for row in rows:
        assert re.fullmatch(
            rf"  (blf|BLF) {{12}}  127\.0\.0\.1 {{46}}  [0-9]{{10}}  [0-9] {{9}}  [0-9]+ +  0 {{7}}"
            rf"  {perms} {perms}",
            row,
        ), row
    await second.send("Logoff")
    await second.read_to_eof()
    reply = await first.action("Command", Command="manager show connected")
    assert parse(reply)[-1] == ("Output", "1 users connected.")


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
            + b"Hint: Custom:101,CustomPresence:101\r\n"
            + f"Status: {status}\r\nStatusText: {STATUS_TEXT[status]}\r\n\r\n".encode()
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


# --- presence ---


def presence_hints(data: bytes) -> bytes:
    """Transcript 12's hints are `PJSIP/10X,CustomPresence:10X`, ours `Custom:10X,...`."""
    return re.sub(rb"^Hint: PJSIP/", b"Hint: Custom:", data, flags=re.M)


async def test_presence_matches_transcript_12(connect: Connect) -> None:
    theirs = messages(normalize(presence_hints(fixture("12-presencestate-change.txt"))))
    their_list = [m for m in theirs if b"ActionID: blf-4\r\n" not in m]  # 18 hints there, 3 here
    login, setvar, presences, hints, logoff = client_frames("12-presencestate-change.client.txt")
    async with Simulator(["100", "101", "102"], context="blf") as pbx:
        client = await connect(pbx)
        await client.send_raw(login)
        await client.read_many(3)
        for who, state in [  # the recording's CLI `presencestate change` runs
            ("100", "AWAY"),
            ("100", "DND,meeting,In a meeting until 3pm"),
            ("101", "XA"),
            ("101", "CHAT"),
            ("100", "AVAILABLE"),
            ("101", "NOT_SET"),
        ]:
            pbx.set_presence(who, *state.split(","))
        await client.send_raw(setvar + presences + hints)
        await client.read_many(12 + 3 + 5 + 5)
        pbx.set_presence("CustomPresence:102", "available")
        ours = messages(normalize(await replay(client, [logoff])))
    ours = [m for m in ours if b"ActionID: blf-4\r\n" not in m]
    # Within a run the CLI's two events come in either order; the Setvar's in this one.
    assert segments(ours) == segments(their_list)
    setvar_at = next(i for i, m in enumerate(their_list) if b"ActionID: blf-2" in m)
    assert ours[setvar_at : setvar_at + 8] == their_list[setvar_at : setvar_at + 8]


async def test_presence_state_list_matches_transcript_06(connect: Connect) -> None:
    client = await connect()
    ours = await replay(client, client_frames("06-presencestatelist.client.txt"))
    assert normalize(ours) == normalize(fixture("06-presencestatelist.txt"))


async def test_presence_setvar_like_func_presencestate(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    not_set = b"Response: Error\r\nMessage: Variable not set\r\n\r\n"
    for variable, value in [
        ("PRESENCE_STATE(CustomPresence:100)", "sleeping"),
        ("PRESENCE_STATE(CustomPresence:100)", ""),
        ("PRESENCE_STATE(CustomPresence:100)", "away,,,x"),  # options other than e
        ("PRESENCE_STATE(CustomPresence:)", "away"),
        ("PRESENCE_STATE(Custom:100)", "away"),
    ]:
        assert await client.action("Setvar", Variable=variable, Value=value) == not_set
    await client.ping()  # nothing changed
    set_ok = b"Response: Success\r\nMessage: Variable Set\r\n\r\n"
    value = "DnD,T24gdGhlIHBob25l,QmFjayBhdCAz,e"  # base64 subtype and message
    assert await client.action("Setvar", Variable="presence_state(CustomPresence:101)", Value=value) == set_ok
    change, status = await client.read_many(2)
    assert parse(change)[2:] == [
        ("Presentity", "CustomPresence:101"),
        ("Status", "dnd"),
        ("Subtype", "On the phone"),
        ("Message", "Back at 3"),
    ]
    assert parse(status)[2:5] == [
        ("Exten", "101"),
        ("Context", "blf"),
        ("Hint", "Custom:101,CustomPresence:101"),
    ]
    assert sim.db_get("CustomPresence", "101") == value  # astdb keeps what was written
    # The same presence again: PresenceStateChange, but the hint did not change.
    await client.action("Setvar", Variable="PRESENCE_STATE(CustomPresence:101)", Value=value)
    assert field(await client.read(), "Event") == "PresenceStateChange"
    await client.ping()
    # A presentity without a hint changes too, with no PresenceStatus.
    await client.action("Setvar", Variable="PRESENCE_STATE(CustomPresence:lamp9)", Value="xa,,gone")
    assert parse(await client.read())[2:] == [
        ("Presentity", "CustomPresence:lamp9"),
        ("Status", "xa"),
        ("Subtype", ""),
        ("Message", "gone"),
    ]
    await client.ping()
    await client.send("PresenceStateList", ActionID="p")
    _, *items, end = await client.read_many(4)
    assert [field(item, "Presentity") for item in items] == ["CustomPresence:lamp9", "CustomPresence:101"]
    assert field(end, "ListItems") == "2"
    with pytest.raises(ValueError):
        sim.set_presence("100", "busy")
    with pytest.raises(ValueError):
        sim.set_presence("100", "away", "", "one, two")


async def test_restart_forgets_the_presence_list_not_the_presences(sim: Simulator, connect: Connect) -> None:
    sim.set_presence("100", "away", "lunch", "back soon")
    await sim.restart()
    client = await connect()
    await client.login()
    reply = await client.action("PresenceStateList")
    assert field(await client.read(), "ListItems") == "0"  # the stasis cache is gone ...
    assert reply.startswith(b"Response: Success\r\nEventList: start\r\n")
    assert sim.presence("100") == Presence("away", "lunch", "back soon")  # ... astdb is not


# --- names ---


async def test_names_via_pjsip_show_endpoint(connect: Connect) -> None:
    async with Simulator(["101", "102"], context="blf", names={"101": 'Anna "Nan" Smith'}) as pbx:
        pbx.set_device_state("Custom:102", "RINGING")
        client = await connect(pbx)
        await client.login()
        await client.send("PJSIPShowEndpoint", Endpoint="101", ActionID="e1")
        ack, detail, end = await client.read_many(3)
        assert ack == (
            b"Response: Success\r\nActionID: e1\r\nEventList: start\r\n"
            b"Message: Following are Events for each object associated with the Endpoint\r\n\r\n"
        )
        headers = parse(detail)
        assert headers[:4] == [
            ("Event", "EndpointDetail"),
            ("ActionID", "e1"),
            ("ObjectType", "endpoint"),
            ("ObjectName", "101"),
        ]
        found = dict(headers)
        assert found["Callerid"] == '"Anna \\"Nan\\" Smith" <101>'
        assert (found["Context"], found["Aors"], found["Auth"]) == ("blf", "101", "101")
        assert headers[-2:] == [("DeviceState", "Not in use"), ("ActiveChannels", "0")]
        assert (
            end
            == b"Event: EndpointDetailComplete\r\nActionID: e1\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
        )
        await client.send("PJSIPShowEndpoint", Endpoint="pjsip/102")
        _, detail, _ = await client.read_many(3)
        name = dict(parse(detail))["Callerid"]
        assert re.fullmatch(r'"[^"\s]+ [^"]+" <102>', name), name  # a generated name
        assert dict(parse(detail))["DeviceState"] == "Ringing"
        # res_pjsip's error texts end in a newline that goes out inside the line.
        assert await client.action("PJSIPShowEndpoint", Endpoint="999", ActionID="e2") == (
            b"Response: Error\r\nActionID: e2\r\nMessage: Unable to retrieve endpoint 999\n\r\n\r\n"
        )
        assert await client.action("PJSIPShowEndpoint") == (
            b"Response: Error\r\nMessage: PJSIPShowEndpoint requires an endpoint name\n\r\n\r\n"
        )


async def test_names_via_dbget_like_freepbx(connect: Connect) -> None:
    async with Simulator(["101", "102"], names={"101": "Jürgen Weiß"}) as pbx:
        client = await connect(pbx)
        await client.login()
        await client.send("DBGet", Family="AMPUSER", Key="101/cidname", ActionID="d1")
        ack, value, end = await client.read_many(3)
        assert (
            ack
            == b"Response: Success\r\nActionID: d1\r\nEventList: start\r\nMessage: Result will follow\r\n\r\n"
        )
        assert value == (
            b"Event: DBGetResponse\r\nFamily: AMPUSER\r\nKey: 101/cidname\r\n"
            + "Val: Jürgen Weiß\r\n".encode()  # UTF-8, as Asterisk sends its astdb
            + b"ActionID: d1\r\n\r\n"
        )
        assert end == b"Event: DBGetComplete\r\nActionID: d1\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
        await client.send("DBGet", Family="AMPUSER", Key="102/cidnum")
        assert parse((await client.read_many(3))[1]) == [
            ("Event", "DBGetResponse"),
            ("Family", "AMPUSER"),
            ("Key", "102/cidnum"),
            ("Val", "102"),
        ]
        for headers, message in [
            ({"Family": "AMPUSER", "Key": "103/cidname"}, b"Database entry not found"),
            ({"Family": "ampuser", "Key": "101/cidname"}, b"Database entry not found"),
            ({"Key": "101/cidname"}, b"No family specified."),
            ({"Family": "AMPUSER"}, b"No key specified."),
        ]:
            assert (
                await client.action("DBGet", **headers)
                == b"Response: Error\r\nMessage: " + message + b"\r\n\r\n"
            )


def test_generated_names_are_plausible_and_seeded() -> None:
    first, again, other = Simulator(["101"], seed=4), Simulator(["101"], seed=4), Simulator(["101"], seed=5)
    assert first.name_of("101") == again.name_of("101")
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][\w']+", first.name_of("101"))
    assert len({generated_name(str(n)) for n in range(100, 150)}) > 40
    assert other.name_of("101")  # another seed, maybe another name
    with pytest.raises(ValueError):
        Simulator(["101"], names={"101": "two\r\nlines"})


def test_load_names(tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    path.write_text('\ufeffexten,name,group\n# comment\n101,Anna Smith,Sales\n\n102,"Smith, Bob"\n')
    assert load_names(path) == {"101": "Anna Smith", "102": "Smith, Bob"}
    path.write_text("101\n")
    with pytest.raises(ValueError, match="line 1"):
        load_names(path)
    path.write_text("101,ok\n1 02,bad\n")
    with pytest.raises(ValueError, match="line 2"):
        load_names(path)


# --- calls ---

CALL_NAMES = {"100": "Ext 100", "101": "Ext 101"}  # the recording's caller IDs


def call_class(stream: list[bytes]) -> list[bytes]:
    """The unsolicited events of class call (Privilege: call,all), what a client logged in
    with `Events: call` gets; list items and other classes are left out."""
    return [m for m in stream if b"\r\nPrivilege: call,all\r\n" in m]


def tokens(stream: list[bytes]) -> list[bytes]:
    """Uniqueids and bridge ids become U0, U1, B0 in the order they first appear; devices
    and hints get our names (`PJSIP/101` there is the phone, `Custom:101` here)."""
    seen: dict[bytes, bytes] = {}

    def token(match: re.Match[bytes]) -> bytes:
        kind = b"B" if match.group(1).startswith(b"Bridge") else b"U"
        value = seen.setdefault(match.group(2), kind + str(len(seen)).encode())
        return match.group(1) + b": " + value

    ids = re.compile(rb"^((?:Dest)?(?:Uniqueid|Linkedid)|BridgeUniqueid|BridgeId): ([^\r\n]+)", re.M)
    result = []
    for message in stream:
        message = ids.sub(token, message)
        message = re.sub(rb"^(Device|Hint): PJSIP/", rb"\1: Custom:", message, flags=re.M)
        result.append(message)
    return result


def split_devices(stream: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(channel events, ExtensionStatus events, DeviceStateChange events)."""
    device = (b"Event: ExtensionStatus\r\n", b"Event: DeviceStateChange\r\n")
    return (
        [m for m in stream if not m.startswith(device)],
        [m for m in stream if m.startswith(device[0])],
        [m for m in stream if m.startswith(device[1])],
    )


async def test_call_matches_transcript_14(connect: Connect) -> None:
    theirs = split_devices(tokens(call_class(messages(fixture("14-sip-call-100-to-101-hold.txt")))))
    async with Simulator(["100", "101"], context="blf", names=CALL_NAMES) as pbx:
        client = await connect(pbx)
        await client.login()
        call = pbx.place_call("100", "101")
        steps = [
            (call.answer, {"100": 1, "101": 8}),
            (call.hold, {"100": 1, "101": 1}),
            (call.unhold, {"100": 1, "101": 16}),
            (call.hang_up, {"100": 1, "101": 1}),
        ]
        for step, before in steps:  # the lamps step as in the transcript
            assert {e: pbx.extension_status(e) for e in ("100", "101")} == before
            step()
        assert {e: pbx.extension_status(e) for e in ("100", "101")} == {"100": 0, "101": 0}
        ours = await replay(client, [b"Action: Logoff\r\n\r\n"])
    ours_split = split_devices(tokens(messages(ours)[1:-1]))
    assert [field(m, "Event") for m in ours_split[0]] == [field(m, "Event") for m in theirs[0]]
    assert ours_split == theirs  # byte for byte but for the ids, and the lamps' order in a step
    assert not pbx.calls and not pbx.channels


async def test_simulate_call_steps_through_at_once(sim: Simulator, connect: Connect) -> None:
    their_events = [
        field(m, "Event")
        for m in split_devices(call_class(messages(fixture("14-sip-call-100-to-101-hold.txt"))))[0]
    ]
    client = await connect()
    await client.login()
    call = await sim.simulate_call("100", "101", ring=0, talk=0, hold=0)
    assert call.ended
    events = [
        field(m, "Event")
        for m in split_devices(messages(await replay(client, [b"Action: Logoff\r\n\r\n"]))[1:-1])[0]
    ]
    assert events == their_events
    assert [sim.device_state(f"Custom:{e}") for e in ("100", "101", "102")] == ["NOT_INUSE"] * 3


async def test_simulate_call_follows_its_schedule(sim: Simulator) -> None:
    task = asyncio.create_task(
        sim.simulate_call("101", "102", ring=0.3, talk=0.6, hold=0.3, hold_by="callee")
    )
    await asyncio.sleep(0.15)
    assert (sim.device_state("Custom:101"), sim.device_state("Custom:102")) == ("INUSE", "RINGING")
    await asyncio.sleep(0.3)  # answered, talking
    assert (sim.device_state("Custom:101"), sim.device_state("Custom:102")) == ("INUSE", "INUSE")
    await asyncio.sleep(0.3)  # 102 holds: 101 hears the music
    assert (sim.device_state("Custom:101"), sim.device_state("Custom:102")) == ("ONHOLD", "INUSE")
    call = await asyncio.wait_for(task, TIMEOUT)
    assert call.ended and sim.device_state("Custom:101") == "NOT_INUSE"


async def test_core_show_channels_mid_call_like_transcript_15(connect: Connect) -> None:
    theirs = messages(fixture("15-originate-local-wait5.txt"))
    their_ack = next(m for m in theirs if m.startswith(b"Response: Success\r\nActionID: blf-3\r\n"))
    their_item = next(m for m in theirs if m.startswith(b"Event: CoreShowChannel\r\n"))
    their_end = next(m for m in theirs if m.startswith(b"Event: CoreShowChannelsComplete\r\n"))
    async with Simulator(["100", "101"], context="blf", names=CALL_NAMES) as pbx:
        client = await connect(pbx)
        await client.login(events="off")
        call = pbx.place_call("100", "101")
        await client.send("CoreShowChannels", ActionID="blf-3")
        ack, *ringing, end = await client.read_many(4)
        assert (ack, end) == (their_ack, their_end)
        assert all(shape(item) == shape(their_item) for item in ringing)
        assert [
            tuple(field(i, k) for k in ("Channel", "ChannelStateDesc", "Exten", "Priority", "Application"))
            for i in ringing
        ] == [
            ("PJSIP/100-00000000", "Ring", "101", "2", "Dial"),
            ("PJSIP/101-00000001", "Ringing", "101", "1", "AppDial"),
        ]
        assert [field(i, "ApplicationData") for i in ringing] == ["PJSIP/101,30", "(Outgoing Line)"]
        assert [field(i, "BridgeId") for i in ringing] == ["", ""]
        call.answer()
        await client.send("CoreShowChannels")
        _, *up, _ = await client.read_many(4)
        a, b = (dict(parse(item)) for item in up)
        assert (a["ChannelStateDesc"], b["ChannelStateDesc"]) == ("Up", "Up")
        assert (a["ConnectedLineNum"], a["ConnectedLineName"], b["ConnectedLineNum"]) == (
            "101",
            "Ext 101",
            "100",
        )
        assert a["BridgeId"] == b["BridgeId"] != ""
        assert (a["Linkedid"], b["Linkedid"]) == (a["Uniqueid"], a["Uniqueid"]) != b["Uniqueid"]
        assert (a["Exten"], b["Exten"], a["Duration"]) == ("101", "", "00:00:00")
        assert re.fullmatch(r"\d{10}\.0", a["Uniqueid"])
        call.hang_up()
        await client.send("CoreShowChannels", ActionID="x")
        assert (await client.read_many(2))[1] == (
            b"Event: CoreShowChannelsComplete\r\nActionID: x\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
        )


async def test_call_from_outside_on_the_trunk(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    call = sim.place_call("+4930123456", "101", caller_name="Erika Mustermann")
    call.answer()
    call.hold(by="callee")  # 101 holds the caller: the trunk has no lamp
    call.unhold()
    call.hang_up()
    stream = messages(await replay(client, [b"Action: Logoff\r\n\r\n"]))[1:-1]
    channels, statuses, devices = split_devices(stream)
    first = dict(parse(channels[0]))
    assert (first["Event"], first["CallerIDNum"], first["CallerIDName"]) == (
        "Newchannel",
        "+4930123456",
        "Erika Mustermann",
    )
    assert re.fullmatch(r"PJSIP/trunk-0000000[0-9a-f]", first["Channel"])
    assert (first["Context"], first["Exten"]) == ("from-trunk", "101")
    begin = dict(parse(next(m for m in channels if m.startswith(b"Event: DialBegin"))))
    assert (begin["DestChannel"][:10], begin["DestConnectedLineNum"], begin["DestContext"]) == (
        "PJSIP/101-",
        "+4930123456",
        "blf",
    )
    assert [(field(m, "Device"), field(m, "State")) for m in devices] == [
        ("Custom:101", "RINGING"),
        ("Custom:101", "INUSE"),
        ("Custom:101", "NOT_INUSE"),
    ]
    assert [field(m, "Status") for m in statuses] == ["8", "1", "0"]
    assert [field(m, "Event") for m in channels if field(m, "Event") in ("Hold", "Unhold")] == [
        "Hold",
        "Unhold",
    ]
    assert field(next(m for m in channels if m.startswith(b"Event: Hold")), "Channel").startswith(
        "PJSIP/101-"
    )


async def test_missed_call(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    await sim.simulate_call("100", "101", ring=0, talk=0, answer=False)
    channels, _, devices = split_devices(messages(await replay(client, [b"Action: Logoff\r\n\r\n"]))[1:-1])
    assert [field(m, "Event") for m in channels][-4:] == ["HangupRequest", "DialEnd", "Hangup", "Hangup"]
    assert field(channels[-3], "DialStatus") == "CANCEL"
    assert [field(m, "State") for m in devices] == ["RINGING", "INUSE", "NOT_INUSE", "NOT_INUSE"]
    assert not sim.channels


async def test_calls_are_checked(sim: Simulator) -> None:
    call = sim.place_call("100", "101")
    for args in [("102", "101"), ("100", "102"), ("102", "102"), ("102", "999"), ("12ab", "102")]:
        with pytest.raises(ValueError):
            sim.place_call(*args)
    with pytest.raises(RuntimeError):
        call.hang_up()  # it still rings
    with pytest.raises(ValueError):
        await sim.simulate_call("102", "100", hold_by="nobody")
    call.give_up()
    with pytest.raises(RuntimeError):
        call.answer()
    assert sim.calls == []


async def test_setvar_on_a_channel(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login(events="off")
    sim.place_call("100", "101")
    assert await client.action("Setvar", Channel="PJSIP/100-00000000", Variable="FOO", Value="1") == (
        b"Response: Success\r\nMessage: Variable Set\r\n\r\n"
    )
    assert await client.action("Setvar", Channel="PJSIP/100-00000009", Variable="FOO", Value="1") == (
        b"Response: Error\r\nMessage: No such channel\r\n\r\n"
    )


async def test_restart_drops_the_calls(sim: Simulator) -> None:
    sim.place_call("100", "101").answer()
    await sim.restart()
    assert (sim.calls, sim.channels, sim.device_state("Custom:101")) == ([], [], "NOT_INUSE")
    assert sim.place_call("101", "100").a.name == "PJSIP/101-00000000"  # counters start again


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
            event = field(message, "Event")
            if event == "DeviceStateChange":
                device = field(message, "Device")
                assert (states[device], field(message, "State")) in ALLOWED
                states[device] = field(message, "State")
                seen.add(states[device])
            elif event == "ExtensionStatus":  # right after the change of its device
                device = field(message, "Hint").partition(",")[0]
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
            while sum(" is now " in r.getMessage() for r in caplog.records) < 20:
                await client.read()
        runs.append([r.getMessage() for r in caplog.records if " is now " in r.getMessage()][:20])
    assert len(runs[0]) == 20
    assert runs[0] == runs[1]


async def test_churn_makes_calls_between_extensions_and_from_outside(connect: Connect) -> None:
    async with Simulator([str(n) for n in range(100, 110)], churn=300, seed=5) as pbx:
        client = await connect(pbx)
        await client.login()
        seen: set[str] = set()
        callers: set[str] = set()
        while not (
            seen >= {"Newchannel", "DialBegin", "BridgeEnter", "Hold", "Hangup", "PresenceStateChange"}
            and callers >= {"PJSIP/1", "PJSIP/trunk-"}
        ):
            message = await client.read()
            event = field(message, "Event")
            seen.add(event)
            if event == "DialBegin":
                caller = field(message, "Channel")
                callers.add("PJSIP/trunk-" if caller.startswith("PJSIP/trunk-") else caller[:7])
                assert re.fullmatch(r"PJSIP/(trunk|1\d\d)-[0-9a-f]{8}", caller)
                assert re.fullmatch(r"PJSIP/1\d\d-[0-9a-f]{8}", field(message, "DestChannel"))
                if caller.startswith("PJSIP/trunk-"):
                    assert re.fullmatch(r"\+49\d{8,11}", field(message, "CallerIDNum"))
                    assert field(message, "Context") == "from-trunk"
                    assert " " in field(message, "CallerIDName")

"""Simulated calls (app/sim/calls.py): the events and lamps of a call against transcript 14,
its schedule, channels mid-call (transcript 15), calls from outside, missed calls."""

from __future__ import annotations

import re

import pytest

from app.sim import Simulator
from tests.sim.support import (
    Connect,
    field,
    fixture,
    messages,
    parse,
    replay,
    shape,
)

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


async def test_simulate_call_follows_its_schedule() -> None:
    """Each step waits its time on the simulator's clock, here one that records the waits
    and the device states each wait starts from, and does not sleep: no wall clock."""
    waits: list[tuple[float, str, str]] = []

    async def sleep(delay: float) -> None:
        waits.append((delay, pbx.device_state("Custom:101"), pbx.device_state("Custom:102")))

    pbx = Simulator(["100", "101", "102"], context="blf", sleep=sleep)
    call = await pbx.simulate_call("101", "102", ring=0.3, talk=0.6, hold=0.3, hold_by="callee")
    assert waits == [
        (0.3, "INUSE", "RINGING"),  # it rings
        (0.3, "INUSE", "INUSE"),  # answered: half the talk before the hold
        (0.3, "ONHOLD", "INUSE"),  # 102 holds: 101 hears the music
        (0.3, "INUSE", "INUSE"),  # the other half
    ]
    assert call.ended and pbx.device_state("Custom:101") == "NOT_INUSE"


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

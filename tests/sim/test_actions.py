"""The simulator's call-moving actions (Originate, Redirect, BlindTransfer, Atxfer, the PickupChan
and ChanSpy applications) as Asterisk 22 answers them, and the events that follow."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from app.sim import Simulator, attended
from app.sim.attended import AttendedTransfer
from app.sim.originate import Originated
from app.sim.transfers import parse_callerid
from app.sim.users import ManagerUser
from tests.sim.support import Client, Connect, field, fixture, messages, parse

EVENTS_OF_A_MOVE = ("BlindTransfer", "BridgeLeave", "Hangup", "BridgeDestroy", "BridgeCreate", "BridgeEnter")
# What an Originate's channel shows up to its OriginateResponse, leaving out the classes the
# simulator does not send (dialplan: Newexten, VarSet) and app_queue's events.
ORIGINATE_EVENTS = (
    b"Newchannel",
    b"NewCallerid",
    b"NewConnectedLine",
    b"DialBegin",
    b"DialState",
    b"Newstate",
    b"DialEnd",
    b"OriginateResponse",
)
# What differs between any two runs: channel numbers and unique ids.
RUN_VALUES = re.compile(rb"(PJSIP/\d+-)[0-9a-f]{8}|((?:Dest)?(?:Uniqueid|Linkedid): )[0-9.]+")


def event(message: bytes) -> str:
    return dict(parse(message)).get("Event", "")


def headers(message: bytes) -> dict[str, str]:
    return dict(parse(message))


async def events_until(client: Client, done: Callable[[dict[str, str]], bool]) -> list[dict[str, str]]:
    """The events read up to and including the first that `done` accepts."""
    seen: list[dict[str, str]] = []
    while not seen or not done(seen[-1]):
        seen.append(headers(await client.read()))
    return seen


def steps(seen: list[dict[str, str]], *names: str) -> list[tuple[str, str]]:
    """(event, channel) of the events named, in order; channel-less events with ""."""
    return [
        (e["Event"], e.get("Channel") or e.get("DestChannel") or e.get("Device", ""))
        for e in seen
        if e.get("Event") in names
    ]


# --- Originate ---


async def test_originate_rings_my_phone_first_byte_for_byte_like_transcript_16(connect: Connect) -> None:
    """Transcript 16 (Originate PJSIP/101 to an extension, CallerID "Panel" <700>): the same
    events up to the OriginateResponse, byte for byte but the run's numbers; then the
    dialplan dials the colleague, who rings and answers."""
    theirs = messages(fixture("16-originate-to-pjsip-101.txt"))
    their_ack = next(m for m in theirs if m.startswith(b"Response: Success\r\nActionID: blf-2\r\n"))
    upto = next(i for i, m in enumerate(theirs) if m.startswith(b"Event: OriginateResponse"))
    expected = [
        RUN_VALUES.sub(rb"\1\2*", m.replace(b"Exten: 1999\r\n", b"Exten: 102\r\n"))
        for m in theirs[: upto + 1]
        if m.split(b"\r\n")[0][len(b"Event: ") :] in ORIGINATE_EVENTS
    ]
    async with Simulator(["101", "102"], context="blf", names={"101": "Ext 101"}) as pbx:
        client = await connect(pbx)
        await client.login()
        await client.send(
            "Originate",
            Channel="PJSIP/101",
            Context="blf",
            Exten="102",
            Priority="1",
            CallerID='"Panel" <700>',
            Async="true",
            Timeout="20000",
            ActionID="blf-2",
        )
        assert await client.read() == their_ack  # the reply before any event
        ours: list[bytes] = []
        while not ours or not ours[-1].startswith(b"Event: OriginateResponse"):
            ours.append(await client.read())
        assert [
            RUN_VALUES.sub(rb"\1\2*", m) for m in ours if event(m).encode() in ORIGINATE_EVENTS
        ] == expected
        phone = [headers(m)["State"] for m in ours if event(m) == "DeviceStateChange"]
        assert phone == ["RINGING"]  # 101 rings before it answers; in use after
        rest = await events_until(
            client, lambda e: e.get("Event") == "BridgeEnter" and e["BridgeNumChannels"] == "2"
        )
        assert [(e["Device"], e["State"]) for e in rest if e.get("Event") == "DeviceStateChange"] == [
            ("Custom:101", "INUSE"),
            ("Custom:102", "RINGING"),
            ("Custom:102", "INUSE"),
        ]
        dial = next(e for e in rest if e.get("Event") == "DialBegin")
        assert (dial["Channel"], dial["CallerIDNum"], dial["DestChannel"][:10]) == (
            headers(ours[0])["Channel"],
            "700",
            "PJSIP/102-",
        )
        (call,) = pbx.calls
        assert (call.caller.exten, call.caller.number, call.callee.exten, call.state) == (
            "101",
            "700",
            "102",
            "up",
        )
        assert pbx.legs == {}


async def test_originate_refuses_what_manager_c_refuses(connect: Connect, sim) -> None:
    client = await connect()
    await client.login(events="off")
    texts = [
        field(await client.action("Originate", Exten="102"), "Message"),
        field(await client.action("Originate", Channel="PJSIP/100", Priority="first"), "Message"),
        field(await client.action("Originate", Channel="PJSIP/100", Timeout="soon"), "Message"),
        field(await client.action("Originate", Channel="nonsense", Exten="1"), "Message"),
        field(
            await client.action("Originate", Channel="PJSIP/100", Context="blf", Exten="999", Priority="1"),
            "Message",
        ),
    ]
    assert texts == [
        "Channel not specified",
        "Invalid priority",
        "Invalid timeout",
        "Invalid channel",
        "Extension does not exist.",
    ]
    assert sim.calls == [] and sim.channels == []


@pytest.mark.parametrize(
    ("channel", "timeout", "reason", "statuses"),
    [
        ("PJSIP/999", "20000", "0", []),  # no such phone: chan_pjsip makes no channel
        ("PJSIP/101", "20000", "5", ["BUSY"]),  # in a call already
        ("PJSIP/102", "100", "3", ["RINGING", "NOANSWER"]),  # rings longer than the Timeout
    ],
)
async def test_an_originate_that_fails_says_why(
    connect: Connect, sim, channel: str, timeout: str, reason: str, statuses: list[str]
) -> None:
    sim.place_call("+4930123456", "101")
    client = await connect()
    await client.login()
    reply = await client.action(
        "Originate", Channel=channel, Context="blf", Exten="100", Priority="1", Async="true", Timeout=timeout
    )
    assert field(reply, "Message") == "Originate successfully queued"
    seen = await events_until(client, lambda e: e.get("Event") == "OriginateResponse")
    response = seen[-1]
    assert (response["Response"], response["Channel"], response["Reason"], response["Uniqueid"]) == (
        "Failure",
        channel,  # no channel answered: the one asked for
        reason,
        "<unknown>",
    )
    assert (response["Context"], response["Exten"], response["CallerIDNum"]) == ("blf", "100", "<unknown>")
    assert [e["DialStatus"] for e in seen if e["Event"] in ("DialState", "DialEnd")] == statuses
    assert [c.caller.number for c in sim.calls] == ["+4930123456"] and sim.legs == {}
    assert sim.device_state("Custom:102") == "NOT_INUSE" and sim.device_state("Custom:100") == "NOT_INUSE"


# --- Redirect ---


async def test_redirect_moves_a_channel_and_hangs_up_the_party_left_alone(connect: Connect, sim) -> None:
    call = sim.place_call("+4930123456", "100")
    call.answer()
    caller, operator = call.a, call.b
    client = await connect()
    await client.login()
    reply = await client.action("Redirect", Channel=caller.name, Context="blf", Exten="101", Priority="1")
    assert field(reply, "Message") == "Redirect successful"
    seen = await events_until(
        client, lambda e: e.get("Event") == "BridgeEnter" and e["Channel"] == caller.name
    )
    assert steps(seen, *EVENTS_OF_A_MOVE)[:5] == [
        ("BridgeLeave", caller.name),
        ("BridgeLeave", operator.name),
        ("BridgeDestroy", ""),
        ("Hangup", operator.name),
        ("BridgeCreate", ""),
    ]
    (moved,) = sim.calls
    assert moved.a is caller and moved.callee.exten == "101" and moved.state == "up"
    assert sim.device_state("Custom:100") == "NOT_INUSE" and sim.device_state("Custom:101") == "INUSE"


async def test_a_dual_redirect_sends_both_parties_on(connect: Connect, sim) -> None:
    call = sim.place_call("+4930123456", "100")
    call.answer()
    client = await connect()
    await client.login(events="off")
    reply = await client.action(
        "Redirect",
        Channel=call.a.name,
        ExtraChannel=call.b.name,
        Context="blf",
        Exten="101",
        Priority="1",
        ExtraContext="blf",
        ExtraExten="102",
        ExtraPriority="1",
    )
    assert field(reply, "Message") == "Dual Redirect successful"
    assert sorted((c.caller.number, c.callee.exten, c.state) for c in sim.calls) == [
        ("+4930123456", "101", "ringing"),
        ("100", "102", "ringing"),  # the operator's own channel dials on
    ]
    assert sim.device_state("Custom:100") == "INUSE"  # its channel never hung up


async def test_redirect_refuses_what_manager_c_refuses(connect: Connect, sim) -> None:
    ringing = sim.place_call("100", "101")
    client = await connect()
    await client.login(events="off")
    place = {"Context": "blf", "Exten": "102", "Priority": "1"}
    asked = [
        {"Context": "blf", "Exten": "102", "Priority": "1"},
        {"Channel": ringing.a.name, "Exten": "102", "Priority": "1"},
        {"Channel": ringing.a.name, "Context": "blf", "Priority": "1"},
        {"Channel": ringing.a.name, "Context": "blf", "Exten": "102"},
        {"Channel": ringing.a.name, "Context": "blf", "Exten": "102", "Priority": "first"},
        {"Channel": ringing.a.name, "ExtraChannel": "x", "ExtraContext": "blf", **place},
        {"Channel": ringing.a.name, "ExtraChannel": "x", "ExtraContext": "blf", "ExtraExten": "1", **place},
        {"Channel": "PJSIP/100-deadbeef", **place},
        {"Channel": ringing.a.name, "ExtraChannel": "PJSIP/100-deadbeef", **place},
        {"Channel": ringing.b.name, **place},  # the ringing leg runs no dialplan
    ]
    texts = [field(await client.action("Redirect", **fields), "Message") for fields in asked]
    assert texts == [
        "Channel not specified",
        "Context not specified",
        "Exten not specified",
        "Priority not specified",
        "Priority is invalid",
        "ExtraExten not specified",
        "ExtraPriority not specified",
        "Channel does not exist: PJSIP/100-deadbeef",
        "ExtraChannel does not exist: PJSIP/100-deadbeef",
        "Redirect failed",
    ]
    assert sim.calls == [ringing] and ringing.state == "ringing"


# --- BlindTransfer ---


async def test_a_blind_transfer_moves_the_caller_into_a_new_bridge(connect: Connect, sim) -> None:
    call = sim.place_call("+4930123456", "100")
    call.answer()
    caller_channel, operator_channel = call.a, call.b
    old_bridge = caller_channel.bridge_id
    client = await connect()
    await client.login(events="call")
    await client.send(
        "BlindTransfer", Channel=operator_channel.name, Context="blf", Exten="101", ActionID="t"
    )
    assert field(await client.read(), "Message") == "Transfer succeeded"  # the reply before the events
    seen: list[tuple[str, str, str]] = []
    while not seen or seen[-1][:2] != ("BridgeEnter", caller_channel.name):
        event = await client.read()
        name = field(event, "Event")
        if name in EVENTS_OF_A_MOVE:
            headers = dict(parse(event))
            channel = headers.get("Channel") or headers.get("TransfereeChannel", "")
            seen.append((name, channel, headers.get("BridgeUniqueid", "")))
    assert [(n, c) for n, c, _ in seen[:5]] == [
        ("BlindTransfer", caller_channel.name),
        ("BridgeLeave", operator_channel.name),
        ("Hangup", operator_channel.name),
        ("BridgeLeave", caller_channel.name),
        ("BridgeDestroy", ""),
    ]
    assert seen[-1][2] not in ("", old_bridge)  # another bridge
    (moved,) = sim.calls
    assert moved.a is caller_channel and moved.callee.exten == "101" and moved.state == "up"
    assert sim.device_state("Custom:100") == "NOT_INUSE" and sim.device_state("Custom:101") == "INUSE"


async def test_a_blind_transfer_refuses_what_manager_c_refuses(connect: Connect, sim) -> None:
    ringing = sim.place_call("100", "101")
    client = await connect()
    await client.login(events="off")
    texts = [
        field(await client.action("BlindTransfer", Exten="102"), "Message"),
        field(await client.action("BlindTransfer", Channel=ringing.a.name), "Message"),
        field(await client.action("BlindTransfer", Channel="PJSIP/100-deadbeef", Exten="102"), "Message"),
        field(await client.action("BlindTransfer", Channel=ringing.a.name, Exten="102"), "Message"),
        field(await client.action("Atxfer", Channel=ringing.a.name, Exten="102"), "Message"),
    ]
    assert texts == [
        "No channel specified",
        "No extension specified",
        "Channel specified does not exist",
        "Transfer invalid",  # not in a bridge yet
        "Atxfer successfully queued",  # the feature's digits go nowhere: no bridge
    ]
    assert sim.calls == [ringing] and ringing.state == "ringing" and sim.legs == {}


# --- Atxfer ---


async def test_an_attended_transfer_consults_then_bridges_the_caller_with_the_target(
    connect: Connect, sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attended, "CONSULT_FOR", 60.0)  # the test hangs up for the transferer
    call = sim.place_call("+4930123456", "100")
    call.answer()
    caller, operator, first = call.a, call.b, call.a.bridge_id
    client = await connect()
    await client.login()
    reply = await client.action("Atxfer", Channel=operator.name, Exten="101", Context="blf")
    assert field(reply, "Message") == "Atxfer successfully queued"
    consulting = await events_until(
        client, lambda e: e.get("Event") == "BridgeEnter" and e["BridgeNumChannels"] == "2"
    )
    second = consulting[-1]["BridgeUniqueid"]
    target = consulting[-1]["Channel"]
    assert target.startswith("PJSIP/101-") and second != first
    assert steps(consulting, "Hold", "MusicOnHoldStart", "BridgeCreate", "BridgeLeave", "BridgeEnter") == [
        ("Hold", operator.name),
        ("MusicOnHoldStart", caller.name),
        ("BridgeCreate", ""),
        ("BridgeLeave", operator.name),
        ("BridgeEnter", operator.name),
        ("BridgeEnter", target),
    ]
    assert "MusicClass" not in consulting[0]  # the feature holds without a class
    assert [
        (e["BridgeUniqueid"], e["Event"]) for e in consulting if e["Event"].startswith("BridgeLeave")
    ] == [(first, "BridgeLeave")]
    assert call.state == "transferring" and sim.device_state("Custom:101") == "INUSE"
    transfer = sim.legs["101"]
    assert isinstance(transfer, AttendedTransfer)
    transfer.complete()  # the transferer hangs up
    done = await events_until(client, lambda e: e.get("Event") == "BridgeDestroy")
    assert steps(
        done, "HangupRequest", "MusicOnHoldStop", "BridgeLeave", "BridgeEnter", "AttendedTransfer", "Hangup"
    ) == [
        ("HangupRequest", operator.name),
        ("MusicOnHoldStop", caller.name),
        ("BridgeLeave", operator.name),
        ("BridgeLeave", target),
        ("BridgeEnter", target),
        ("AttendedTransfer", ""),
        ("Hangup", operator.name),
    ]
    enter = next(e for e in done if e["Event"] == "BridgeEnter")
    assert (enter["BridgeUniqueid"], done[-1]["BridgeUniqueid"]) == (first, second)
    event = next(e for e in done if e["Event"] == "AttendedTransfer")
    assert {k: event[k] for k in ("Result", "IsExternal", "DestType", "DestBridgeUniqueid")} == {
        "Result": "Success",
        "IsExternal": "No",
        "DestType": "Bridge",
        "DestBridgeUniqueid": first,
    }
    assert (event["OrigTransfererChannel"], event["SecondTransfererChannel"]) == (
        operator.name,
        operator.name,
    )
    assert (event["OrigBridgeUniqueid"], event["SecondBridgeUniqueid"]) == (first, second)
    assert (event["TransfereeChannel"], event["TransferTargetChannel"]) == (caller.name, target)
    prefixes = [key.removesuffix("Channel") for key in event if key.endswith("Channel") and key != "Channel"]
    assert prefixes == ["OrigTransferer", "SecondTransferer", "Transferee", "TransferTarget"]
    assert sim.calls == [call] and call.state == "up" and (call.a, call.b.name) == (caller, target)
    assert sim.device_state("Custom:100") == "NOT_INUSE" and sim.device_state("Custom:101") == "INUSE"
    assert sim.legs == {} and not sim.has_channel(operator.name)


async def test_an_attended_transfer_completes_when_the_transferer_hangs_up_by_itself(
    connect: Connect, sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attended, "CONSULT_FOR", 0.05)
    call = sim.place_call("100", "101")  # 101's person transfers 100 to 102
    call.answer()
    client = await connect()
    await client.login()
    await client.action("Atxfer", Channel=call.b.name, Exten="102")  # the channel's own context
    seen = await events_until(client, lambda e: e.get("Event") == "AttendedTransfer")
    assert [e["State"] for e in seen if e.get("Device") == "Custom:100"] == ["ONHOLD", "INUSE"]
    assert (call.caller.exten, call.callee.exten) == ("100", "102")


async def test_an_attended_transfer_to_a_busy_phone_brings_the_transferer_back(connect: Connect, sim) -> None:
    call = sim.place_call("+4930123456", "100")
    call.answer()
    sim.place_call("101", "102")
    client = await connect()
    await client.login()
    await client.action("Atxfer", Channel=call.b.name, Exten="102", Context="blf")
    seen = await events_until(client, lambda e: e.get("Event") == "BridgeDestroy")
    assert steps(seen, "Hold", "BridgeLeave", "BridgeEnter", "Unhold", "MusicOnHoldStop") == [
        ("Hold", call.b.name),
        ("BridgeLeave", call.b.name),
        ("BridgeEnter", call.b.name),
        ("BridgeLeave", call.b.name),
        ("BridgeEnter", call.b.name),  # rebridge: back with the caller
        ("Unhold", call.b.name),
        ("MusicOnHoldStop", call.a.name),
    ]
    assert call.state == "up" and call.a.bridge_id == call.b.bridge_id and sim.legs == {}


# --- the applications an Originate runs: ChanSpy, PickupChan ---


async def test_chanspy_rings_the_supervisor_who_then_listens_until_hanging_up(connect: Connect, sim) -> None:
    agent = sim.place_call("101", "102")
    agent.answer()
    client = await connect()
    await client.login()
    reply = await client.action(
        "Originate",
        Channel="PJSIP/100",
        Application="ChanSpy",
        Data="PJSIP/101,q",
        Async="true",
        ActionID="s",
    )
    assert field(reply, "Message") == "Originate successfully queued"
    seen = await events_until(client, lambda e: e.get("Event") == "ChanSpyStart")
    response = next(e for e in seen if e["Event"] == "OriginateResponse")
    assert list(response)[2:6] == ["ActionID", "Response", "Channel", "Application"]
    assert (response["Response"], response["Application"], response["Data"], response["Reason"]) == (
        "Success",
        "ChanSpy",
        "PJSIP/101,q",
        "4",
    )
    spy = response["Channel"]
    assert (seen[-1]["SpyerChannel"], seen[-1]["SpyeeChannel"]) == (spy, agent.a.name)
    assert [(e["Device"], e["State"]) for e in seen if e["Event"] == "DeviceStateChange"] == [
        ("Custom:100", "RINGING"),
        ("Custom:100", "INUSE"),  # listening; the agent's lamp does not change
    ]
    assert sim.calls == [agent] and sim.busy("100")
    supervisor = sim.legs["100"]
    assert isinstance(supervisor, Originated)
    supervisor.hang_up()
    done = await events_until(client, lambda e: e.get("Event") == "DeviceStateChange")
    assert steps(done, "HangupRequest", "ChanSpyStop", "Hangup", "DeviceStateChange") == [
        ("HangupRequest", spy),
        ("ChanSpyStop", ""),
        ("Hangup", spy),
        ("DeviceStateChange", "Custom:100"),
    ]
    assert done[-1]["State"] == "NOT_INUSE" and agent.state == "up" and sim.legs == {}


async def test_chanspy_with_option_e_ends_with_the_call_it_listens_to(connect: Connect, sim) -> None:
    agent = sim.place_call("101", "102")
    agent.answer()
    client = await connect()
    await client.login()
    await client.action(
        "Originate", Channel="PJSIP/100", Application="ChanSpy", Data="PJSIP/102,qE", Async="true"
    )
    start = (await events_until(client, lambda e: e.get("Event") == "ChanSpyStart"))[-1]
    assert start["SpyeeChannel"] == agent.b.name
    agent.hang_up()
    seen = await events_until(client, lambda e: e.get("Device") == "Custom:100")
    assert [e["Event"] for e in seen if e["Event"] in ("ChanSpyStop", "Hangup")][-2:] == [
        "ChanSpyStop",
        "Hangup",
    ]
    assert seen[-2]["Channel"] == start["SpyerChannel"] and seen[-1]["State"] == "NOT_INUSE"


async def test_pickupchan_rings_the_picker_then_takes_the_ringing_call(connect: Connect, sim) -> None:
    ringing = sim.place_call("+4930123456", "101")
    client = await connect()
    await client.login()
    reply = await client.action(
        "Originate", Channel="PJSIP/100", Application="PickupChan", Data="PJSIP/101", Async="true"
    )
    assert field(reply, "Message") == "Originate successfully queued"
    rang = ringing.b.name
    seen = await events_until(
        client, lambda e: e.get("Event") == "BridgeEnter" and e["BridgeNumChannels"] == "2"
    )
    picker = ringing.b.name
    assert steps(seen, "OriginateResponse", "Pickup", "Hangup") == [
        ("OriginateResponse", picker),  # the picker's phone answered first
        ("Pickup", picker),
        ("Hangup", rang),
    ]
    assert next(e for e in seen if e["Event"] == "Pickup")["TargetChannel"] == rang
    assert [(e["Device"], e["State"]) for e in seen if e["Event"] == "DeviceStateChange"] == [
        ("Custom:100", "RINGING"),
        ("Custom:100", "INUSE"),
        ("Custom:101", "NOT_INUSE"),
    ]
    assert ringing.state == "up" and ringing.callee.exten == "100"
    assert sim.device_state("Custom:100") == "INUSE" and sim.device_state("Custom:101") == "NOT_INUSE"
    assert [c.name.split("-")[0] for c in (ringing.a, ringing.b)] == ["PJSIP/trunk", "PJSIP/100"]


async def test_the_write_classes_of_each_action(connect: Connect) -> None:
    """Originate needs `originate`; Redirect, BlindTransfer and Atxfer need `call` (manager.c)."""
    agent_only = ManagerUser("queues", "qsecret", write="agent")
    async with Simulator(["100", "101"], users=[agent_only]) as pbx:
        client = await connect(pbx)
        await client.send("Login", Username="queues", Secret="qsecret", Events="off")
        await client.read()
        for action in ("Originate", "Redirect", "BlindTransfer", "Atxfer"):
            reply = await client.action(action, Channel="PJSIP/100", Exten="101")
            assert field(reply, "Message") == "Permission denied", action


async def test_a_restart_forgets_a_phone_ringing_for_an_originate(connect: Connect, sim) -> None:
    client = await connect()
    await client.login(events="off")
    await client.action("Originate", Channel="PJSIP/100", Application="ChanSpy", Data="", Async="true")
    assert sim.busy("100") and sim.device_state("Custom:100") == "RINGING"
    await sim.restart(boot=0)
    assert sim.legs == {} and not sim.busy("100") and sim.device_state("Custom:100") == "NOT_INUSE"
    assert sim.channels == []


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('"Panel" <700>', ("700", "Panel")),
        ("Anna Smith <(030) 123-45>", ("03012345", "Anna Smith")),
        ("101", ("101", "")),
        ("Reception", ("", "Reception")),
        ("", ("", "")),
    ],
)
def test_an_originates_callerid_is_read_like_ast_callerid_parse(text: str, parsed: tuple[str, str]) -> None:
    assert parse_callerid(text) == parsed

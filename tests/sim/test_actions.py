"""The simulator's call-moving actions (Originate, BlindTransfer, Atxfer) as Asterisk 22 answers them."""

from __future__ import annotations

from app.sim import Simulator
from app.sim.users import ManagerUser
from tests.sim.support import Connect, field, fixture, messages, parse

EVENTS_OF_A_MOVE = ("BlindTransfer", "BridgeLeave", "Hangup", "BridgeDestroy", "BridgeCreate", "BridgeEnter")


async def test_originate_is_queued_like_transcript_16_and_the_call_follows(connect: Connect, sim) -> None:
    theirs = messages(fixture("16-originate-to-pjsip-101.txt"))
    their_ack = next(m for m in theirs if m.startswith(b"Response: Success\r\nActionID: blf-2\r\n"))
    client = await connect()
    await client.login(events="off")
    reply = await client.action(
        "Originate",
        Channel="PJSIP/101",
        Context="blf",
        Exten="102",
        Priority="1",
        CallerID='"Panel" <101>',
        Async="true",
        Timeout="20000",
        ActionID="blf-2",
    )
    assert reply == their_ack
    (call,) = sim.calls
    assert (call.caller.exten, call.callee.exten, call.state) == ("101", "102", "ringing")
    assert sim.device_state("Custom:102") == "RINGING"


async def test_originate_refuses_what_manager_c_refuses(connect: Connect, sim) -> None:
    client = await connect()
    await client.login(events="off")
    assert field(await client.action("Originate", Exten="102"), "Message") == "Channel not specified"
    assert (
        field(await client.action("Originate", Channel="nonsense", Exten="1"), "Message") == "Invalid channel"
    )
    assert sim.calls == []


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
        "Atxfer successfully queued",
    ]
    assert sim.calls == [ringing] and ringing.state == "ringing"


async def test_the_write_classes_of_each_action(connect: Connect) -> None:
    """Originate needs `originate`; BlindTransfer and Atxfer need `call` (manager.c)."""
    agent_only = ManagerUser("queues", "qsecret", write="agent")
    async with Simulator(["100", "101"], users=[agent_only]) as pbx:
        client = await connect(pbx)
        await client.send("Login", Username="queues", Secret="qsecret", Events="off")
        await client.read()
        for action in ("Originate", "BlindTransfer", "Atxfer"):
            reply = await client.action(action, Channel="PJSIP/100", Exten="101")
            assert field(reply, "Message") == "Permission denied", action


async def test_pickupchan_takes_the_ringing_call(connect: Connect, sim) -> None:
    ringing = sim.place_call("+4930123456", "101")
    client = await connect()
    await client.login(events="off")
    reply = await client.action(
        "Originate", Channel="PJSIP/100", Application="PickupChan", Data="PJSIP/101", Async="true"
    )
    assert field(reply, "Message") == "Originate successfully queued"
    assert ringing.state == "up" and ringing.callee.exten == "100"
    assert sim.device_state("Custom:100") == "INUSE" and sim.device_state("Custom:101") == "NOT_INUSE"
    assert [c.name.split("-")[0] for c in (ringing.a, ringing.b)] == ["PJSIP/trunk", "PJSIP/100"]

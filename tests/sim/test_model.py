"""The PBX model (app/sim/model.py) over AMI: device states set by Setvar or by hand, the
hints that follow them, presences as func_presencestate keeps them (transcripts 06, 10, 12)."""

from __future__ import annotations

import re

import pytest

from app.sim import Simulator
from app.states import DEVICE_STATES, DEVICE_TO_STATUS, STATUS_TEXT
from tests.sim.support import (
    Connect,
    client_frames,
    field,
    fixture,
    messages,
    normalize,
    parse,
    replay,
    segments,
)

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

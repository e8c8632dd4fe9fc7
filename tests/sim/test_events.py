"""The events and list replies (app/sim/events.py) against the forms of the Asterisk 22
transcripts: device and extension states, the state lists, a dialplan reload."""

from __future__ import annotations

from app.sim import Simulator
from tests.sim.support import (
    Connect,
    client_frames,
    field,
    fixture,
    messages,
    normalize,
    replay,
    segments,
    shape,
)

# --- byte for byte against the transcripts ---


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


async def test_no_hints_is_an_error_like_asterisk(connect: Connect) -> None:
    async with Simulator([]) as pbx:
        client = await connect(pbx)
        await client.login()
        assert await client.action("ExtensionStateList", ActionID="l") == (
            b"Response: Error\r\nActionID: l\r\nMessage: No dialplan hints are available\r\n\r\n"
        )

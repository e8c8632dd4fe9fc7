"""Manager users in the simulator (app/sim/users.py): what a user's `write` classes let it run,
what its `read` classes and eventfilter lines let through, ListCommands; as main/manager.c does."""

from __future__ import annotations

import asyncio

import pytest

from app.capabilities import ACTIONS as PANEL_ACTIONS
from app.sim import Simulator
from app.sim.session import Session
from app.sim.users import ACTIONS, ManagerUser, admits, parse_eventfilter, perm_mask
from app.sim.wire import ALL_EVENTS, EVENT_CLASSES
from tests.sim.support import Connect, field, parse

LAMP_FILTERS = ("eventfilter = Event: ExtensionStatus", "eventfilter = Event: DeviceStateChange")


def user(**fields: object) -> ManagerUser:
    return ManagerUser("blf", "blfsecret", **fields)  # type: ignore[arg-type]


async def test_an_action_outside_the_write_classes_is_refused_like_asterisk(connect: Connect) -> None:
    async with Simulator(["100"], users=[user(read="call", write="reporting")]) as pbx:
        client = await connect(pbx)
        await client.login()
        assert await client.action(
            "Setvar", ActionID="s1", Variable="DEVICE_STATE(Custom:100)", Value="INUSE"
        ) == (b"Response: Error\r\nActionID: s1\r\nMessage: Permission denied\r\n\r\n")
        assert pbx.device_state("Custom:100") == "NOT_INUSE"  # refused: nothing ran
        for action in ("PJSIPShowEndpoint", "Command"):
            assert field(await client.action(action, ActionID="x"), "Message") == "Permission denied"
        # An unknown action is still unknown (process_message looks it up before the permission).
        reply = await client.action("NoSuchAction", ActionID="u")
        assert field(reply, "Message").startswith("Invalid/unknown command: NoSuchAction.")
        listed = await client.action("ExtensionStateList", ActionID="l")  # reporting allows it
        assert field(listed, "Response") == "Success"


async def test_read_classes_limit_the_events_whatever_the_login_asks(connect: Connect) -> None:
    async with Simulator(["100"], users=[user(read="system", write="all")]) as pbx:
        client = await connect(pbx)
        await client.login(events="on")
        assert field(await client.read(), "Event") == "FullyBooted"  # system: it may read that
        reply = await client.action("Events", ActionID="e", EventMask="call")
        assert field(reply, "Events") == "On"  # the reply says what was asked, not what is given
        pbx.set_device_state("Custom:100", "INUSE")
        await client.ping()  # the Pong is the next message: no call event came before it


async def test_eventfilter_lines_drop_what_they_do_not_name(connect: Connect) -> None:
    """The STACK-NOTES user: the lamps come, presence and calls do not, and the lists still
    answer in full (filters apply to events only)."""
    async with Simulator(
        ["100", "101"], users=[user(read="call", write="reporting", eventfilters=LAMP_FILTERS)]
    ) as pbx:
        client = await connect(pbx)
        await client.login()
        pbx.set_presence("100", "dnd")
        pbx.place_call("100", "101")
        await client.send("Ping", ActionID="end")  # the events went out before its Pong
        events = []
        while b"Pong" not in (message := await client.read()):
            events.append(field(message, "Event"))
        assert set(events) == {"DeviceStateChange", "ExtensionStatus"}
        presences = await client.action("PresenceStateList", ActionID="p")
        assert field(presences, "EventList") == "start"
        assert field(await client.read(), "Event") == "PresenceStateChange"  # a list item passes


async def test_exclude_and_advanced_filters() -> None:
    status = b"Event: ExtensionStatus\r\nPrivilege: call,all\r\nExten: 101\r\nContext: blf\r\n\r\n"
    device = b"Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: Custom:101\r\n\r\n"
    exclude = tuple(parse_eventfilter(line) for line in ["eventfilter = !Event: DeviceStateChange"])
    assert admits(exclude, status) and not admits(exclude, device)
    exact = (parse_eventfilter("eventfilter(name(ExtensionStatus),header(Exten),method(exact)) = 101"),)
    assert admits(exact, status) and not admits(exact, status.replace(b"101", b"102"))
    assert not admits(exact, device)
    both = (*exact, parse_eventfilter("eventfilter(action(exclude),header(Context),method(regex)) = bl."))
    assert not admits(both, status)  # included, then excluded
    name_only = (parse_eventfilter("eventfilter(name(DeviceStateChange)) ="),)
    assert admits(name_only, device) and not admits(name_only, status)
    for bad in (
        "eventfilter = ",
        "eventfilter = !",
        "eventfilter(name(X)) = pattern",  # method none with a pattern
        "eventfilter(method(exact)) =",
        "eventfilter(colour(red)) = x",
        "eventfilter = X[",
    ):
        with pytest.raises(ValueError):
            parse_eventfilter(bad)


async def test_list_commands_names_what_the_user_may_run(connect: Connect) -> None:
    async with Simulator(["100"], users=[user(read="call", write="reporting")]) as pbx:
        client = await connect(pbx)
        await client.login()
        reply = await client.action("ListCommands", ActionID="lc")
    assert parse(reply) == [
        ("Response", "Success"),
        ("ActionID", "lc"),
        ("CoreShowChannels", "List currently active channels. (Priv: system,reporting,all)"),
        ("DBGet", "Get DB Entry. (Priv: system,reporting,all)"),
        ("DeviceStateList", "List the current known device states. (Priv: call,reporting,all)"),
        ("Events", "Control Event Flow. (Priv: <none>)"),
        ("ExtensionStateList", "List the current known extension states. (Priv: call,reporting,all)"),
        ("ListCommands", "List available manager commands. (Priv: <none>)"),
        ("Login", "Login Manager. (Priv: <none>)"),
        ("Logoff", "Logoff Manager. (Priv: <none>)"),
        ("Ping", "Keepalive command. (Priv: <none>)"),
        ("PresenceStateList", "List the current known presence states. (Priv: call,reporting,all)"),
        ("QueueStatus", "Show queue status. (Priv: <none>)"),
        ("QueueSummary", "Show queue summary. (Priv: <none>)"),
    ]


def test_perm_mask_reads_read_and_write_lines_as_get_perm() -> None:
    assert perm_mask("call,reporting") == EVENT_CLASSES["call"] | EVENT_CLASSES["reporting"]
    assert perm_mask("all") == ALL_EVENTS and perm_mask("") == 0 and perm_mask("none") == 0
    # ast_instring(): a token before a comma matches every class it starts.
    c_classes = ("call", "command", "config", "cdr", "cc")
    assert perm_mask("c,system") == sum(EVENT_CLASSES[n] for n in (*c_classes, "system"))
    assert perm_mask("system,c") == EVENT_CLASSES["system"]  # the last token matches exactly


async def test_every_simulated_action_has_its_asterisk_authority(sim: Simulator) -> None:
    """Each action a session answers is in users.ACTIONS, and the panel's table
    (app/capabilities.py) agrees with the simulator's reading of Asterisk's source."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        handled = set(Session(sim, reader, writer)._actions)  # built, never run
    finally:
        writer.close()
    assert handled <= set(ACTIONS), handled - set(ACTIONS)
    for capability in PANEL_ACTIONS:
        _name, _synopsis, authority = ACTIONS[capability.ami[0].lower()]
        assert authority == sum(EVENT_CLASSES[c] for c in capability.classes), capability.name

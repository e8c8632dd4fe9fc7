"""A simulated boot after `core restart` (app/sim/server.py, model.py): logins taken before
FullyBooted, module actions unknown until loaded, hints appearing one by one, as Asterisk 22."""

from __future__ import annotations

import pytest

from app.sim import Simulator
from tests.sim.support import Connect, field

UNKNOWN = b"Response: Error\r\nActionID: %s\r\nMessage: Invalid/unknown command: %s. Use Action: ListCommands to show available commands.\r\n\r\n"  # noqa: E501 - manager.c's text, as sent


async def test_while_booting_logins_work_and_module_actions_are_unknown(
    sim: Simulator, connect: Connect
) -> None:
    await sim.restart(boot=3600)  # stays booting for this test; stop() ends the boot
    client = await connect()
    reply = await client.login(events="system,call")  # no FullyBooted after the reply
    assert reply == b"Response: Success\r\nActionID: login\r\nMessage: Authentication accepted\r\n\r\n"
    for action in ("DeviceStateList", "PresenceStateList", "PJSIPShowEndpoint"):
        answer = await client.action(action, ActionID="x", Endpoint="100")
        assert answer == UNKNOWN % (b"x", action.encode())
    empty = await client.action("ExtensionStateList", ActionID="l")  # extension_state.c, core
    assert empty == b"Response: Error\r\nActionID: l\r\nMessage: No dialplan hints are available\r\n\r\n"
    channels = await client.action("CoreShowChannels", ActionID="c")  # manager.c, core
    assert field(channels, "EventList") == "start"
    assert field(await client.read(), "ListItems") == "0"
    with pytest.raises(RuntimeError, match="booting"):
        sim.place_call("100", "101")  # pbx.c starts no call before FullyBooted
    assert sim.idle_extensions() == []  # so churn starts none either
    await client.ping()


async def test_hints_appear_one_by_one_then_fullybooted(sim: Simulator, connect: Connect) -> None:
    await sim.restart(boot=3600)  # the boot is stepped by hand here: no race with the clock
    everyone, lamps_only = await connect(), await connect()
    await everyone.login(events="on")
    await lamps_only.login(events="call")
    await everyone.read()  # SuccessfulAuth: nothing of FullyBooted at the login
    for count in (1, 2):
        sim.load_hints(count)
    sim.finish_boot()
    seen = await everyone.read_many(4)
    assert [(field(m, "Event"), field(m, "Exten")) for m in seen[:3]] == [
        ("ExtensionStatus", "100"),
        ("ExtensionStatus", "101"),
        ("ExtensionStatus", "102"),
    ]
    # asterisk.c publish_fully_booted: the JSON's keys in the order packed, Status first
    booted = seen[3].decode().split("\r\n")
    assert booted[:3] == ["Event: FullyBooted", "Privilege: system,all", "Status: Fully Booted"]
    assert [line.split(":")[0] for line in booted[3:5]] == ["Uptime", "LastReload"]
    assert [field(m, "Exten") for m in await lamps_only.read_many(3)] == ["100", "101", "102"]
    await lamps_only.expect_silence()  # no system class: no FullyBooted
    await everyone.send("DeviceStateList", ActionID="d")
    assert field(await everyone.read(), "Message") == "Device State Changes will follow"
    assert sim.place_call("100", "101").callee.exten == "101"


async def test_a_timed_boot_ends_with_everything_loaded(sim: Simulator, connect: Connect) -> None:
    await sim.restart(boot=0.4)
    await sim.wait_booted()
    client = await connect()
    await client.login(events="system,call")
    booted = await client.read()  # at login now, in the form transcript 22 shows
    assert (field(booted, "Event"), field(booted, "Uptime")) == ("FullyBooted", "0")
    await client.send("ExtensionStateList", ActionID="l")
    *_, end = await client.read_many(5)
    assert field(end, "ListItems") == "3"


async def test_a_device_change_while_booting_moves_only_hints_already_loaded(
    sim: Simulator, connect: Connect
) -> None:
    await sim.restart(boot=3600)
    client = await connect()
    await client.login()
    sim.load_hints(1)
    assert field(await client.read(), "Exten") == "100"
    sim.set_device_state("Custom:101", "INUSE")  # its hint is not there yet
    assert field(await client.read(), "Event") == "DeviceStateChange"
    await client.expect_silence()
    await client.send("ExtensionStateList", ActionID="l")
    _, item, end = await client.read_many(3)
    assert (field(item, "Exten"), field(end, "ListItems")) == ("100", "1")
    sim.load_modules()  # the dialplan is whole before res_manager_devicestate loads
    statuses = await client.read_many(2)
    assert [(field(m, "Exten"), field(m, "Status")) for m in statuses] == [("101", "1"), ("102", "0")]

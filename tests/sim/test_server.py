"""The server (app/sim/server.py): restarts, dropped connections, a frozen PBX, raw injected
bytes, stopping (transcript 21)."""

from __future__ import annotations

import asyncio

import pytest

from app.sim import Presence, Simulator
from app.sim.churn import Churn
from tests.sim.support import (
    BANNER,
    SILENCE,
    Connect,
    client_frames,
    field,
    fixture,
    normalize,
)

# --- restarts ---


async def test_restart_matches_transcript_21(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.send_raw(client_frames("21-core-restart-now.client.txt")[0])
    await client.read_many(3)
    await sim.restart()  # the recording's CLI `core restart now`
    ours = await client.read_to_eof()
    assert normalize(ours) == normalize(fixture("21-core-restart-now.txt"))


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
    await sim.restart(["101", "200"], boot=0)  # the boot in time: tests/sim/test_boot.py
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


async def test_restart_forgets_the_presence_list_not_the_presences(sim: Simulator, connect: Connect) -> None:
    sim.set_presence("100", "away", "lunch", "back soon")
    await sim.restart()
    await sim.wait_booted()
    client = await connect()
    await client.login()
    reply = await client.action("PresenceStateList")
    assert field(await client.read(), "ListItems") == "0"  # the stasis cache is gone ...
    assert reply.startswith(b"Response: Success\r\nEventList: start\r\n")
    assert sim.presence("100") == Presence("away", "lunch", "back soon")  # ... astdb is not


async def test_restart_drops_the_calls(sim: Simulator) -> None:
    sim.place_call("100", "101").answer()
    await sim.restart()
    assert (sim.calls, sim.channels, sim.device_state("Custom:101")) == ([], [], "NOT_INUSE")
    await sim.wait_booted()  # no call starts before FullyBooted
    assert sim.place_call("101", "100").a.name == "PJSIP/101-00000000"  # counters start again


# --- drops, a silent peer, raw bytes, stopping ---


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


async def test_a_background_task_that_crashes_is_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Churn) -> None:
        raise RuntimeError("churn broke")

    monkeypatch.setattr(Churn, "run", broken)
    async with Simulator(["100"], churn=5) as pbx:
        name = f"ami-simulator-churn-{pbx.port}"
        (task,) = [t for t in asyncio.all_tasks() if t.get_name() == name]
        await asyncio.wait([task])  # its done-callback runs first
        crashes = [r for r in caplog.records if r.levelname == "ERROR"]
        assert [r.getMessage() for r in crashes] == [f"simulator task {name} crashed"]
        assert crashes[0].exc_info is not None and str(crashes[0].exc_info[1]) == "churn broke"

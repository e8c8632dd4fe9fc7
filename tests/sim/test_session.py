"""One client's AMI session (app/sim/session.py): login, logoff, the actions and their errors,
checked byte for byte against the Asterisk 22 transcripts where one covers them."""

from __future__ import annotations

import re

import pytest

from app.sim import Simulator
from tests.sim.support import (
    Connect,
    client_frames,
    fixture,
    messages,
    normalize,
    parse,
    replay,
)

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
    assert await client.action("QueueReload", ActionID="q") == (
        b"Response: Error\r\nActionID: q\r\nMessage: Invalid/unknown command: QueueReload."
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


async def test_logoff_says_goodbye_and_hangs_up(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login()
    assert await client.action("Logoff", ActionID="bye") == (
        b"Response: Goodbye\r\nActionID: bye\r\nMessage: Thanks for all the fish.\r\n\r\n"
    )
    await client.expect_closed()
    assert sim.sessions == 0


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

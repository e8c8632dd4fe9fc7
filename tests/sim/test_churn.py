"""Random churn (app/sim/churn.py): plausible call patterns, calls of both kinds, and the
same traffic for the same seed."""

from __future__ import annotations

import logging
import re

import pytest

from app.sim import Simulator
from app.states import DEVICE_TO_STATUS
from tests.sim.support import (
    Client,
    Connect,
    field,
)

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
    caplog.set_level(logging.DEBUG, logger="app.sim")
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

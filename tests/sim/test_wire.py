"""The wire format (app/sim/wire.py) as clients meet it: sloppy framing, oversized messages,
event masks from `Events:` and `EventMask:`."""

from __future__ import annotations

import re

import pytest

from app.sim import MAX_FRAME_BYTES, Simulator
from tests.sim.support import (
    Connect,
    field,
)

# --- framing ---


async def test_ping_without_action_id_and_sloppy_framing(connect: Connect) -> None:
    client = await connect()
    await client.send_raw(b"\r\naction: login\nusername: BLF\nsecret:blfsecret\nevents: off\n\n")
    assert await client.read() == b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n"
    reply = await client.action("Ping")
    assert re.fullmatch(rb"Response: Success\r\nPing: Pong\r\nTimestamp: [0-9]+\.[0-9]{6}\r\n\r\n", reply)


@pytest.mark.parametrize(
    "garbage",
    [b"A" * (MAX_FRAME_BYTES + 10), b"X-Junk: 0123456789\r\n" * (MAX_FRAME_BYTES // 20 + 10)],
    ids=["one-long-line", "endless-message"],
)
async def test_oversized_messages_get_the_client_dropped(connect: Connect, garbage: bytes) -> None:
    client = await connect()
    await client.login()
    try:
        await client.send_raw(garbage)
    except ConnectionError:
        pass
    await client.expect_closed()


# --- event masks ---


async def test_events_reach_each_client_by_its_mask(sim: Simulator, connect: Connect) -> None:
    clients = {mask: await connect() for mask in ("on", "call", "system,call", "system", "off", "Call")}
    for mask, client in clients.items():
        reply = await client.login(events=mask)
        assert field(reply, "Message") == "Authentication accepted"
        if "system" in mask or mask == "on":
            assert field(await client.read(), "Event") == "FullyBooted"
        if mask == "on":
            assert field(await client.read(), "Event") == "SuccessfulAuth"
    sim.set_device_state("Custom:100", "RINGING")
    for mask, client in clients.items():
        if mask in ("on", "call", "system,call"):
            assert [field(m, "Event") for m in await client.read_many(2)] == [
                "DeviceStateChange",
                "ExtensionStatus",
            ]
        await client.ping()  # the others got nothing ("Call" is not a class name)


async def test_events_action_switches_events(sim: Simulator, connect: Connect) -> None:
    client = await connect()
    await client.login(events="off")
    sim.set_device_state("Custom:100", "INUSE")
    await client.ping()
    assert await client.action("Events", EventMask="call", ActionID="e") == (
        b"Response: Success\r\nActionID: e\r\nEvents: On\r\n\r\n"
    )
    sim.set_device_state("Custom:100", "NOT_INUSE")
    assert len(await client.read_many(2)) == 2
    assert await client.action("Events", EventMask="system") == b"Response: Success\r\nEvents: On\r\n\r\n"
    sim.set_device_state("Custom:100", "INUSE")
    await client.ping()
    assert await client.action("Events", EventMask="off") == b"Response: Success\r\nEvents: Off\r\n\r\n"
    assert await client.action("Events") == b"Response: Error\r\nMessage: Invalid event mask\r\n\r\n"

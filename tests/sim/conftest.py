"""The simulator's fixtures: `sim`, a small PBX, and `connect`, raw AMI clients to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.sim import Simulator
from tests.sim.support import BANNER, Client, Connect


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(["100", "101", "102"], context="blf") as simulator:
        yield simulator


@pytest.fixture
async def connect(sim: Simulator) -> AsyncIterator[Connect]:
    """Open clients (to `sim` unless told otherwise), all closed at teardown."""
    opened: list[Client] = []

    async def _connect(target: Simulator | None = None, *, banner: bool = True) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", (target or sim).port)
        client = Client(reader, writer)
        opened.append(client)
        if banner:
            assert await client.banner() == BANNER
        return client

    yield _connect
    for client in opened:
        await client.close()

"""The collector lease (`store.lease`) of both backends: one owner, renewal, expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from app.store import Lease, MemoryStore, SnapshotStore
from tests.store.common import memcached_store


@pytest.fixture(params=["memory", "memcached"])
async def leases(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Lease, Lease]]:
    """Two handles on one lease: of two memcached clients, or of one in-process store."""
    if request.param == "memory":
        memory = MemoryStore()
        yield memory.lease, memory.lease
        return
    server = request.getfixturevalue("memcached")
    one, two = memcached_store(server), memcached_store(server)
    yield one.lease, two.lease
    await one.close()
    await two.close()


async def test_lease_one_owner_wins_and_renews(
    leases: tuple[Lease, Lease],
) -> None:
    one, two = leases
    assert await one.acquire("collector-a", 30)
    assert not await two.acquire("collector-b", 30)
    assert await one.acquire("collector-a", 30)  # renew
    assert not await two.acquire("collector-b", 30)

    await two.release("collector-b")  # not the holder: no effect
    assert not await two.acquire("collector-b", 30)

    await one.release("collector-a")
    assert await two.acquire("collector-b", 30)
    assert not await one.acquire("collector-a", 30)


async def test_lease_holder(leases: tuple[Lease, Lease]) -> None:
    first, second = leases
    assert await second.holder() is None
    assert await first.acquire("host-a:1", ttl=5)
    assert await second.holder() == "host-a:1"
    await first.release("host-a:1")
    assert await second.holder() is None


async def test_lease_expires(leases: tuple[Lease, Lease]) -> None:
    one, two = leases
    assert await one.acquire("collector-a", 1)
    assert not await two.acquire("collector-b", 30)
    deadline = time.monotonic() + 5
    # memcached counts whole seconds: the lease ends between 1 and 2 s from now.
    while not await two.acquire("collector-b", 30):
        assert time.monotonic() < deadline, "lease did not expire"
        await asyncio.sleep(0.05)
    # The old holder cannot renew what is now someone else's lease.
    assert not await one.acquire("collector-a", 30)


@pytest.mark.parametrize("owner, ttl", [("", 5), ("a b", 5), ("ü", 5), ("a", 0), ("a", -1)])
async def test_lease_arguments_are_checked(store: SnapshotStore, owner: str, ttl: int) -> None:
    with pytest.raises(ValueError):
        await store.lease.acquire(owner, ttl)
    if ttl > 0:  # the owner is the bad one: release refuses it too
        with pytest.raises(ValueError):
            await store.lease.release(owner)

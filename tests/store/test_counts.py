"""Counts shared by every process of a store (the actions' rate per user): one more per
call within a fixed window, a new window from zero, names never written into a key."""

from __future__ import annotations

import asyncio

import pytest

from app.store import SnapshotStore
from tests.store.common import memcached_store

START = 1_800_000_000  # a window boundary for 60 s (and 10 s) windows


async def test_a_count_grows_within_its_window_and_starts_again_in_the_next(store: SnapshotStore) -> None:
    assert await store.count("actions:anna", 60, now=START + 1) == (1, 59)
    assert await store.count("actions:anna", 60, now=START + 30) == (2, 30)
    assert await store.count("actions:bob", 60, now=START + 30) == (1, 30), "per name"
    assert await store.count("actions:anna", 60, now=START + 60) == (1, 60), "a new window"


async def test_concurrent_counts_are_each_counted(store: SnapshotStore) -> None:
    counts = await asyncio.gather(*(store.count("actions:anna", 60, now=START) for _ in range(50)))
    assert sorted(c for c, _ in counts) == list(range(1, 51))


async def test_a_hostile_name_is_hashed_not_written_into_the_key(store: SnapshotStore) -> None:
    name = "actions:" + "ä \r\nset x 0 0 1\r\n" * 40
    assert await store.count(name, 10, now=START) == (1, 10)
    assert await store.count(name, 10, now=START + 1) == (2, 9)


@pytest.mark.parametrize("window", [0, -5, 86_401, True, 1.5])
async def test_a_bad_window_is_refused(store: SnapshotStore, window) -> None:
    with pytest.raises(ValueError, match="count window"):
        await store.count("actions:anna", window)


async def test_two_processes_share_one_count(memcached) -> None:
    """Two stores on one memcached (two web workers): one count, not one each."""
    first, second = memcached_store(memcached), memcached_store(memcached)
    try:
        assert (await first.count("actions:anna", 60, now=START))[0] == 1
        assert (await second.count("actions:anna", 60, now=START))[0] == 2
        assert (await first.count("actions:anna", 60, now=START))[0] == 3
    finally:
        await first.close()
        await second.close()

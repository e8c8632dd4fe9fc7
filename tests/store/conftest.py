"""Fixtures of the store tests: `store` (each backend in turn) and `raw` (plain aiomcache)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiomcache
import pytest

from app.store import MemoryStore, SnapshotStore
from tests.store.common import memcached_store

if TYPE_CHECKING:
    from tests.conftest import Memcached


@pytest.fixture
async def raw(memcached: Memcached) -> AsyncIterator[aiomcache.Client]:
    """A plain aiomcache client, to look at the bytes the store wrote."""
    client = aiomcache.Client(memcached.host, memcached.port)
    yield client
    await client.close()


@pytest.fixture(params=["memory", "memcached"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SnapshotStore]:
    if request.param == "memory":
        instance: SnapshotStore = MemoryStore()
    else:
        instance = memcached_store(request.getfixturevalue("memcached"))
    yield instance
    await instance.close()

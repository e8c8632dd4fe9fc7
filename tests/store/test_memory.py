"""MemoryStore: what only the in-process store does (the shared contract is in test_contract)."""

from __future__ import annotations

import asyncio

from app.store import MemoryStore
from tests.store.common import make_pub

# --- wait_for_version ----------------------------------------------------------------------


async def test_memory_wait_wakes_on_publish() -> None:
    store = MemoryStore()
    first = asyncio.create_task(store.wait_for_version(None, 60))
    second = asyncio.create_task(store.wait_for_version(None, 60))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done() and not second.done()
    first.cancel()  # one waiter going away must not affect the other

    await store.publish(make_pub(1, {}))
    assert await asyncio.wait_for(second, 1) == 1
    assert first.cancelled()

"""MemoryStore: the published state inside this process (one web process, no memcached).

Do not break: the same keys and bytes as memcached, written in the same order (ext keys,
snapshot, changes, version), so the readers cannot tell the two stores apart.
"""

from __future__ import annotations

import asyncio
import time

from app.store.contract import DEFAULT_PREFIX, Publication, SnapshotStore, parse_version
from app.store.lease import MemoryLease


class MemoryStore(SnapshotStore):
    """The embedded store for a single process: same keys and bytes as memcached, no I/O."""

    def __init__(self, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(prefix)
        self._data: dict[str, bytes] = {}
        # A Condition, not a shared future: cancelling one waiter cannot wake or break the others.
        self._published = asyncio.Condition()
        self.lease = MemoryLease()
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (count, forgotten after)

    async def publish(self, pub: Publication) -> None:
        plan = self._plan(pub, lambda _key, data: data)  # plain JSON: nothing to save in memory
        for key, value in plan.ext_sets:
            self._data[key] = value
        for key in plan.ext_deletes:
            self._data.pop(key, None)
        self._data[self._keys.snapshot] = plan.snapshot
        if plan.changes is not None:
            self._data[self._keys.changes] = plan.changes
        self._data[self._keys.version] = plan.version
        async with self._published:
            self._published.notify_all()

    async def read_version(self) -> int | None:
        return self._version()

    async def _get(self, key: str) -> bytes | None:
        return self._data.get(key)

    async def wait_for_version(self, known: int | None, poll_interval: float) -> int | None:
        """Wakes on `publish`; `poll_interval` is not needed in memory."""
        async with self._published:
            await self._published.wait_for(lambda: self._version() != known)
            return self._version()

    async def close(self) -> None:
        pass

    async def _increment(self, key: str, window: int) -> int:
        now = time.monotonic()
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}  # old windows go
        count = self._counts.get(key, (0, 0.0))[0] + 1
        self._counts[key] = (count, now + 2 * window)
        return count

    def _version(self) -> int | None:
        return parse_version(self._data.get(self._keys.version))

"""The publisher: turns the picture's pending changes into versions in the store, at most
one per `PUBLISH_WINDOW`, and publishes everything again when the store lost it.
Do not break: a publication that failed leaves every extension it carried dirty (sent again)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from app.metrics import Metrics
from app.snapshot import PbxPicture
from app.store import SnapshotStore, StoreLost, StoreUnavailable

log = logging.getLogger(__name__)

STORE_RETRY = 1.0  # seconds between publish attempts while the store is down
BURST = 0.002  # seconds for the rest of a burst of AMI events to arrive
STORE_CHECK = 1.0  # seconds between checks that the store still holds our version


class Publisher:
    """Publishes the collector's picture: `poke()` after a change, `run()` as a task."""

    def __init__(
        self,
        picture: PbxPicture,
        store: SnapshotStore,
        *,
        window: float = 0.05,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.picture = picture
        self.store = store
        self.window = window
        self.clock = clock
        self.version = 0  # the newest version we published
        self.published = asyncio.Event()  # set after every successful publish (for tests)
        self.changed = asyncio.Event()
        self.changed.set()  # publish the initial "not connected" picture at once
        self._store_ok = True
        self._need_full = True  # the first publication carries everything

    def poke(self) -> None:
        """The picture changed: publish it (batched with whatever else comes meanwhile)."""
        self.changed.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        published_at = -math.inf
        while True:
            try:
                async with asyncio.timeout(STORE_CHECK):
                    await self.changed.wait()
            except TimeoutError:
                await self._check_store()
                continue
            if self.window:
                # Each version is a message to every viewer: at most one per window. A change
                # after a quiet spell waits only for the rest of its burst (a call is several
                # events), so it shows at once; a steady stream is batched.
                burst = min(BURST, self.window)
                await asyncio.sleep(max(burst, published_at + self.window - loop.time()))
                published_at = loop.time()
            self.changed.clear()
            if not await self._publish():
                await asyncio.sleep(STORE_RETRY)
                self.changed.set()

    async def _publish(self) -> bool:
        if not self.picture.pending and not self._need_full:
            return True
        try:
            if self._need_full:
                stored = await self.store.read_version()
                self.version = max(self.version, stored or 0)
            publication = self.picture.publication(self.version + 1, self.clock(), full=self._need_full)
            try:
                await self.store.publish(publication)
            except BaseException:
                self.picture.mark_all_dirty()  # whatever was in flight goes again
                raise
        except StoreLost as error:
            log.warning("%s; publishing the full picture again", error)
            self._need_full = True
            return await self._publish()
        except StoreUnavailable as error:
            self._store_down(error)
            return False
        if not self._store_ok:
            log.info("store reachable again; published the full picture")
        self._store_ok, self._need_full = True, False
        self.version = publication.version
        self.metrics.versions_published.inc()
        self.published.set()
        self.published.clear()
        return True

    async def _check_store(self) -> None:
        """A store that restarted with nothing to publish since: notice it and publish all."""
        try:
            stored = await self.store.read_version()
        except StoreUnavailable as error:
            self._store_down(error)
            self.changed.set()
            return
        if not self._store_ok or stored is None or stored < self.version:
            if self._store_ok:
                log.warning("store lost the snapshot (restarted?); publishing it again")
            self._need_full = True
            self.changed.set()

    def _store_down(self, error: StoreUnavailable) -> None:
        self.metrics.store_errors.labels("collector").inc()
        if self._store_ok:
            log.error("store unreachable (%s); keeping states in memory until it is back", error)
        self._store_ok = False
        self._need_full = True

"""MemcachedStore against a real memcached (fixture `memcached`): keys, compression and
size, and every failure the aiomcache repairs are there for."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import random
import time
import zlib
from typing import TYPE_CHECKING

import aiomcache
import pytest

from app.store import Publication, StoreError, StoreLost, StoreUnavailable
from app.store.memcached import MemcachedStore
from tests.store.common import TIMEOUT, ext_json, make_pub, memcached_store

if TYPE_CHECKING:
    from tests.conftest import Memcached

log = logging.getLogger(__name__)


# --- keys ----------------------------------------------------------------------------------


async def test_prefix_separates_stores(memcached: Memcached, raw: aiomcache.Client) -> None:
    one, two = memcached_store(memcached, prefix="one:"), memcached_store(memcached, prefix="")
    try:
        await one.publish(make_pub(7, {"101@internal": ext_json("101@internal")}))
        assert await two.read_version() is None
        assert await raw.get(b"one:version") == b"7"
        assert await raw.get(b"one:ext:101@internal") == ext_json("101@internal")
    finally:
        await one.close()
        await two.close()


# --- memcached: compression and size -------------------------------------------------------


def big_extensions(count: int = 5000) -> dict[str, bytes]:
    return {f"{n}@internal": ext_json(f"{n}@internal", pad=320) for n in range(10000, 10000 + count)}


async def test_large_snapshot_is_compressed(memcached: Memcached, raw: aiomcache.Client) -> None:
    exts = big_extensions()
    assert 380 <= len(exts["10000@internal"]) <= 420
    pub = make_pub(1, exts)
    assert len(pub.snapshot) > 1024 * 1024

    store = memcached_store(memcached, timeout=2.0)
    try:
        started = time.perf_counter()
        await store.publish(pub)
        elapsed = time.perf_counter() - started
        log.info("published 5,000 extension keys + snapshot in %.3f s", elapsed)

        stored = await raw.get(b"blf:snapshot")
        assert stored[:1] == b"\x78"
        assert zlib.decompress(stored) == pub.snapshot
        assert await raw.get(b"blf:ext:10000@internal") == exts["10000@internal"]  # small: plain
        assert await store.read_snapshot_bytes() == pub.snapshot
        assert await store.read_extension_bytes("14999@internal") == exts["14999@internal"]
        assert memcached.stats()["curr_items"] == "5002"
    finally:
        await store.close()


async def test_compression_threshold(memcached: Memcached, raw: aiomcache.Client) -> None:
    store = memcached_store(memcached, compress_over=100)
    try:
        await store.publish(make_pub(1, {"101@internal": ext_json("101@internal", pad=200)}))
        assert (await raw.get(b"blf:snapshot"))[:1] == b"\x78"
        assert (await raw.get(b"blf:ext:101@internal"))[:1] == b"\x78"
        assert (await store.read_extension("101@internal"))["exten"] == "101"
        # Readers tell the formats apart by the first byte: a plain value reads the same.
        await raw.set(b"blf:ext:101@internal", b'{"plain": true}')
        assert await store.read_extension("101@internal") == {"plain": True}
    finally:
        await store.close()


async def test_too_large_even_compressed_raises(memcached: Memcached) -> None:
    noise = base64.b64encode(os.urandom(1_200_000)).decode()  # ~1.6 MB, barely compressible
    store = memcached_store(memcached)
    try:
        with pytest.raises(StoreError, match="1 MB"):
            await store.publish(Publication(1, json.dumps({"noise": noise}).encode(), {}, []))
        assert await store.read_version() is None
    finally:
        await store.close()


async def test_foreign_value_raises_store_error(memcached: Memcached, raw: aiomcache.Client) -> None:
    store = memcached_store(memcached)
    try:
        await raw.set(b"blf:snapshot", b"not ours")
        with pytest.raises(StoreError, match="neither JSON nor zlib"):
            await store.read_snapshot()
        await raw.set(b"blf:version", b"x1")
        with pytest.raises(StoreError, match="not an integer"):
            await store.read_version()
    finally:
        await store.close()


async def test_full_sync_runs_pool_size_calls_at_once(memcached: Memcached) -> None:
    store = memcached_store(memcached, pool_size=4)
    in_flight = peak = 0
    set_ = store._client.set

    async def counting_set(*args, **kwargs):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await set_(*args, **kwargs)
        finally:
            in_flight -= 1

    store._client.set = counting_set  # type: ignore[method-assign]
    try:
        await store.publish(make_pub(1, big_extensions(500)))
        assert peak == 4
        assert await store.read_version() == 1
    finally:
        await store.close()


# --- memcached: failures -------------------------------------------------------------------


async def test_memcached_down_raises_quickly(memcached: Memcached) -> None:
    store = memcached_store(memcached)
    try:
        await store.publish(make_pub(1, {}))
        memcached.stop()
        for call in (
            store.read_version(),
            store.read_snapshot(),
            store.publish(make_pub(2, {"101@internal": ext_json("101@internal")})),
            store.wait_for_version(1, 0.01),
            store.lease.acquire("me", 5),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{memcached.port}"):
                await call
            assert time.monotonic() - started < TIMEOUT + 0.5  # refused: no need to time out
    finally:
        await store.close()


@pytest.mark.timeout(10)
async def test_server_hanging_up_mid_command_raises_instead_of_spinning() -> None:
    """Plain aiomcache loops forever on readline() at EOF, freezing the event loop."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    store = MemcachedStore("127.0.0.1", server.sockets[0].getsockname()[1], timeout=TIMEOUT)
    try:
        for call in (
            store.read_version(),
            store.publish(make_pub(1, {"101@internal": ext_json("101@internal")})),
            store.lease.acquire("collector-a", 5),
        ):
            with pytest.raises(StoreUnavailable, match="closed the connection"):
                await call
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


async def test_restart_loses_keys_and_client_recovers(memcached: Memcached) -> None:
    store = memcached_store(memcached)
    try:
        await store.publish(make_pub(5, {"101@internal": ext_json("101@internal")}))
        await asyncio.gather(*(store.read_version() for _ in range(8)))  # fill the pool
        memcached.restart()
        # No failed call: the pooled connections died with the old process.
        assert await store.read_version() is None
        assert await store.read_extension("101@internal") is None
        await store.publish(make_pub(6, {"102@internal": ext_json("102@internal")}))
        assert await store.read_version() == 6
        assert (await store.read_extension("102@internal"))["exten"] == "102"
    finally:
        await store.close()


async def test_incremental_publish_after_restart_raises_store_lost(memcached: Memcached) -> None:
    """An incremental batch cannot stand on a store that lost the keys it builds on."""
    store = memcached_store(memcached)
    exts = {k: ext_json(k) for k in ("101@internal", "102@internal")}
    try:
        await store.publish(make_pub(5, exts))
        incremental = dataclasses.replace(make_pub(6, exts, changed=["102@internal"]), full=False)
        await store.publish(incremental)
        assert await store.read_version() == 6
        memcached.restart()
        with pytest.raises(StoreLost):
            await store.publish(dataclasses.replace(incremental, version=7))
        assert await store.read_version() is None, "a reader never sees a version without its keys"
        await store.publish(make_pub(7, exts))  # the full picture stands on its own
        assert await store.read_version() == 7
        assert (await store.read_extension("101@internal"))["exten"] == "101"
    finally:
        await store.close()


async def test_restart_wakes_a_waiter_with_none(memcached: Memcached) -> None:
    store = memcached_store(memcached)
    try:
        await store.publish(make_pub(5, {}))
        memcached.restart()
        assert await asyncio.wait_for(store.wait_for_version(5, 0.01), 2) is None
    finally:
        await store.close()


async def test_frozen_memcached_times_out_and_answers_stay_right(memcached: Memcached) -> None:
    exts = {f"{n}@internal": ext_json(f"{n}@internal", f"s{n}") for n in range(100, 140)}
    store = memcached_store(memcached, timeout=0.3)
    try:
        await store.publish(make_pub(1, exts))
        memcached.pause()
        try:
            # Many calls in flight on every pooled connection, all left unanswered.
            started = time.monotonic()
            results = await asyncio.gather(
                *(store.read_extension(key) for key in exts),
                store.read_version(),
                store.publish(make_pub(2, exts, changed=["100@internal"])),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
        finally:
            memcached.resume()
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert "timed out after 0.3s" in str(results[0])
        # 40 calls share 4 connections, but each call's timeout covers its wait for one.
        assert elapsed < 0.3 + 0.5  # slack for a busy CI machine; a hang would be unbounded

        # memcached now answers the abandoned requests; none of those replies may be
        # read as the answer to a later call.
        for _ in range(3):
            for key in random.sample(list(exts), len(exts)):
                assert (await store.read_extension(key))["state"] == f"s{key[:3]}"
            assert await store.read_version() == 1
        answers = await asyncio.gather(*(store.read_extension(key) for key in exts))
        assert [a["state"] for a in answers] == [f"s{key[:3]}" for key in exts]
    finally:
        await store.close()


async def test_cancelled_calls_never_poison_later_answers(memcached: Memcached) -> None:
    exts = {f"{n}@internal": ext_json(f"{n}@internal", f"s{n}") for n in range(100, 150)}
    store = memcached_store(memcached, pool_size=2)
    rng = random.Random(1234)
    try:
        await store.publish(make_pub(1, exts))
        keys = list(exts)
        cancelled = answered = 0
        for _ in range(400):
            key = rng.choice(keys)
            task = asyncio.ensure_future(store.read_extension(key))
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)  # let it get to a random point of the exchange
            if rng.random() < 0.6:
                task.cancel()
            try:
                answer = await task
            except asyncio.CancelledError:
                cancelled += 1
                continue
            assert answer["state"] == f"s{key[:3]}"
            answered += 1
        assert cancelled > 100 and answered > 100
        for key in keys:
            assert (await store.read_extension(key))["state"] == f"s{key[:3]}"
    finally:
        await store.close()


# --- wait_for_version ----------------------------------------------------------------------


async def test_memcached_wait_wakes_on_external_change(memcached: Memcached, raw: aiomcache.Client) -> None:
    store = memcached_store(memcached)
    try:
        await store.publish(make_pub(6, {}))
        waiter = asyncio.create_task(store.wait_for_version(6, 0.01))
        await store.read_version()  # a round trip: the waiter has polled at least once
        assert not waiter.done()
        await raw.set(b"blf:version", b"7")
        assert await asyncio.wait_for(waiter, 2) == 7
    finally:
        await store.close()

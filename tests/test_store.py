"""app.store against a real memcached (fixture `memcached`) and in memory."""

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
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import aiomcache
import pytest

from app.store import (
    MemcachedStore,
    MemoryStore,
    Publication,
    SnapshotStore,
    StoreError,
    StoreLost,
    StoreUnavailable,
    open_store,
)

if TYPE_CHECKING:
    from tests.conftest import Memcached

log = logging.getLogger(__name__)

TIMEOUT = 0.5  # the store's per-call timeout in these tests


# --- helpers ---------------------------------------------------------------------------


def ext_json(key: str, state: str = "idle", pad: int = 0) -> bytes:
    exten, context = key.split("@")
    doc = {"exten": exten, "context": context, "state": state, "hint": "PJSIP/" + exten}
    if pad:
        doc["label"] = ("Reception desk " * (pad // 15 + 1))[:pad]
    return json.dumps(doc).encode()


def make_pub(
    version: int, exts: dict[str, bytes], changed: list[str] | None = None, removed=()
) -> Publication:
    """A publication whose snapshot holds all of `exts`; `changed` defaults to all of them."""
    snapshot = {"version": version, "extensions": {k: json.loads(v) for k, v in exts.items()}}
    keys = list(exts) if changed is None else changed
    return Publication(
        version=version,
        snapshot=json.dumps(snapshot).encode(),
        changed={k: exts[k] for k in keys},
        removed=list(removed),
    )


def memcached_store(server: Memcached, **kwargs) -> MemcachedStore:
    kwargs.setdefault("timeout", TIMEOUT)
    return MemcachedStore(server.host, server.port, **kwargs)


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


# --- behaviour shared by both backends ---------------------------------------------------


async def test_empty_store_reads_none(store: SnapshotStore) -> None:
    assert await store.read_version() is None
    assert await store.read_snapshot() is None
    assert await store.read_snapshot_bytes() is None
    assert await store.read_extension("101@internal") is None


async def test_publish_and_read_back(store: SnapshotStore) -> None:
    exts = {k: ext_json(k) for k in ("101@internal", "102@internal", "*8#@sales-1")}
    pub = make_pub(1, exts)
    await store.publish(pub)

    assert await store.read_version() == 1
    assert await store.read_snapshot_bytes() == pub.snapshot
    assert (await store.read_snapshot())["version"] == 1
    for key, value in exts.items():
        assert await store.read_extension_bytes(key) == value
        assert await store.read_extension(key) == json.loads(value)
    assert await store.read_extension("999@internal") is None


async def test_changed_and_removed(store: SnapshotStore) -> None:
    exts = {"101@internal": ext_json("101@internal"), "102@internal": ext_json("102@internal")}
    await store.publish(make_pub(1, exts))
    exts = {"101@internal": ext_json("101@internal", "ringing")}
    await store.publish(make_pub(2, exts, removed=["102@internal"]))

    assert await store.read_version() == 2
    assert (await store.read_extension("101@internal"))["state"] == "ringing"
    assert await store.read_extension("102@internal") is None
    assert list((await store.read_snapshot())["extensions"]) == ["101@internal"]


async def test_reader_never_sees_a_version_newer_than_the_snapshot(store: SnapshotStore) -> None:
    exts = {f"{n}@internal": ext_json(f"{n}@internal") for n in range(100, 120)}
    done = asyncio.Event()

    async def publisher() -> None:
        for version in range(1, 101):
            await store.publish(make_pub(version, exts, changed=[f"{100 + version % 20}@internal"]))
            await asyncio.sleep(0)
        done.set()

    async def reader() -> int:
        reads = 0
        while not done.is_set():
            version = await store.read_version()
            snapshot = await store.read_snapshot()
            if version is not None:
                assert snapshot is not None and snapshot["version"] >= version
                reads += 1
            await asyncio.sleep(0)
        return reads

    _, *reads = await asyncio.gather(publisher(), reader(), reader())
    assert sum(reads) > 0
    assert await store.read_version() == 100


@pytest.mark.parametrize(
    "bad",
    ["", "101", "101@", "@internal", "101 @internal", "101@inter nal", "1\r\n@x", "ü@internal",
     "x" * 65 + "@internal", "101@" + "c" * 81, "101@internal@x", "101@int/ernal"],
)  # fmt: skip
async def test_invalid_extension_keys_are_rejected(store: SnapshotStore, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid extension key"):
        await store.read_extension(bad)
    good = {"101@internal": ext_json("101@internal")}
    with pytest.raises(ValueError):
        await store.publish(replace(make_pub(1, good), changed={**good, bad: b"{}"}))
    with pytest.raises(ValueError):
        await store.publish(replace(make_pub(1, good), removed=[bad]))
    # Nothing of a rejected batch was written, not even its valid keys.
    assert await store.read_version() is None
    assert await store.read_extension("101@internal") is None


async def test_values_must_be_json_objects(store: SnapshotStore) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        await store.publish(Publication(1, b"[1]", {}, []))
    with pytest.raises(ValueError, match="JSON object"):
        await store.publish(Publication(1, b"{}", {"101@internal": b"x\x78"}, []))
    with pytest.raises(ValueError, match="version"):
        await store.publish(Publication(-1, b"{}", {}, []))


async def test_wait_for_version_returns_at_once_when_already_different(
    store: SnapshotStore,
) -> None:
    await store.publish(make_pub(3, {}))
    assert await asyncio.wait_for(store.wait_for_version(None, 0.01), 2) == 3
    assert await asyncio.wait_for(store.wait_for_version(2, 0.01), 2) == 3


# --- keys, prefix, URL --------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["bad prefix", "x" * 33, "a\r\n", "blf/", "ü:"])
def test_invalid_prefix_is_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        MemoryStore(prefix=prefix)
    with pytest.raises(ValueError, match="prefix"):
        MemcachedStore("127.0.0.1", 11211, prefix=prefix)


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


def test_open_store() -> None:
    assert isinstance(open_store("", "blf:", 1.0), MemoryStore)
    assert isinstance(open_store("memcached://127.0.0.1:11311", "blf:", 1.0), MemcachedStore)
    assert isinstance(open_store("memcached://[::1]:11311/", "x:", 0.2), MemcachedStore)
    for bad in (
        "http://127.0.0.1:11211",
        "memcached://",
        "memcached://:11211",
        "memcached://h:99999",
        "memcached://h:0",
        "memcached://h:port",
        "memcached://h:1/db",
        "memcached://h:1?x=1",
        "memcached://user@h:1",
    ):
        with pytest.raises(ValueError):
            open_store(bad, "blf:", 1.0)


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
            store.acquire_lease("me", 5),
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
            store.acquire_lease("collector-a", 5),
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


# --- lease ---------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "memcached"])
async def lease_stores(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[SnapshotStore, SnapshotStore]]:
    """Two handles on one lease: two memcached clients, or one in-process store."""
    if request.param == "memory":
        memory = MemoryStore()
        yield memory, memory
        return
    server = request.getfixturevalue("memcached")
    one, two = memcached_store(server), memcached_store(server)
    yield one, two
    await one.close()
    await two.close()


async def test_lease_one_owner_wins_and_renews(
    lease_stores: tuple[SnapshotStore, SnapshotStore],
) -> None:
    one, two = lease_stores
    assert await one.acquire_lease("collector-a", 30)
    assert not await two.acquire_lease("collector-b", 30)
    assert await one.acquire_lease("collector-a", 30)  # renew
    assert not await two.acquire_lease("collector-b", 30)

    await two.release_lease("collector-b")  # not the holder: no effect
    assert not await two.acquire_lease("collector-b", 30)

    await one.release_lease("collector-a")
    assert await two.acquire_lease("collector-b", 30)
    assert not await one.acquire_lease("collector-a", 30)


async def test_lease_holder(lease_stores: tuple[SnapshotStore, SnapshotStore]) -> None:
    first, second = lease_stores
    assert await second.lease_holder() is None
    assert await first.acquire_lease("host-a:1", ttl=5)
    assert await second.lease_holder() == "host-a:1"
    await first.release_lease("host-a:1")
    assert await second.lease_holder() is None


async def test_lease_expires(lease_stores: tuple[SnapshotStore, SnapshotStore]) -> None:
    one, two = lease_stores
    assert await one.acquire_lease("collector-a", 1)
    assert not await two.acquire_lease("collector-b", 30)
    deadline = time.monotonic() + 5
    # memcached counts whole seconds: the lease ends between 1 and 2 s from now.
    while not await two.acquire_lease("collector-b", 30):
        assert time.monotonic() < deadline, "lease did not expire"
        await asyncio.sleep(0.05)
    # The old holder cannot renew what is now someone else's lease.
    assert not await one.acquire_lease("collector-a", 30)


@pytest.mark.parametrize("owner, ttl", [("", 5), ("a b", 5), ("ü", 5), ("a", 0), ("a", -1)])
async def test_lease_arguments_are_checked(store: SnapshotStore, owner: str, ttl: int) -> None:
    with pytest.raises(ValueError):
        await store.acquire_lease(owner, ttl)


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

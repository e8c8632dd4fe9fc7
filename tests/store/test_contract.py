"""The store contract, kept by both backends (fixture `store`: memory, then memcached);
key prefix and URL checks shared with app.settings; no aiomcache behind `app.store`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from app.settings import SettingsError, load_settings
from app.store import MemoryStore, Publication, SnapshotStore, open_store
from app.store.memcached import MemcachedStore
from tests.store.common import ext_json, make_pub

ROOT = Path(__file__).resolve().parent.parent.parent


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

BAD_PREFIXES = ["bad prefix", "x" * 33, "a\r\n", "blf/", "ü:"]


# The union of what settings and the store each refused before they shared one check.
BAD_URLS = [
    "127.0.0.1:11211",
    "nonsense",
    "http://127.0.0.1:11211",
    "redis://host:6379",
    "memcached://",
    "memcached://host",
    "memcached://:11211",
    "memcached://h:99999",
    "memcached://h:0",
    "memcached://h:port",
    "memcached://h:1/db",
    "memcached://h:1?x=1",
    "memcached://h:1#x",
    "memcached://user@h:1",
    "memcached://@h:1",
    "memcached://:secret@h:1",
]


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_invalid_prefix_is_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        MemoryStore(prefix=prefix)
    with pytest.raises(ValueError, match="prefix"):
        MemcachedStore("127.0.0.1", 11211, prefix=prefix)


def test_open_store() -> None:
    assert isinstance(open_store("", "blf:", 1.0), MemoryStore)
    assert isinstance(open_store("memcached://127.0.0.1:11311", "blf:", 1.0), MemcachedStore)
    assert isinstance(open_store("memcached://[::1]:11311/", "x:", 0.2), MemcachedStore)
    for bad in BAD_URLS:
        with pytest.raises(ValueError):
            open_store(bad, "blf:", 1.0)


@pytest.mark.parametrize("url", BAD_URLS)
def test_settings_and_store_reject_the_same_urls(url: str) -> None:
    with pytest.raises(ValueError) as by_store:
        open_store(url, "blf:", 1.0)
    with pytest.raises(SettingsError) as by_settings:
        load_settings(environ={"MEMCACHED_URL": url}, env_file=None)
    assert repr(url) in str(by_store.value)
    assert str(by_settings.value) == f"MEMCACHED_URL: {by_store.value}"


# Settings strip the value first: "a\r\n" reaches the check as "a".
@pytest.mark.parametrize("prefix", [p for p in BAD_PREFIXES if p == p.strip()])
def test_settings_and_store_reject_the_same_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError) as by_store:
        MemoryStore(prefix=prefix)
    with pytest.raises(SettingsError) as by_settings:
        load_settings(environ={"STORE_PREFIX": prefix}, env_file=None)
    assert repr(prefix) in str(by_store.value)
    assert str(by_settings.value) == f"STORE_PREFIX: {by_store.value}"


def test_good_urls_and_prefixes_pass_both() -> None:
    for url, prefix in (("memcached://127.0.0.1:11311", "blf:"), ("memcached://[::1]:11311/", "")):
        settings = load_settings(environ={"MEMCACHED_URL": url, "STORE_PREFIX": prefix}, env_file=None)
        assert (settings.memcached_url, settings.store_prefix) == (url, prefix)
        assert isinstance(open_store(url, prefix, 1.0), MemcachedStore)


def test_importing_the_store_does_not_import_aiomcache() -> None:
    """app.snapshot (pure) and the settings import the contract; only memcached needs aiomcache."""
    code = (
        "import sys\n"
        "import app.store, app.store.contract, app.store.memory, app.store.lease\n"
        "import app.snapshot, app.settings\n"
        "assert 'aiomcache' not in sys.modules, sorted(m for m in sys.modules if 'aiomcache' in m)\n"
        "app.store.open_store('', 'blf:', 1.0)\n"
        "assert 'aiomcache' not in sys.modules\n"
        "app.store.open_store('memcached://127.0.0.1:11211', 'blf:', 1.0)\n"
        "assert 'aiomcache' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

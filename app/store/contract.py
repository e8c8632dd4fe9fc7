"""The store contract: key names, the bytes of a value, the errors, and `SnapshotStore`.

Do not break: a value's first byte tells its format (`{` plain JSON, `0x78` zlib), and
readers everywhere rely on it. Pure: importing this must not import aiomcache.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.i18n import _
from app.states import is_valid_key

if TYPE_CHECKING:
    from app.store.lease import Lease

DEFAULT_PREFIX = "blf:"
DEFAULT_COMPRESS_OVER = 256 * 1024
# memcached's default item limit is 1 MiB (-I 1m) including the item header and the key.
MAX_VALUE_BYTES = 1024 * 1024 - 1024
# A corrupt or hostile compressed value must not inflate without bound.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_KEY_BYTES = 250
MAX_COUNT_WINDOW = 24 * 3600  # a counter lives two windows at most (memcached's exptime)

_PREFIX_RE = re.compile(r"[A-Za-z0-9_:.\-]{0,32}")
_ZLIB_FIRST_BYTE = b"\x78"
_JSON_FIRST_BYTE = b"{"


class StoreError(Exception):
    """The store was given, or holds, something it cannot handle (too large, not our format)."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached or did not answer in time; the message says which."""


class StoreLost(StoreError):
    """The store no longer holds what we published before (memcached restarted or evicted
    our keys): an incremental publication cannot stand on it; publish everything again."""


@dataclass(frozen=True)
class Publication:
    """One batch for `publish`: everything that changed since the previous version."""

    version: int
    snapshot: bytes  # JSON of the whole snapshot, uncompressed
    changed: Mapping[str, bytes]  # "<exten>@<context>" -> that extension's JSON
    removed: Sequence[str]  # "<exten>@<context>" keys to delete
    full: bool = True  # True: `changed` holds every extension; False: builds on the stored ones
    changes: bytes = b""  # JSON of what changed lately (app.snapshot); empty: none written


# --- the two settings a store is opened with (also checked by app.settings) -----------------
# Their errors are read as a setting's: in the CLI's language (app.i18n).


def check_prefix(prefix: str) -> str:
    """The key prefix, if it is one: it goes into every memcached key."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            _("key prefix %(prefix)r may hold only letters, digits and _:.- (at most 32)")
            % {"prefix": prefix}
        )
    return prefix


def parse_memcached_url(url: str) -> tuple[str, int]:
    """(host, port) of a "memcached://HOST:PORT" URL; ValueError naming the URL otherwise."""
    bad = ValueError(_("%(url)r is not of the form memcached://HOST:PORT") % {"url": url[:100]})
    parts = urlsplit(url)
    if (
        parts.scheme != "memcached"
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise bad
    try:
        port = parts.port
    except ValueError:
        raise bad from None
    if not port:  # missing, or 0
        raise bad
    return parts.hostname, port


# --- keys and values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    """The key names of one store; extension keys only from validated strings."""

    prefix: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    @property
    def version(self) -> str:
        return f"{self.prefix}version"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}snapshot"

    @property
    def changes(self) -> str:
        return f"{self.prefix}changes"

    @property
    def lease(self) -> str:
        return f"{self.prefix}lease"

    def count(self, name: str, window_start: int) -> str:
        """A counter of `name` (any text: hashed, never put in a key as it is) in one window."""
        digest = hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:32]
        return f"{self.prefix}count:{digest}:{window_start}"

    def ext(self, key: str) -> str:
        if not isinstance(key, str) or not is_valid_key(key):
            raise ValueError(f"invalid extension key {str(key)[:160]!r}")
        full = f"{self.prefix}ext:{key}"
        assert len(full) <= MAX_KEY_BYTES  # guaranteed by the two regexes
        return full


@dataclass(frozen=True)
class _Plan:
    """A publication checked and encoded before anything is written."""

    ext_sets: list[tuple[str, bytes]]
    ext_deletes: list[str]
    snapshot: bytes
    changes: bytes | None
    version: bytes


def _check_json(what: str, data: bytes) -> bytes:
    # Readers tell plain from compressed values by the first byte, so it must be `{`.
    if not isinstance(data, bytes) or not data.startswith(_JSON_FIRST_BYTE):
        raise ValueError(f"{what}: expected JSON object bytes starting with '{{'")
    return data


def encode_value(key: str, data: bytes, compress_over: int) -> bytes:
    """The stored form of JSON `data`: zlib-compressed when over `compress_over` bytes."""
    if len(data) > compress_over:
        data = zlib.compress(data, 1)
    if len(data) > MAX_VALUE_BYTES:
        raise StoreError(
            f"{key} is {len(data)} bytes even compressed; memcached's item limit "
            f"is about 1 MB ({MAX_VALUE_BYTES} bytes allowed)"
        )
    return data


def decode_value(raw: bytes) -> bytes:
    """The JSON bytes of a stored value, plain or zlib-compressed."""
    if raw.startswith(_JSON_FIRST_BYTE):
        return raw
    if not raw.startswith(_ZLIB_FIRST_BYTE):
        raise StoreError(f"stored value is neither JSON nor zlib (first byte {raw[:1]!r})")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw, MAX_JSON_BYTES)
    except zlib.error as exc:
        raise StoreError(f"stored value is corrupt zlib data: {exc}") from exc
    if inflater.unconsumed_tail:
        raise StoreError(f"stored value inflates to more than {MAX_JSON_BYTES} bytes")
    return data


def _load_json(raw: bytes | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"{what}: stored value is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StoreError(f"{what}: stored value is not a JSON object")
    return value


def parse_version(raw: bytes | None) -> int | None:
    """The version key's value as an int; None when the key is missing."""
    if raw is None:
        return None
    if not raw.isdigit():
        raise StoreError(f"version key holds {raw[:40]!r}, not an integer")
    return int(raw)


# --- the store ---------------------------------------------------------------------------------


class SnapshotStore(ABC):
    """The published state: a version counter, the whole snapshot, one key per extension;
    and `lease`, the collector lease (see app.store.lease)."""

    lease: Lease

    def __init__(self, prefix: str) -> None:
        self._keys = _Keys(prefix)

    @abstractmethod
    async def publish(self, pub: Publication) -> None:
        """Write extension keys, then the snapshot and changes, then the version (readers rely on it)."""

    @abstractmethod
    async def read_version(self) -> int | None:
        """The newest published version; None when the key is missing (memcached restarted)."""

    @abstractmethod
    async def _get(self, key: str) -> bytes | None:
        """A key's value as stored (maybe compressed); None when missing."""

    async def read_snapshot_bytes(self) -> bytes | None:
        """The snapshot JSON, decompressed; None when missing (restart, eviction)."""
        return await self._read(self._keys.snapshot)

    async def read_changes_bytes(self) -> bytes | None:
        """The changes JSON, decompressed; None when missing."""
        return await self._read(self._keys.changes)

    async def read_extension_bytes(self, key: str) -> bytes | None:
        """One extension's JSON ("<exten>@<context>"); None when unknown."""
        return await self._read(self._keys.ext(key))

    async def _read(self, key: str) -> bytes | None:
        raw = await self._get(key)
        return None if raw is None else decode_value(raw)

    @abstractmethod
    async def wait_for_version(self, known: int | None, poll_interval: float) -> int | None:
        """Return the version as soon as it differs from `known`."""

    @abstractmethod
    async def close(self) -> None: ...

    async def count(self, name: str, window: int, now: float | None = None) -> tuple[int, int]:
        """One more of `name` in the current window of `window` seconds, counted for every
        process that shares this store (the actions' rate per user: N web workers must not
        allow N times the rate). Returns (the count in this window, this one included; the
        seconds left in the window). Windows are fixed, aligned on the epoch: a burst at a
        window's end and the next one's start may reach twice the count, never more."""
        if isinstance(window, bool) or not isinstance(window, int) or not 0 < window <= MAX_COUNT_WINDOW:
            raise ValueError(f"count window must be 1..{MAX_COUNT_WINDOW} seconds, got {window!r}")
        now = time.time() if now is None else now
        start = int(now) // window * window
        return await self._increment(self._keys.count(name, start), window), start + window - int(now)

    @abstractmethod
    async def _increment(self, key: str, window: int) -> int:
        """Add 1 to the counter `key` (0 when missing, kept for at least `window` s); its value."""

    async def read_snapshot(self) -> dict[str, Any] | None:
        return _load_json(await self.read_snapshot_bytes(), "snapshot")

    async def read_changes(self) -> dict[str, Any] | None:
        """The extensions changed lately (see `app.snapshot.RECENT`), far smaller than the snapshot."""
        return _load_json(await self.read_changes_bytes(), "changes")

    async def read_extension(self, key: str) -> dict[str, Any] | None:
        return _load_json(await self.read_extension_bytes(key), key)

    def _plan(self, pub: Publication, encode: Callable[[str, bytes], bytes]) -> _Plan:
        """Validate every key and value first, so a bad one never leaves half a batch."""
        if isinstance(pub.version, bool) or not isinstance(pub.version, int) or pub.version < 0:
            raise ValueError(f"version must be a non-negative int, got {pub.version!r}")
        both = set(pub.changed).intersection(pub.removed)
        if both:
            raise ValueError(f"keys both changed and removed: {sorted(both)[:5]}")
        ext_sets = [
            (full, encode(full, _check_json(full, value)))
            for full, value in ((self._keys.ext(k), v) for k, v in pub.changed.items())
        ]
        ext_deletes = [self._keys.ext(key) for key in pub.removed]
        snapshot = encode(self._keys.snapshot, _check_json("snapshot", pub.snapshot))
        changes = encode(self._keys.changes, _check_json("changes", pub.changes)) if pub.changes else None
        return _Plan(ext_sets, ext_deletes, snapshot, changes, str(pub.version).encode("ascii"))

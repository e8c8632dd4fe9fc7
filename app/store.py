"""Where the published panel state lives: in this process (MemoryStore) or in memcached.

The one thing not to break: `publish` writes the extension keys, then the snapshot, then
the version key, so that a reader that sees version N always finds a snapshot at least as new.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sys
import time
import zlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import aiomcache
from aiomcache.exceptions import ClientException, ValidationException
from aiomcache.pool import Connection, MemcachePool

from app.states import is_valid_key

DEFAULT_PREFIX = "blf:"
DEFAULT_COMPRESS_OVER = 256 * 1024
# memcached's default item limit is 1 MiB (-I 1m) including the item header and the key.
MAX_VALUE_BYTES = 1024 * 1024 - 1024
# A corrupt or hostile compressed value must not inflate without bound.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_KEY_BYTES = 250
# memcached reads an exptime above 30 days as a Unix timestamp.
MAX_LEASE_TTL = 30 * 24 * 3600

_PREFIX_RE = re.compile(r"[A-Za-z0-9_:.\-]{0,32}")
_OWNER_RE = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces: it is a memcached value
_ZLIB_FIRST_BYTE = b"\x78"
_JSON_FIRST_BYTE = b"{"
# While we swap the lease for a tombstone and delete it, nobody else can `add` the lease.
_LEASE_TOMBSTONE = b""
_LEASE_TOMBSTONE_TTL = 10

_T = TypeVar("_T")
_P = ParamSpec("_P")


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


@dataclass(frozen=True)
class _Keys:
    """The key names of one store; extension keys only from validated strings."""

    prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(f"invalid key prefix {self.prefix!r}: expected [A-Za-z0-9_:.-]{{0,32}}")

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


def _parse_version(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise StoreError(f"version key holds {raw[:40]!r}, not an integer")
    return int(raw)


def _check_lease_args(owner: str, ttl: int) -> None:
    if not isinstance(owner, str) or not _OWNER_RE.fullmatch(owner):
        raise ValueError(f"invalid lease owner {str(owner)[:80]!r}: printable ASCII, no spaces")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_LEASE_TTL:
        raise ValueError(f"lease ttl must be 1..{MAX_LEASE_TTL} seconds, got {ttl!r}")


class SnapshotStore(ABC):
    """The published state: a version counter, the whole snapshot, one key per extension."""

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
    async def acquire_lease(self, owner: str, ttl: int) -> bool:
        """True if `owner` holds the collector lease now (taken or renewed for `ttl` s)."""

    @abstractmethod
    async def release_lease(self, owner: str) -> None:
        """Give the lease up, but only if `owner` holds it."""

    @abstractmethod
    async def lease_holder(self) -> str | None:
        """Who holds the collector lease now; None when nobody does."""

    @abstractmethod
    async def wait_for_version(self, known: int | None, poll_interval: float) -> int | None:
        """Return the version as soon as it differs from `known`."""

    @abstractmethod
    async def close(self) -> None: ...

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


class MemoryStore(SnapshotStore):
    """The embedded store for a single process: same keys and bytes as memcached, no I/O."""

    def __init__(self, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(prefix)
        self._data: dict[str, bytes] = {}
        # A Condition, not a shared future: cancelling one waiter cannot wake or break the others.
        self._published = asyncio.Condition()
        self._lease: tuple[str, float] | None = None  # (owner, monotonic deadline)

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

    async def acquire_lease(self, owner: str, ttl: int) -> bool:
        _check_lease_args(owner, ttl)
        now = time.monotonic()
        if self._lease is None or self._lease[0] == owner or self._lease[1] <= now:
            self._lease = (owner, now + ttl)
            return True
        return False

    async def release_lease(self, owner: str) -> None:
        _check_lease_args(owner, 1)
        if self._lease is not None and self._lease[0] == owner:
            self._lease = None

    async def lease_holder(self) -> str | None:
        if self._lease is None or self._lease[1] <= time.monotonic():
            return None
        return self._lease[0]

    async def wait_for_version(self, known: int | None, poll_interval: float) -> int | None:
        """Wakes on `publish`; `poll_interval` is not needed in memory."""
        async with self._published:
            await self._published.wait_for(lambda: self._version() != known)
            return self._version()

    async def close(self) -> None:
        pass

    def _version(self) -> int | None:
        return _parse_version(self._data.get(self._keys.version))


def _call_interrupted() -> bool:
    """True while a cancellation (or KeyboardInterrupt) unwinds through the current call."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return True
    exc = sys.exc_info()[1]
    # aiomcache marks the connection itself for ordinary exceptions; not for these.
    return exc is not None and not isinstance(exc, Exception)


def _healthy(conn: Connection) -> bool:
    reader = conn.reader
    return not reader.at_eof() and reader.exception() is None and not conn.writer.is_closing()


class _DiscardingPool(MemcachePool):
    """aiomcache's pool, except that a connection whose call was interrupted is closed.

    aiomcache puts the connection of a cancelled call (our timeout, a client that went
    away) back into the pool with the reply unread: the next call on it reads that stale
    reply and returns the wrong value. A semaphore caps the connections, so closing one
    never leaves another caller waiting for a connection that will not come back.
    """

    def __init__(self, host: str, port: int, size: int) -> None:
        super().__init__(host, port, minsize=0, maxsize=size)
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[Connection] = deque()
        self._closed = False

    async def acquire(self) -> Connection:
        await self._slots.acquire()
        try:
            conn = self._take_idle() or await self._connect()
        except BaseException:
            self._slots.release()
            raise
        self._in_use.add(conn)
        return conn

    def release(self, conn: Connection) -> None:
        self._in_use.discard(conn)
        try:
            if self._closed or _call_interrupted() or not _healthy(conn):
                self._do_close(conn)
            else:
                self._idle.append(conn)
        finally:
            self._slots.release()

    def discard_idle(self) -> None:
        """Close idle connections: after one died (memcached restarted) the others did too."""
        while self._idle:
            self._do_close(self._idle.pop())

    async def clear(self) -> None:
        self._closed = True
        self.discard_idle()

    def size(self) -> int:
        return len(self._idle) + len(self._in_use)

    def _take_idle(self) -> Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if _healthy(conn):
                return conn
            self._do_close(conn)
        return None

    async def _connect(self) -> Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port, **self.conn_args)
        return Connection(reader, writer)


class _SafeClient(aiomcache.Client):
    """aiomcache.Client with the pool above, and an error instead of a hang at EOF.

    aiomcache repeats readline() until it sees CRLF; at EOF readline returns b"" without
    yielding, so a server closing the connection mid-command froze the whole event loop
    (no timeout can fire then). Here EOF raises ConnectionResetError.
    """

    def __init__(self, host: str, port: int, pool_size: int) -> None:
        super().__init__(host, port, pool_size=pool_size)
        self._pool: _DiscardingPool = _DiscardingPool(host, port, pool_size)

    def discard_idle(self) -> None:
        self._pool.discard_idle()

    async def _execute_simple_command(self, conn: Connection, raw_command: bytes) -> bytes:
        conn.writer.write(raw_command)
        await conn.writer.drain()
        line = await conn.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionResetError("memcached closed the connection mid-reply")
        return line[:-2]

    async def _multi_get(self, conn: Connection, *keys: bytes, with_cas: bool = True) -> Any:  # type: ignore[override]
        try:
            return await super()._multi_get(conn, *keys, with_cas=with_cas)
        except ClientException as exc:
            if conn.reader.at_eof():
                raise ConnectionResetError("memcached closed the connection mid-reply") from exc
            raise


# A pooled connection that died while idle (memcached restarted) fails like this; a fresh
# connection to a server that is really down fails with ConnectionRefusedError or a timeout.
_STALE_CONNECTION_ERRORS = (
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    asyncio.IncompleteReadError,
)


class MemcachedStore(SnapshotStore):
    """The published state in memcached, shared by every web worker and the collector.

    Call `wait_for_version` from one watcher task, not once per viewer: each poll is a
    memcached round trip.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 1.0,
        pool_size: int = 4,
        compress_over: int = DEFAULT_COMPRESS_OVER,
    ) -> None:
        super().__init__(prefix)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size!r}")
        self._address = f"{host}:{port}"
        self._timeout = timeout
        self._pool_size = pool_size
        self._compress_over = compress_over
        self._client = _SafeClient(host, port, pool_size)

    async def publish(self, pub: Publication) -> None:
        plan = self._plan(pub, self._encode)
        ops = [functools.partial(self._set, key, value) for key, value in plan.ext_sets]
        ops += [functools.partial(self._delete, key) for key in plan.ext_deletes]
        await self._run_concurrently(ops)
        await self._set(self._keys.snapshot, plan.snapshot)
        if plan.changes is not None:  # before the version: who sees a version finds its changes
            await self._set(self._keys.changes, plan.changes)
        if pub.full:
            await self._set(self._keys.version, plan.version)
            return
        # `replace` fails when the version key is gone: memcached restarted since our last
        # publication and lost the ext keys this batch did not carry.
        key = self._keys.version.encode("ascii")
        if not await self._call(f"replace {self._keys.version}", self._client.replace, key, plan.version):
            raise StoreLost(f"memcached at {self._address} lost {self._keys.version} (restarted?)")

    async def read_version(self) -> int | None:
        return _parse_version(await self._get(self._keys.version))

    async def acquire_lease(self, owner: str, ttl: int) -> bool:
        _check_lease_args(owner, ttl)
        key, mine = self._keys.lease.encode("ascii"), owner.encode("ascii")
        if await self._call("add lease", self._client.add, key, mine, exptime=ttl):
            return True
        holder, cas_token = await self._call("gets lease", self._client.gets, key)
        if holder != mine or not cas_token:
            return False
        # cas, not touch: if our lease expired and another owner took it since `gets`,
        # renewing must fail rather than extend their lease while we think it is ours.
        return await self._call("renew lease", self._client.cas, key, mine, cas_token, exptime=ttl)

    async def release_lease(self, owner: str) -> None:
        _check_lease_args(owner, 1)
        key, mine = self._keys.lease.encode("ascii"), owner.encode("ascii")
        holder, cas_token = await self._call("gets lease", self._client.gets, key)
        if holder != mine or not cas_token:
            return
        # memcached has no compare-and-delete: cas in a tombstone (only if still ours),
        # then delete it; while the tombstone exists nobody else can `add` the lease.
        cas = self._client.cas
        ttl = _LEASE_TOMBSTONE_TTL
        if await self._call("release lease", cas, key, _LEASE_TOMBSTONE, cas_token, exptime=ttl):
            await self._call("delete lease", self._client.delete, key)

    async def lease_holder(self) -> str | None:
        raw = await self._get(self._keys.lease)
        if raw is None or raw == _LEASE_TOMBSTONE:
            return None
        return raw.decode("ascii", "replace")

    async def wait_for_version(self, known: int | None, poll_interval: float) -> int | None:
        """Polls every `poll_interval` s; raises StoreUnavailable while memcached is down."""
        while True:
            version = await self.read_version()
            if version != known:
                return version
            await asyncio.sleep(poll_interval)

    async def close(self) -> None:
        await self._client.close()

    def _encode(self, key: str, data: bytes) -> bytes:
        if len(data) > self._compress_over:
            data = zlib.compress(data, 1)
        if len(data) > MAX_VALUE_BYTES:
            raise StoreError(
                f"{key} is {len(data)} bytes even compressed; memcached's item limit "
                f"is about 1 MB ({MAX_VALUE_BYTES} bytes allowed)"
            )
        return data

    async def _get(self, key: str) -> bytes | None:
        return await self._call(f"get {key}", self._client.get, key.encode("ascii"))

    async def _set(self, key: str, value: bytes) -> None:
        if not await self._call(f"set {key}", self._client.set, key.encode("ascii"), value):
            raise StoreError(f"memcached at {self._address} did not store {key}")

    async def _delete(self, key: str) -> None:
        await self._call(f"delete {key}", self._client.delete, key.encode("ascii"))

    async def _run_concurrently(self, ops: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """Run `ops` with at most pool_size in flight: a full sync is thousands of keys."""
        pending = iter(ops)

        async def worker() -> None:
            for op in pending:
                await op()

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._pool_size, len(ops))):
                    group.create_task(worker())
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None

    async def _call(
        self, what: str, fn: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """One aiomcache call under our timeout (aiomcache has none), errors translated."""
        where = f"memcached at {self._address}: {what}"
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    return await fn(*args, **kwargs)
                except _STALE_CONNECTION_ERRORS:
                    self._client.discard_idle()
                    return await fn(*args, **kwargs)  # once, on a fresh connection
        except TimeoutError:
            raise StoreUnavailable(f"{where} timed out after {self._timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise StoreUnavailable(f"{where} failed: {exc!r}") from exc
        except ValidationException as exc:
            raise ValueError(f"{where}: {exc}") from exc
        except ClientException as exc:
            if isinstance(exc.__cause__, OSError | EOFError):
                raise StoreUnavailable(f"{where} failed: {exc}") from exc
            raise StoreError(f"{where}: unexpected answer: {exc}") from exc


def open_store(memcached_url: str, prefix: str, timeout: float) -> SnapshotStore:
    """An empty URL gives the in-process MemoryStore; "memcached://host:port" a MemcachedStore."""
    if not memcached_url:
        return MemoryStore(prefix=prefix)
    bad = ValueError(f"bad memcached URL {memcached_url!r}: expected memcached://host:port")
    parts = urlsplit(memcached_url)
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
    if port == 0:
        raise bad
    return MemcachedStore(parts.hostname, port or 11211, prefix=prefix, timeout=timeout)

"""MemcachedStore: the published state in memcached, shared by every worker and host.

Do not break the publish order: ext keys, snapshot, changes, then the version key (with
`replace` for an incremental batch), so a reader that sees version N finds all of N.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, TypeVar

from aiomcache.exceptions import ClientException, ValidationException

from app.store.aiomcache_repairs import SafeClient
from app.store.contract import (
    DEFAULT_COMPRESS_OVER,
    DEFAULT_PREFIX,
    Publication,
    SnapshotStore,
    StoreError,
    StoreLost,
    StoreUnavailable,
    encode_value,
    parse_version,
)
from app.store.lease import MemcachedLease

_T = TypeVar("_T")
_P = ParamSpec("_P")

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
        self._client = SafeClient(host, port, pool_size)
        self.lease = MemcachedLease(self._keys.lease, self._client, self._call)

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
        return parse_version(await self._get(self._keys.version))

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
        return encode_value(key, data, self._compress_over)

    async def _get(self, key: str) -> bytes | None:
        return await self._call(f"get {key}", self._client.get, key.encode("ascii"))

    async def _set(self, key: str, value: bytes) -> None:
        if not await self._call(f"set {key}", self._client.set, key.encode("ascii"), value):
            raise StoreError(f"memcached at {self._address} did not store {key}")

    async def _increment(self, key: str, window: int) -> int:
        """`add` 0 (kept two windows), then `incr`: atomic in memcached for every process."""
        name = key.encode("ascii")
        await self._call(f"add {key}", self._client.add, name, b"0", exptime=2 * window)
        value = await self._call(f"incr {key}", self._client.incr, name, 1)
        return 1 if value is None else int(value)  # evicted between the two: count this one

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

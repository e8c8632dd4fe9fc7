"""The collector lease: at most one owner at a time, until it expires unless renewed.

Do not break: only the holder may renew or release it (memcached: `cas`, never `touch` or a
plain `delete`), or two collectors can both believe they hold the AMI connection.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiomcache

# memcached reads an exptime above 30 days as a Unix timestamp.
MAX_LEASE_TTL = 30 * 24 * 3600

_OWNER_RE = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces: it is a memcached value
# While we swap the lease for a tombstone and delete it, nobody else can `add` the lease.
_LEASE_TOMBSTONE = b""
_LEASE_TOMBSTONE_TTL = 10


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not _OWNER_RE.fullmatch(owner):
        raise ValueError(f"invalid lease owner {str(owner)[:80]!r}: printable ASCII, no spaces")


class Lease(ABC):
    """One store's collector lease (`store.lease`); owners are ids like "host:pid:random"."""

    async def acquire(self, owner: str, ttl: int) -> bool:
        """True if `owner` holds the lease now (taken, or renewed, for `ttl` s)."""
        _check_owner(owner)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_LEASE_TTL:
            raise ValueError(f"lease ttl must be 1..{MAX_LEASE_TTL} seconds, got {ttl!r}")
        return await self._acquire(owner, ttl)

    async def release(self, owner: str) -> None:
        """Give the lease up, but only if `owner` holds it."""
        _check_owner(owner)
        await self._release(owner)

    @abstractmethod
    async def holder(self) -> str | None:
        """Who holds the lease now; None when nobody does."""

    @abstractmethod
    async def _acquire(self, owner: str, ttl: int) -> bool: ...

    @abstractmethod
    async def _release(self, owner: str) -> None: ...


class MemoryLease(Lease):
    """The lease of a MemoryStore: in this process only."""

    def __init__(self) -> None:
        self._lease: tuple[str, float] | None = None  # (owner, monotonic deadline)

    async def _acquire(self, owner: str, ttl: int) -> bool:
        now = time.monotonic()
        if self._lease is None or self._lease[0] == owner or self._lease[1] <= now:
            self._lease = (owner, now + ttl)
            return True
        return False

    async def _release(self, owner: str) -> None:
        if self._lease is not None and self._lease[0] == owner:
            self._lease = None

    async def holder(self) -> str | None:
        if self._lease is None or self._lease[1] <= time.monotonic():
            return None
        return self._lease[0]


# MemcachedStore._call: one aiomcache call under the store's timeout, errors translated.
Call = Callable[..., Awaitable[Any]]


class MemcachedLease(Lease):
    """The lease of a MemcachedStore: the key `{prefix}lease`, shared by every host."""

    def __init__(self, key: str, client: aiomcache.Client, call: Call) -> None:
        self._name = key
        self._key = key.encode("ascii")
        self._client = client
        self._call = call

    async def _acquire(self, owner: str, ttl: int) -> bool:
        key, mine = self._key, owner.encode("ascii")
        if await self._call("add lease", self._client.add, key, mine, exptime=ttl):
            return True
        holder, cas_token = await self._call("gets lease", self._client.gets, key)
        if holder != mine or not cas_token:
            return False
        # cas, not touch: if our lease expired and another owner took it since `gets`,
        # renewing must fail rather than extend their lease while we think it is ours.
        return await self._call("renew lease", self._client.cas, key, mine, cas_token, exptime=ttl)

    async def _release(self, owner: str) -> None:
        key, mine = self._key, owner.encode("ascii")
        holder, cas_token = await self._call("gets lease", self._client.gets, key)
        if holder != mine or not cas_token:
            return
        # memcached has no compare-and-delete: cas in a tombstone (only if still ours),
        # then delete it; while the tombstone exists nobody else can `add` the lease.
        cas = self._client.cas
        ttl = _LEASE_TOMBSTONE_TTL
        if await self._call("release lease", cas, key, _LEASE_TOMBSTONE, cas_token, exptime=ttl):
            await self._call("delete lease", self._client.delete, key)

    async def holder(self) -> str | None:
        raw = await self._call(f"get {self._name}", self._client.get, self._key)
        if raw is None or raw == _LEASE_TOMBSTONE:
            return None
        return raw.decode("ascii", "replace")

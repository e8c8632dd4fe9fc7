"""Where the published panel state lives: in this process or in memcached. Rooms: contract,
memory, memcached (+ aiomcache_repairs), lease. Do not break: importing this must not import
aiomcache; `open_store` loads `app.store.memcached` (MemcachedStore) only for a memcached URL.
"""

from __future__ import annotations

from app.store.contract import (
    DEFAULT_PREFIX,
    Publication,
    SnapshotStore,
    StoreError,
    StoreLost,
    StoreUnavailable,
    check_prefix,
    decode_value,
    parse_memcached_url,
)
from app.store.lease import Lease
from app.store.memory import MemoryStore

__all__ = [
    "DEFAULT_PREFIX",
    "Lease",
    "MemoryStore",
    "Publication",
    "SnapshotStore",
    "StoreError",
    "StoreLost",
    "StoreUnavailable",
    "check_prefix",
    "decode_value",
    "open_store",
    "parse_memcached_url",
]


def open_store(memcached_url: str, prefix: str, timeout: float) -> SnapshotStore:
    """An empty URL gives the in-process MemoryStore; "memcached://host:port" a MemcachedStore."""
    if not memcached_url:
        return MemoryStore(prefix=prefix)
    host, port = parse_memcached_url(memcached_url)
    from app.store.memcached import MemcachedStore  # only now: aiomcache is not needed in memory

    return MemcachedStore(host, port, prefix=prefix, timeout=timeout)

"""Helpers shared by the store tests: extension JSON, publications, a memcached store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from app.store import Publication
from app.store.memcached import MemcachedStore

if TYPE_CHECKING:
    from tests.conftest import Memcached

TIMEOUT = 0.5  # the store's per-call timeout in these tests


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

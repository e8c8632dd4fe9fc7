"""aiomcache's pool and client, repaired: the one place that uses aiomcache internals.

Checked against aiomcache 0.8.2 (`MemcachePool._in_use`, `_do_close`, `conn_args`, and
`Client._pool`, `_execute_simple_command`, `_multi_get`); recheck each repair on an upgrade.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any

import aiomcache
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection, MemcachePool


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


class DiscardingPool(MemcachePool):
    """aiomcache's pool, except that a connection whose call was interrupted is closed.

    aiomcache (0.8.2) puts the connection of a cancelled call (our timeout, a client that
    went away) back into the pool with the reply unread: the next call on it reads that
    stale reply and returns the wrong value. A semaphore caps the connections, so closing
    one never leaves another caller waiting for a connection that will not come back.
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


class SafeClient(aiomcache.Client):
    """aiomcache.Client with the pool above, and an error instead of a hang at EOF.

    aiomcache (0.8.2) repeats readline() until it sees CRLF; at EOF readline returns b""
    without yielding, so a server closing the connection mid-command froze the whole event
    loop (no timeout can fire then). Here EOF raises ConnectionResetError.
    """

    def __init__(self, host: str, port: int, pool_size: int) -> None:
        super().__init__(host, port, pool_size=pool_size)
        self._pool: DiscardingPool = DiscardingPool(host, port, pool_size)

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

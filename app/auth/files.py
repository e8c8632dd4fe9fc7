"""A small text file the admin edits while the panel runs (users, proxy scopes), re-read
when its mtime, size or inode changes. Do not break: a file that went bad gives *nothing*
(no one signs in), never the last good content, so every worker agrees with the disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_FILE_BYTES = 4 * 1024 * 1024  # 10,000 users of about 200 bytes a line take 2 MB


class WatchedFile(Generic[T]):
    """`parse(text, source) -> (value, problems)`; `current()` costs one stat when unchanged."""

    def __init__(self, path: str | Path, parse: Callable[[str, str], tuple[T, list[str]]], empty: T) -> None:
        self.path = Path(path)
        self._parse = parse
        self._empty = empty
        self._value = empty
        self._seen: object = None  # the stat signature read last, or the error logged last

    def current(self) -> T:
        try:
            stat = self.path.stat()
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if signature == self._seen:
                return self._value
            if not S_ISREG(stat.st_mode):  # a FIFO would block the read
                return self._fail("not a regular file")
            if stat.st_size > MAX_FILE_BYTES:
                return self._fail(f"{stat.st_size} bytes, over the limit of {MAX_FILE_BYTES}")
            text = self.path.read_bytes().decode("utf-8-sig")
        except OSError as error:
            return self._fail(error.strerror or str(error))
        except UnicodeDecodeError:
            return self._fail("not UTF-8")
        value, problems = self._parse(text, str(self.path))
        for problem in problems[:50]:
            log.warning("%s", problem)
        self._seen, self._value = signature, value
        return value

    def _fail(self, reason: str) -> T:
        if self._seen != reason:
            log.error("%s: %s; nobody is let in until it is fixed", self.path, reason)
        self._seen, self._value = reason, self._empty
        return self._value

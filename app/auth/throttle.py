"""Slows down password guessing: per user name and per client address, the first 5
failures are free, then each attempt must wait 1, 2, 4 ... seconds, at most 60, after the
last failure. Do not break: a refused attempt checks no password (it tells nothing).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5
MAX_DELAY = 60.0
FORGET_AFTER = 900.0  # 15 quiet minutes wipe a key's failures (a typist's bad morning)
MAX_KEYS = 100_000  # about 15 MB; beyond it the oldest keys go (an attacker gains 5 tries each)


@dataclass
class _Failures:
    count: int
    last: float


def delay_after(failures: int) -> float:
    """Seconds an attempt must wait after the last of `failures` failures."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY, 2.0 ** (failures - FREE_FAILURES))


class Throttle:
    """Failures by key ("user:anna", "addr:10.0.0.7"), in this process (each worker and
    host counts its own: with N workers an attacker gets at most N times the attempts)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, *keys: str) -> float:
        """Seconds until an attempt for these keys may be checked (0: now)."""
        now = self._clock()
        longest = 0.0
        for key in keys:
            entry = self._failures.get(key)
            if entry is None:
                continue
            if now - entry.last > FORGET_AFTER:
                del self._failures[key]
                continue
            longest = max(longest, entry.last + delay_after(entry.count) - now)
        return longest

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            entry = self._failures.pop(key, None) or _Failures(0, now)
            entry.count, entry.last = entry.count + 1, now
            self._failures[key] = entry  # to the end: the oldest are first to go
        while len(self._failures) > MAX_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

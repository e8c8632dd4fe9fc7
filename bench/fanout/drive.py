"""Driving: the changes (one Setvar each, on an open-loop schedule over one AMI session), the
readings around the drive window, and a watcher that stamps when each snapshot reached memcached.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.sim.client import AmiClient, device_state
from bench.common import PREFIX, Memcache, cpu_seconds, cpu_times
from bench.fanout.report import (
    SNAPSHOT_VERSION_RE,
    Histogram,
    SendIndex,
    first_poll_deliveries,
    snapshot_changes,
)

STATE_CLASS = {"INUSE": "inuse", "NOT_INUSE": "idle"}  # Setvar value -> the tile's state class
STORE_WATCH = 0.005  # seconds between the store watcher's reads of the version key


@dataclass(frozen=True)
class Send:
    """One state change as sent: when (time.monotonic, the same clock in every process),
    which extension, and the state class its tile must show."""

    at: float
    exten: str
    state: str


def save_sends(path: Path, sends: Iterable[Send]) -> None:
    """The sends for the client processes, which match what their viewers saw against them."""
    path.write_text(json.dumps([[send.at, send.exten, send.state] for send in sends]))


def load_sends(path: Path) -> list[Send]:
    return [Send(*item) for item in json.loads(path.read_text())]


def plan_changes(extensions: Sequence[str], count: int, seed: int) -> list[tuple[str, str]]:
    """Round robin over the extensions in a shuffled order, each alternating INUSE and
    NOT_INUSE (all start idle): every Setvar is a change, and the same extension changes
    again only after all others did, so no change hides another inside a batch."""
    order = list(extensions)
    random.Random(seed).shuffle(order)
    values = ("INUSE", "NOT_INUSE")
    return [(order[i % len(order)], values[(i // len(order)) % 2]) for i in range(count)]


async def drive(driver: AmiClient, plan: Sequence[tuple[str, str]], rate: float) -> tuple[list[Send], float]:
    """Send the plan at `rate` a second on a fixed schedule; a late Setvar goes at once and
    is stamped when it really went. Returns the sends and the worst lateness (s)."""
    start = time.monotonic() + 0.02
    sends: list[Send] = []
    worst = 0.0
    for number, (exten, value) in enumerate(plan):
        due = start + number / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        driver.send("Setvar", **device_state(f"Custom:{exten}", value))  # its reply is read by a task
        sends.append(Send(now, exten, STATE_CLASS[value]))
        worst = max(worst, now - due)
    return sends, worst


def plan_pauses(extensions: Sequence[str], count: int) -> list[tuple[str, bool]]:
    """`--queue-rate`: the members of the demo's `support` queue (its first extensions, as
    app.sim.churn.demo_queues makes it) paused and unpaused in turn, each after all others."""
    members = list(extensions)[: max(1, min(8, len(extensions) // 2))]
    return [(members[i % len(members)], (i // len(members)) % 2 == 0) for i in range(count)]


async def drive_pauses(
    driver: AmiClient, plan: Sequence[tuple[str, bool]], rate: float
) -> tuple[list[Send], float]:
    """QueuePause at `rate` a second on a fixed schedule; a tile shows the pause as its
    `paused` class, so a send's state is "paused" or "unpaused"."""
    start = time.monotonic() + 0.02
    sends: list[Send] = []
    worst = 0.0
    for number, (exten, paused) in enumerate(plan):
        delay = start + number / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        fields = {"Interface": f"PJSIP/{exten}", "Queue": "support", "Paused": "true" if paused else "false"}
        driver.send("QueuePause", **fields, **({"Reason": "bench"} if paused else {}))
        sends.append(Send(now, exten, "paused" if paused else "unpaused"))
        worst = max(worst, now - (start + number / rate))
    return sends, worst


async def sessions_midway(driver: AmiClient, delay: float) -> int:
    """AMI sessions at the PBX halfway through the drive, less the driver's own."""
    await asyncio.sleep(delay)
    return await driver.sessions() - 1


# --- readings around the drive ---


MEMCACHED_OPS = (
    "cmd_get",  # one per key asked for (get/gets)
    "cmd_set",  # set, add, replace, cas, append, prepend
    "cmd_touch",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
)


async def memcached_ops(port: int) -> int:
    """Operations memcached has done so far, from its `stats`."""
    mc = await Memcache.connect(port)
    try:
        stats = await mc.stats()
    finally:
        await mc.close()
    return sum(stats.get(name, 0) for name in MEMCACHED_OPS)


@dataclass
class Readings:
    """CPU seconds per process and of the machine at one moment, plus memcached's ops."""

    at: float
    cpu: dict[int, float]
    machine: dict[str, float]
    memcached_ops: int

    @classmethod
    async def take(cls, pids: Iterable[int], memcached_port: int) -> Readings:
        ops = await memcached_ops(memcached_port)
        return cls(time.monotonic(), {pid: cpu_seconds(pid) for pid in pids}, cpu_times(), ops)


class StoreWatcher:
    """Reads the version key every STORE_WATCH s during the drive and each new snapshot
    once, stamping when it appeared: the PBX -> store share of the latency. Its own
    memcached operations are counted, to be left out of the server's."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mc: Memcache | None = None
        self.bodies: dict[int, bytes] = {}
        self.seen: dict[int, float] = {}
        self.times: list[float] = []
        self.versions: list[int] = []

    @property
    def ops(self) -> int:
        return self.mc.ops if self.mc else 0

    async def run(self) -> None:
        self.mc = mc = await Memcache.connect(self.port)
        try:
            while True:
                version = await mc.version()
                if version is not None and version not in self.bodies:
                    body = await mc.get(f"{PREFIX}snapshot")
                    if body is not None and body[:1] == b"{":
                        self._note(time.monotonic(), body)
                await asyncio.sleep(STORE_WATCH)
        finally:
            await mc.close()

    def _note(self, now: float, body: bytes) -> None:
        match = SNAPSHOT_VERSION_RE.search(body, 0, 64)
        if match is None:
            return
        version = int(match.group(1))
        self.bodies.setdefault(version, body)
        self.seen.setdefault(version, now)
        self.times.append(now)
        self.versions.append(version)

    def latencies(self, sends: Sequence[Send]) -> Histogram:
        """Setvar -> the first snapshot in the store that shows it, per send."""
        index = SendIndex(sends)
        changes_of = snapshot_changes(self.bodies, self.seen, index)
        histogram = Histogram()
        if self.times:
            first = first_poll_deliveries(self.times, self.versions, changes_of, index.times)
            histogram.add_many(first.values())
        return histogram

"""Reporting: bytes on the wire turned into latencies (which send a tile or a snapshot shows),
histograms, the figures of one run, the markdown tables and the JSON file.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import BUSY_FIELDS, CPU_FIELDS

if TYPE_CHECKING:  # what a run hands over; those modules import this one
    from bench.fanout.drive import Readings, Send
    from bench.fanout.run import Parts, RunSpec

TILE_RE = re.compile(rb'id="ext-([^"@]+)" class="tile state-([a-z_]+)( paused)?"')
PAUSE_STATES = ("paused", "unpaused")  # the sends of --queue-rate
SNAPSHOT_VERSION_RE = re.compile(rb'"version":\s*(\d+)')
CLIENT_CPU_LIMIT = 0.8  # a client process busier than this (of one core) makes the run invalid


# --- latencies ---


class Histogram:
    """Latencies in 0.1 ms bins: exact enough percentiles for millions of samples."""

    UNIT = 1e-4

    def __init__(self) -> None:
        self.bins: Counter[int] = Counter()
        self.max = 0.0

    def add_many(self, seconds: Iterable[float]) -> None:
        values = list(seconds)
        if values:
            self.bins.update(int(v / self.UNIT) for v in values)
            self.max = max(self.max, max(values))

    @property
    def count(self) -> int:
        return sum(self.bins.values())

    def merge(self, other: dict[str, Any]) -> None:
        self.bins.update({int(k): v for k, v in other["bins"].items()})
        self.max = max(self.max, other["max"])

    def to_json(self) -> dict[str, Any]:
        return {"bins": {str(k): v for k, v in self.bins.items()}, "max": self.max}

    def percentile_ms(self, q: float) -> float | None:
        total = self.count
        if not total:
            return None
        rank = math.ceil(q / 100 * total)
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return round((key + 0.5) * self.UNIT * 1000, 1)
        return round(self.max * 1000, 1)


class SendIndex:
    """The sends by (extension, state), to tell which send a tile seen at time t shows: the
    latest one of that extension and state before t. The same extension takes the same
    state again only two rounds later (seconds), so this cannot pick a wrong one."""

    def __init__(self, sends: Sequence[Send]) -> None:
        self.times = [send.at for send in sends]
        self.pauses = {number for number, send in enumerate(sends) if send.state in PAUSE_STATES}
        self._by_key: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
        for number, send in enumerate(sends):
            times, numbers = self._by_key.setdefault((send.exten, send.state), ([], []))
            times.append(send.at)
            numbers.append(number)

    def __len__(self) -> int:
        return len(self.times)

    def latest_before(self, exten: str, state: str, at: float) -> int | None:
        times, numbers = self._by_key.get((exten, state), ((), ()))
        position = bisect.bisect_right(times, at)  # type: ignore[arg-type]
        return numbers[position - 1] if position else None


def sse_message_sends(
    pieces: Sequence[bytes], first_seen: Sequence[float], index: SendIndex
) -> list[list[int]]:
    """For each distinct SSE message: the sends its tiles show, judged at the moment the
    first viewer of this process got it."""
    result = []
    for piece, seen in zip(pieces, first_seen, strict=True):
        found: list[int | None] = []
        for exten, state, paused in TILE_RE.findall(piece):
            found.append(index.latest_before(exten.decode(), state.decode(), seen))
            if index.pauses:  # a tile shows its lamp and whether its agent is paused
                found.append(index.latest_before(exten.decode(), PAUSE_STATES[not paused], seen))
        result.append([number for number in found if number is not None])
    return result


def first_deliveries(
    times: Sequence[float],
    messages: Sequence[int],
    sends_of: Sequence[Sequence[int]],
    send_times: Sequence[float],
) -> dict[int, float]:
    """One viewer: send number -> latency (s) of the first message that showed it."""
    first: dict[int, float] = {}
    for at, message in zip(times, messages, strict=True):
        for number in sends_of[message]:
            if number not in first:
                first[number] = at - send_times[number]
    return first


def snapshot_changes(
    bodies: dict[int, bytes], first_seen: dict[int, float], index: SendIndex
) -> dict[int, list[tuple[int, int]]]:
    """For each snapshot version a viewer fetched: (change version, send) of every extension
    whose current state came from one of our sends, newest change first. A change is
    matched to its send at the moment this process first saw it."""
    parsed: dict[int, list[tuple[str, str, int]]] = {}
    for version, body in bodies.items():
        extensions = json.loads(body)["extensions"].values()
        parsed[version] = [(e["exten"], e["state"], int(e["version"])) for e in extensions]
    change_seen: dict[tuple[str, int], float] = {}
    for version in sorted(parsed, key=first_seen.__getitem__):
        for exten, _state, changed in parsed[version]:
            change_seen.setdefault((exten, changed), first_seen[version])
    result = {}
    for version, items in parsed.items():
        matched = [
            (changed, index.latest_before(exten, state, change_seen[exten, changed]))
            for exten, state, changed in items
        ]
        result[version] = sorted(((c, n) for c, n in matched if n is not None), reverse=True)
    return result


def first_poll_deliveries(
    times: Sequence[float],
    versions: Sequence[int],
    changes_of: dict[int, list[tuple[int, int]]],
    send_times: Sequence[float],
) -> dict[int, float]:
    """One polling viewer: send number -> latency (s) of the first poll that showed it. The
    first poll is the baseline (before any change); each later one shows the changes
    newer than the version of the poll before it."""
    first: dict[int, float] = {}
    previous: int | None = None
    for at, version in zip(times, versions, strict=True):
        if previous is not None and version != previous:
            for changed, number in changes_of[version]:
                if changed <= previous:
                    break
                if number not in first:
                    first[number] = at - send_times[number]
        previous = version if previous is None else max(previous, version)
    return first


# --- one run's figures ---


@dataclass
class Window:
    before: Readings
    after: Readings
    sends: list[Send]
    lateness: float
    setvar_errors: int
    ami_sessions: int
    store: Histogram  # Setvar -> snapshot in memcached


@dataclass
class Memory:
    rss_before_kb: int  # server, before the viewers connect
    rss_after_kb: int  # with the viewers connected
    rss_end_kb: int  # at the end of the drive
    peak_kb: dict[int, int]


def pause_figures(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """With --queue-rate: how fast a member's pause reaches the viewers, as the lamps'."""
    if not any("pause_histogram" in report for report in reports):
        return {}
    pauses = Histogram()
    for report in reports:
        pauses.merge(report.get("pause_histogram") or Histogram().to_json())
    return {
        "pause_deliveries": pauses.count,
        "pause_p50_ms": pauses.percentile_ms(50),
        "pause_p99_ms": pauses.percentile_ms(99),
    }


def summarize(
    spec: RunSpec,
    parts: Parts,
    window: Window,
    reports: Sequence[dict[str, Any]],
    memory: Memory,
    connect_s: float,
    trouble: list[str],
) -> dict[str, Any]:
    """The run's figures, in the JSON shape of the issue plus details."""
    before, after = window.before, window.after
    span = after.at - before.at

    def cpu(pids: Iterable[int]) -> float:
        return sum(after.cpu.get(pid, 0.0) - before.cpu.get(pid, 0.0) for pid in pids)

    server_pids = [pid for pid in memory.peak_kb]
    histogram = Histogram()
    for report in reports:
        histogram.merge(report["histogram"])
    connected = sum(report["viewers"] for report in reports)
    changes = len(window.sends)
    client_cpu = [cpu([c.pid]) / span for c in parts.clients]
    machine = {kind: after.machine[kind] - before.machine[kind] for kind in CPU_FIELDS}
    busy = sum(machine[kind] for kind in BUSY_FIELDS)
    ours = cpu(after.cpu)
    viewers_bytes = sum(report["bytes"] for report in reports)
    notes = []
    if max(client_cpu) > CLIENT_CPU_LIMIT:
        notes.append(
            f"client CPU {max(client_cpu):.0%} of a core: the clients, not the server, may be the limit"
        )
    if connected < spec.viewers:
        notes.append(f"only {connected} of {spec.viewers} viewers connected")
    return {
        "mode": spec.mode,
        "viewers": spec.viewers,
        "rate": spec.rate,
        "workers": spec.workers,
        "p50_ms": histogram.percentile_ms(50),
        "p95_ms": histogram.percentile_ms(95),
        "p99_ms": histogram.percentile_ms(99),
        "max_ms": round(histogram.max * 1000, 1),
        "lost": sum(report["lost"] for report in reports),
        "server_cpu_s": round(cpu(server_pids), 2),
        "server_rss_mb": round(sum(memory.peak_kb.values()) / 1024, 1),
        "memcached_ops_per_s": round((after.memcached_ops - before.memcached_ops) / span, 1),
        "bytes_per_viewer_per_change": round(viewers_bytes / max(connected * changes, 1), 1),
        "ami_sessions": window.ami_sessions,
        "valid": not notes,
        "notes": notes,
        "seconds": round(span, 2),
        "changes": changes,
        "deliveries": histogram.count,
        **pause_figures(reports),
        "viewers_connected": connected,
        "connect_s": round(connect_s, 1),
        "server_cpu_pct": round(100 * cpu(server_pids) / span, 1),
        "server_processes": [
            {"pid": pid, "cpu_s": round(cpu([pid]), 2), "peak_rss_mb": round(kb / 1024, 1)}
            for pid, kb in memory.peak_kb.items()
        ],
        # steady state: the server's RSS at the end of the drive less before the viewers came
        "rss_per_viewer_kb": per_viewer_kb(memory.rss_end_kb - memory.rss_before_kb, connected),
        "rss_per_viewer_at_connect_kb": per_viewer_kb(memory.rss_after_kb - memory.rss_before_kb, connected),
        "clients": spec.clients,
        "client_cpu_max": round(max(client_cpu), 3),
        "client_cpu": [round(c, 3) for c in client_cpu],
        "memcached_cpu_s": round(cpu([parts.memcached.pid]), 2),
        "simulator_cpu_s": round(cpu([parts.simulator.pid]), 2),
        "machine_busy": round(busy / max(sum(machine.values()), 1e-9), 3),
        "machine_steal_pct": round(100 * machine["steal"] / span, 1),
        "machine_softirq_pct": round(100 * machine["softirq"] / span, 1),
        "others_cpu_pct": round(100 * max(busy - ours, 0.0) / span, 1),
        "store_p50_ms": window.store.percentile_ms(50),
        "store_p99_ms": window.store.percentile_ms(99),
        "rss_growth_mb": round((memory.rss_end_kb - memory.rss_after_kb) / 1024, 1),
        "send_lateness_max_ms": round(window.lateness * 1000, 1),
        "setvar_errors": window.setvar_errors,
        "disconnects": sum(report["disconnects"] for report in reports),
        "client_errors": sum(report["errors"] for report in reports),
        "poll_interval_s": spec.poll_interval if spec.mode == "poll" else None,
        "extensions": spec.extensions,
        "pinned": spec.pin,
        "server_env": dict(spec.server_env),
        "collector": spec.collector,
        "label": spec.label,
        "scopes": spec.scopes,
        "series": spec.label is None,
        "trouble": trouble,
    }


def per_viewer_kb(kb: int, viewers: int) -> float:
    return round(kb / max(viewers, 1), 2)


def stack_summary(path: Path, top: int = 25) -> str:
    """The hottest functions of a py-spy `--format raw` file: own samples and inclusive
    (the function or anything it called), in % of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r"\(\S*?(site-packages|lib/python3\.\d+)/", "(", f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{path.name}: {total} samples", "own:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


# --- output ---


COLUMNS = (
    ("mode", "mode", "{}"),
    ("viewers", "N", "{:,}"),
    ("rate", "R/s", "{:g}"),
    ("workers", "W", "{}"),
    ("p50_ms", "p50 ms", "{:,.1f}"),
    ("p95_ms", "p95 ms", "{:,.1f}"),
    ("p99_ms", "p99 ms", "{:,.1f}"),
    ("max_ms", "max ms", "{:,.1f}"),
    ("lost", "lost", "{:,}"),
    ("server_cpu_pct", "server CPU %", "{:.0f}"),
    ("server_rss_mb", "RSS MB", "{:.0f}"),
    ("rss_per_viewer_kb", "KB/viewer", "{:.1f}"),
    ("memcached_ops_per_s", "mc ops/s", "{:,.0f}"),
    ("bytes_per_viewer_per_change", "B/viewer/chg", "{:,.0f}"),
    ("ami_sessions", "AMI", "{}"),
    ("client_cpu_max", "client CPU", "{:.0%}"),
    ("valid", "valid", "{}"),
)


# Where the time goes and what else ran: the second table of docs/benchmarks.md.
DETAIL_COLUMNS = (
    ("mode", "mode", "{}"),
    ("viewers", "N", "{:,}"),
    ("rate", "R/s", "{:g}"),
    ("workers", "W", "{}"),
    ("store_p50_ms", "store p50 ms", "{:,.1f}"),
    ("store_p99_ms", "store p99 ms", "{:,.1f}"),
    ("machine_busy", "machine busy", "{:.0%}"),
    ("machine_softirq_pct", "softirq %", "{:.1f}"),
    ("others_cpu_pct", "others %", "{:.1f}"),
    ("viewers_connected", "connected", "{:,}"),
    ("connect_s", "connect s", "{:.1f}"),
    ("rss_growth_mb", "RSS growth MB", "{:.1f}"),
    ("trouble", "trouble lines", "{}"),
)


def markdown_table(runs: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """One row per run; a first column with the label when any run has one."""
    columns = ((("label", "run", "{}"),) if any(run.get("label") for run in runs) else ()) + tuple(columns)
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" if key in ("mode", "label") else "--:" for key, _, _ in columns) + "|")
    for run in runs:
        lines.append("| " + " | ".join(cell(run.get(key), fmt) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):  # e.g. trouble: the lines, counted
        return f"{len(value):,}"
    return fmt.format(value)


def write_json(path: Path, machine: dict[str, Any], runs: list[dict[str, Any]], command: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, "command": command, "runs": runs}, indent=1) + "\n")


def print_run(run: dict[str, Any]) -> None:
    print(markdown_table([run]).splitlines()[-1], flush=True)
    for note in run["notes"] + run["trouble"]:
        print(f"    ! {note}", flush=True)

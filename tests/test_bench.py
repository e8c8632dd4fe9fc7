"""The fan-out benchmark (`python -m bench.fanout`): its smoke run end to end, and the parts
that turn bytes on the wire into latencies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fanout import drive, report, viewers

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {
    "mode",
    "viewers",
    "rate",
    "workers",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "lost",
    "server_cpu_s",
    "server_rss_mb",
    "memcached_ops_per_s",
    "bytes_per_viewer_per_change",
    "ami_sessions",
}


@pytest.mark.timeout(120)
def test_smoke_run_measures_both_modes(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.fanout", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert {"nproc", "cpu_model", "ram_gib"} <= result["machine"].keys()
    runs = {run["mode"]: run for run in result["runs"]}
    assert runs.keys() == {"sse", "poll"}
    for run in runs.values():
        assert FIELDS <= run.keys(), FIELDS - run.keys()
        assert run["viewers_connected"] == run["viewers"]
        assert run["lost"] == 0
        assert run["deliveries"] == run["viewers"] * run["changes"] > 0
        assert run["ami_sessions"] == 1  # one collector, however many workers and viewers
        assert 0 < run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"] <= run["max_ms"]
        assert run["server_cpu_s"] > 0 and run["server_rss_mb"] > 0
        assert run["memcached_ops_per_s"] > 0 and run["bytes_per_viewer_per_change"] > 0
    assert runs["sse"]["p50_ms"] < runs["poll"]["p50_ms"]
    assert "| sse |" in done.stdout and "| poll |" in done.stdout


def test_plan_alternates_each_extension_and_spreads_them() -> None:
    plan = drive.plan_changes(["100", "101", "102"], 9, seed=3)
    assert sorted(exten for exten, _ in plan[:3]) == ["100", "101", "102"]
    assert plan[:3] == [(exten, "INUSE") for exten, _ in plan[:3]]
    assert plan[3:6] == [(exten, "NOT_INUSE") for exten, _ in plan[:3]]
    assert plan[6:] == plan[:3]


def test_histogram_percentiles() -> None:
    histogram = report.Histogram()
    histogram.add_many([i / 1000 for i in range(1, 101)])  # 1 ms .. 100 ms
    assert histogram.count == 100
    assert histogram.percentile_ms(50) == pytest.approx(50, abs=0.2)
    assert histogram.percentile_ms(99) == pytest.approx(99, abs=0.2)
    assert histogram.max == pytest.approx(0.1)
    merged = report.Histogram()
    merged.merge(json.loads(json.dumps(histogram.to_json())))
    assert merged.count == 100 and merged.percentile_ms(50) == histogram.percentile_ms(50)
    assert report.Histogram().percentile_ms(50) is None


def sends(*items: tuple[float, str, str]) -> list:
    return [drive.Send(*item) for item in items]


def test_a_tile_is_matched_to_the_latest_send_of_its_state() -> None:
    index = report.SendIndex(sends((1.0, "100", "inuse"), (2.0, "100", "idle"), (3.0, "100", "inuse")))
    assert index.latest_before("100", "inuse", 0.5) is None  # the state from before the run
    assert index.latest_before("100", "inuse", 2.5) == 0
    assert index.latest_before("100", "inuse", 3.0) == 2
    assert index.latest_before("100", "idle", 9.0) == 1
    assert index.latest_before("101", "idle", 9.0) is None


def test_a_paused_tile_shows_its_lamp_and_its_pause() -> None:
    """--queue-rate: one tile carries two sends, the lamp's and the pause's; a tile that
    is not paused shows the latest unpause (or nothing, before any)."""
    index = report.SendIndex(sends((1.0, "100", "inuse"), (2.0, "100", "paused"), (3.0, "101", "unpaused")))
    assert index.pauses == {1, 2}
    paused = b'<article id="ext-100" class="tile state-inuse paused" title="x"> </article>'
    plain = b'<article id="ext-101" class="tile state-idle" title="x"> </article>'
    assert report.sse_message_sends([paused, plain], [2.5, 3.5], index) == [[0, 1], [2]]
    assert drive.plan_pauses([str(n) for n in range(100, 104)], 5) == [
        ("100", True),
        ("101", True),
        ("100", False),
        ("101", False),
        ("100", True),
    ]


def tile(exten: str, state: str, oob: bool = True) -> bytes:
    swap = ' hx-swap-oob="true"' if oob else ""
    return f'<article{swap} id="ext-{exten}" class="tile state-{state}" title="x"> </article>'.encode()


def test_sse_viewer_parses_chunked_messages_split_anywhere() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    whole = tile("100", "idle", oob=False) + tile("101", "idle", oob=False)
    messages = [
        b"id: 1\ndata: <main>" + whole + b"</main>\n\n",
        b"id: 2\ndata: " + tile("100", "inuse") + b"\n\n",
        b"id: 3\ndata: " + tile("101", "inuse") + b" " + tile("100", "idle") + b"\n\n",
    ]
    wire = head + b"".join(b"%x\r\n%s\r\n" % (len(m), m) for m in messages)

    async def feed() -> tuple[object, object]:
        shared = viewers.Shared()
        viewer = viewers.SseViewer(shared)
        for start in range(0, len(wire), 7):  # 7-byte reads: every boundary splits something
            viewer.data_received(wire[start : start + 7])
        assert viewer.ready.done()
        return viewer, shared

    viewer, shared = asyncio.run(feed())
    pieces = sorted(shared.pieces, key=shared.pieces.__getitem__)
    assert len(viewer.messages) == 3 and len(pieces) == 3
    assert [[found[:2] for found in report.TILE_RE.findall(piece)] for piece in pieces] == [
        [(b"100", b"idle"), (b"101", b"idle")],
        [(b"100", b"inuse")],
        [(b"101", b"inuse"), (b"100", b"idle")],
    ]
    index = report.SendIndex(sends((0.0, "100", "inuse"), (0.0, "101", "inuse"), (0.0, "100", "idle")))
    # judged as if each message had been first seen at time 1: the full view before the
    # run shows nothing we sent; the others show sends 0, then 1 and 2
    sends_of = report.sse_message_sends(pieces, [-1.0, 1.0, 1.0], index)
    assert sends_of == [[], [0], [1, 2]]
    first = report.first_deliveries([0.5, 1.2, 1.5, 1.9], [0, 1, 2, 1], sends_of, index.times)
    assert first == pytest.approx({0: 1.2, 1: 1.5, 2: 1.5})


def snapshot(version: int, **extensions: tuple[str, int]) -> bytes:
    body = {
        "version": version,
        "extensions": {
            f"{exten}@ctx": {"exten": exten, "state": state, "version": changed}
            for exten, (state, changed) in extensions.items()
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


def test_a_poll_shows_the_changes_newer_than_the_poll_before() -> None:
    index = report.SendIndex(sends((10.0, "100", "inuse"), (10.5, "101", "inuse"), (12.0, "100", "idle")))
    bodies = {
        1: snapshot(1, **{"100": ("idle", 1), "101": ("idle", 1)}),
        2: snapshot(2, **{"100": ("inuse", 2), "101": ("idle", 1)}),
        3: snapshot(3, **{"100": ("inuse", 2), "101": ("inuse", 3)}),
        4: snapshot(4, **{"100": ("idle", 4), "101": ("inuse", 3)}),
    }
    seen = {1: 5.0, 2: 10.2, 3: 10.9, 4: 12.3}
    changes_of = report.snapshot_changes(bodies, seen, index)
    assert changes_of[1] == []
    assert changes_of[3] == [(3, 1), (2, 0)]  # (change version, send), newest first
    assert changes_of[4] == [(4, 2), (3, 1)]
    # polls at 9 (baseline), 11 (version 3), 11.5 (same), 13 (version 4)
    first = report.first_poll_deliveries([9.0, 11.0, 11.5, 13.0], [1, 3, 3, 4], changes_of, index.times)
    assert first == pytest.approx({0: 1.0, 1: 0.5, 2: 1.0})
    # a viewer that first polled after the first change counts it from its baseline: not shown
    late = report.first_poll_deliveries([10.3, 13.0], [2, 4], changes_of, index.times)
    assert late == pytest.approx({1: 2.5, 2: 1.0})


def test_markdown_table_rows() -> None:
    run = {"mode": "sse", "viewers": 1000, "rate": 50.0, "workers": 1, "p50_ms": 12.34, "valid": True}
    table = report.markdown_table([run]).splitlines()
    assert table[0].startswith("| mode | N | R/s | W | p50 ms")
    assert table[2].startswith("| sse | 1,000 | 50 | 1 | 12.3 | – |")
    assert table[2].endswith("| yes |")


def test_the_page_cpu_benchmark_runs_and_reports() -> None:
    """`python -m bench.page_cpu`: Chromium's CPU on the panel's own page, one JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.page_cpu", "--tiles", "5", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tiles"] == 5 and result["design"] == "page-clock"
    assert 0 <= result["chromium_cpu_percent"] < 400

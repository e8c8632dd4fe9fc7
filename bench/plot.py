"""The fan-out figure: p99 latency and server CPU against viewers, SSE and polling side by side.

    .venv/bin/python bench/plot.py docs/benchmarks.json docs/benchmarks.png

Needs matplotlib (`pip install -e .[bench]`); `python -m bench.fanout` imports it only for `--plot`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

COLOURS = {"sse": "#1f77b4", "poll": "#d62728"}
DASHES = {10.0: "-", 100.0: "--"}
MARKERS = {1: "o", 2: "s"}


def series(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, float, int], list[dict[str, Any]]]:
    """Runs grouped by (mode, rate, workers), each group ordered by viewers; runs flagged as
    extra (`"series": false`, e.g. the target runs) are left out."""
    groups: dict[tuple[str, float, int], list[dict[str, Any]]] = {}
    for run in runs:
        if run.get("series", True):
            groups.setdefault((run["mode"], float(run["rate"]), int(run["workers"])), []).append(run)
    return {key: sorted(group, key=lambda run: run["viewers"]) for key, group in sorted(groups.items())}


def draw(runs: Sequence[dict[str, Any]], out: Path) -> None:
    """Two panels side by side; a hollow marker is a run the benchmark called invalid."""
    fig, (latency, cpu) = plt.subplots(1, 2, figsize=(13, 5.2))
    for (mode, rate, workers), group in series(runs).items():
        style = {
            "color": COLOURS.get(mode, "grey"),
            "linestyle": DASHES.get(rate, ":"),
            "marker": MARKERS.get(workers, "^"),
            "label": f"{mode}, {rate:g} changes/s, {workers} worker{'s' if workers > 1 else ''}",
        }
        viewers = [run["viewers"] for run in group]
        latency.plot(viewers, [run["p99_ms"] for run in group], **style)
        cpu.plot(viewers, [run["server_cpu_pct"] for run in group], **style)
        for axis, key in ((latency, "p99_ms"), (cpu, "server_cpu_pct")):
            invalid = [run for run in group if not run.get("valid", True)]
            axis.scatter(
                [run["viewers"] for run in invalid],
                [run[key] for run in invalid],
                s=90,
                facecolors="white",
                edgecolors=style["color"],
                zorder=3,
            )
    latency.set(xscale="log", yscale="log", xlabel="viewers", ylabel="p99 latency, ms (Setvar to tile)")
    latency.set_title("p99 latency")
    latency.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    cpu.set(xscale="log", xlabel="viewers", ylabel="server CPU, % of one core (all workers)")
    cpu.set_title("server CPU")
    cpu.axhline(200, color="grey", linewidth=0.8, linestyle=":")
    cpu.annotate("2 cores", (0.01, 200), xycoords=("axes fraction", "data"), va="bottom", color="grey")
    latency.annotate("100 ms", (0.01, 100), xycoords=("axes fraction", "data"), va="bottom", color="grey")
    ticks = sorted({run["viewers"] for group in series(runs).values() for run in group})
    for axis in (latency, cpu):
        axis.grid(True, which="both", alpha=0.3)
        axis.set_xticks(ticks, [f"{n:,}" for n in ticks])
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    handles, labels = latency.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize="small", frameon=False)
    fig.suptitle("blf-panel fan-out: SSE (one hub per process) vs polling /api/snapshot every second")
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    draw(json.loads(Path(argv[0]).read_text())["runs"], Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The data-path benchmark's command line: both figures on one memcached, printed and written
as JSON (`python -m bench.datapath --help`); the package docstring says what they measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bench.datapath
from bench.common import Children, machine_info, terminate_as_interrupt
from bench.datapath.capacity import CONTENDED_CPU, CapacityPoint, Load, measure_capacity, saturation
from bench.datapath.latency import LatencyResult, measure_latency
from bench.datapath.path import COLLECTOR_CPU, OTHERS_CPU, running_memcached


def print_latency(result: LatencyResult, window: float) -> None:
    print(f"\nSetvar -> snapshot latency (PUBLISH_WINDOW {window * 1000:g} ms)")
    print(
        f"  {result.count} samples, {result.timeouts} timeouts; version polled every "
        f"{result.poll_interval_ms:g} ms, {result.poll_period_ms:.2f} ms measured (the resolution)"
    )
    print(
        f"  p50 {result.p50_ms:.1f} ms   p90 {result.p90_ms:.1f} ms   p99 {result.p99_ms:.1f} ms   "
        f"max {result.max_ms:.1f} ms   (min {result.min_ms:.1f} ms)"
    )
    print(
        f"  collector CPU {result.collector_cpu_percent:.1f} %; other processes used "
        f"{result.others_on_collector_core_percent:.1f} % of its core meanwhile"
    )


def print_capacity(points: Sequence[CapacityPoint], sat: dict[str, Any]) -> None:
    print(f"\nCollector capacity (collector alone on CPU {COLLECTOR_CPU}; rates per second)")
    print(
        f"{'load':>13} {'changes':>8} {'events':>7} {'handled':>8} {'CPU %':>6} {'ev/CPU-s':>9} "
        f"{'versions':>9} {'chg/ver':>8} {'others %':>9} {'load CPU %':>10} {'backlog':>8}"
    )
    for p in points:
        backlog = "?" if p.backlog_end_bytes is None else f"{p.backlog_end_bytes / 1024:.0f}K"
        print(
            f"{p.load + ' ' + format(p.rate_requested, 'g'):>13} {p.changes_per_s:>8.0f} "
            f"{p.events_per_s:>7.0f} {p.handled_events_per_s:>8.0f} {p.cpu_percent:>6.1f} "
            f"{p.events_per_cpu_second:>9.0f} {p.versions_per_s:>9.1f} {p.changes_per_version:>8.1f} "
            f"{p.others_on_collector_core_percent:>9.1f} {p.load_core_busy_percent:>10.1f} {backlog:>8}"
            + ("  saturated" if p.saturated else "")
            + ("  contended" if p.contended else "")
        )
        for line in p.trouble[:3]:
            print(f"{'':>13} log: {line[:140]}")
    print(
        f"  others %: CPU {COLLECTOR_CPU} time used by other processes; "
        f"load CPU %: CPU {OTHERS_CPU} (simulator, memcached, this benchmark);\n"
        f"  contended: others took >= {CONTENDED_CPU:g} % of the collector's core, so it batched more"
    )
    if sat["reached"]:
        print(
            f"  saturation: {sat['events_per_s']:.0f} events/s at {sat['cpu_percent']:.0f} % of the "
            f"collector's core ({sat['load']}); {sat['events_per_cpu_second']:.0f} events per CPU-second"
        )
    else:
        print(
            f"  saturation not reached; closest: {sat['events_per_s']:.0f} events/s took "
            f"{sat['cpu_percent']:.0f} % of the collector's core ({sat['load']}, load core "
            f"{sat['load_core_busy_percent']:.0f} % busy{', contended' if sat['contended'] else ''}): "
            f"one core would handle about {sat['one_core_estimate_events_per_s']:.0f} events/s"
        )


# --- main ---


@dataclass(frozen=True)
class Config:
    samples: int
    poll_interval: float
    window: float
    loads: list[Load]
    seconds: float
    seed: int | None
    pin: bool


def rate_list(text: str) -> list[float]:
    return [float(rate) for rate in text.split(",") if rate.strip()]


def parse_args(argv: Sequence[str] | None) -> tuple[Config, Path | None]:
    doc = bench.datapath.__doc__ or ""
    parser = argparse.ArgumentParser(prog="python -m bench.datapath", description=doc.splitlines()[0])
    parser.add_argument("-n", "--samples", type=int, default=200, help="Setvars to time (200)")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="version poll interval, ms (1)")
    parser.add_argument("--window", type=float, default=0.02, help="collector PUBLISH_WINDOW, s (0.02)")
    parser.add_argument(
        "--rates",
        type=rate_list,
        default="100,400,1000,2000",
        help="simulator --churn rates, changes/s (100,400,1000,2000)",
    )
    parser.add_argument(
        "--setvar-rates",
        type=rate_list,
        default="4000,8000,16000",
        help="Setvar flood rates, changes/s, past what churn reaches (4000,8000,16000; '' for none)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each capacity window (10)")
    parser.add_argument("--seed", type=int, help="seed of the Setvar sequences")
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.seconds, args.rates, args.setvar_rates = 20, 2.0, [1000.0], [8000.0]
    loads = [Load("churn", rate) for rate in args.rates]
    loads += [Load("setvar", rate) for rate in args.setvar_rates]
    config = Config(
        samples=args.samples,
        poll_interval=args.poll_ms / 1000,
        window=args.window,
        loads=loads,
        seconds=args.seconds,
        seed=args.seed,
        pin=len(os.sched_getaffinity(0)) >= 2 and {COLLECTOR_CPU, OTHERS_CPU} <= os.sched_getaffinity(0),
    )
    return config, args.json


async def run(config: Config, children: Children) -> dict[str, Any]:
    """Both figures, one after the other, on one memcached."""
    rng = random.Random(config.seed)
    async with running_memcached(children, config.window) as path:
        latency = await measure_latency(path, config.samples, config.poll_interval, rng)
        print_latency(latency, config.window)
        points = []
        for load in config.loads:
            points.append(await measure_capacity(path, load, config.seconds, rng))
            print(f"  {load} measured", file=sys.stderr)
    figures: dict[str, Any] = {"latency": asdict(latency), "capacity": [asdict(p) for p in points]}
    if points:
        figures["saturation"] = saturation(points)
        print_capacity(points, figures["saturation"])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    config, json_out = parse_args(argv)
    if shutil.which("memcached") is None:
        print("datapath: memcached is not installed", file=sys.stderr)
        return 2
    if config.pin:
        os.sched_setaffinity(0, {OTHERS_CPU})  # keep this process off the collector's core
    else:
        print("fewer than 2 CPUs: nothing pinned, CPU % is shared with the load", file=sys.stderr)
    info = machine_info()
    print(
        f"{info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}, "
        f"load average {info['loadavg_at_start']:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="blf-bench-") as logs, terminate_as_interrupt():
        children = Children(Path(logs), pin=config.pin)
        try:
            figures = asyncio.run(run(config, children))
        except KeyboardInterrupt:
            print("datapath: interrupted; every process it started is stopped", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
    if json_out is not None:
        report = {"machine": info, "config": asdict(config), **figures}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

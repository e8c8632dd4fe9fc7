"""The fan-out benchmark's command line (`python -m bench.fanout --help`): every combination
of the options as a run, the table as they finish, the JSON and the plot at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench.common
import bench.fanout
from bench.common import ROOT, machine_info, terminate_as_interrupt, use_uvloop
from bench.fanout.report import DETAIL_COLUMNS, markdown_table, print_run, stack_summary, write_json
from bench.fanout.run import RunSpec, run_one
from bench.fanout.viewers import POLL_VIEWERS_PER_CLIENT, SSE_VIEWERS_PER_CLIENT, viewer_main


def number_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(item) for item in text.split(",") if item.strip()]

    return parse


SWEEP = {
    "viewers": [100, 1000, 5000, 10000],
    "rate": [10.0, 100.0],
    "workers": [1, 2],
    "mode": ["sse", "poll"],
}


SMOKE = {"viewers": [40], "rate": [10.0], "workers": [2], "mode": ["sse", "poll"], "seconds": 3.0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = bench.fanout.__doc__ or ""
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=doc.split("\n\n")[0])
    parser.add_argument("--viewers", type=number_list(int), default=[1000], help="N, or a list: 100,1000")
    parser.add_argument("--rate", type=number_list(float), default=[10.0], help="changes a second (list)")
    parser.add_argument("--workers", type=number_list(int), default=[1], help="uvicorn workers (list)")
    parser.add_argument("--mode", default="sse", help="sse, poll, or sse,poll")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the changes are driven")
    parser.add_argument("--clients", type=int, default=0, help="client processes (default: by N)")
    parser.add_argument("--extensions", default="100-399", help="the simulator's extensions, a range")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="--mode poll: seconds between polls")
    parser.add_argument("--pin", action="store_true", help="server side on CPU 0, clients on CPU 1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--scopes", type=int, default=0, help="spread the viewers over K scopes (signed embed links)"
    )
    parser.add_argument(
        "--queue-rate", type=float, default=0.0, help="queue member pauses a second besides the lamps"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--append", action="store_true", help="add to the runs already in --json")
    parser.add_argument("--plot", type=Path, help="draw p99 and server CPU against N (needs matplotlib)")
    parser.add_argument("--profile", type=Path, help="py-spy (raw stacks) of the server processes into DIR")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="a setting for serve (repeat)"
    )
    parser.add_argument(
        "--collector",
        choices=("serve", "process"),
        default="serve",
        help="serve: where `blf-panel serve` runs it (its own child process with memcached); "
        "process: `blf-panel collect` started here, web workers COLLECTOR=off",
    )
    parser.add_argument("--label", help="name these runs (labelled runs stay out of the plot's lines)")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the tree whose app/ is benchmarked")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="say what happens, on stderr")
    parser.add_argument("--smoke", action="store_true", help="both modes, 40 viewers, 3 s (CI)")
    parser.add_argument("--sweep", action="store_true", help="N 100-10,000 x R 10,100 x W 1,2 x both modes")
    parser.add_argument("--table", type=Path, help="print the markdown table of a results JSON and exit")
    parser.add_argument("--stacks", type=Path, help="print the hot spots of a --profile file and exit")
    args = parser.parse_args(argv)
    args.mode = [mode.strip() for mode in args.mode.split(",")]
    preset = SMOKE if args.smoke else SWEEP if args.sweep else {}
    for key, value in preset.items():
        setattr(args, key, value)
    if any(mode not in ("sse", "poll") for mode in args.mode):
        parser.error("--mode is sse, poll or sse,poll")
    return args


def specs_from(args: argparse.Namespace) -> list[RunSpec]:
    specs = []
    for viewers, rate, workers, mode in itertools.product(args.viewers, args.rate, args.workers, args.mode):
        per_client = SSE_VIEWERS_PER_CLIENT if mode == "sse" else POLL_VIEWERS_PER_CLIENT
        clients = args.clients or max(1, math.ceil(viewers / per_client))
        spec = RunSpec(
            mode, viewers, rate, workers, args.seconds, clients, args.extensions, args.poll_interval,
            args.pin, args.seed, args.profile, server_env(args.server_env), args.label, args.collector,
            args.scopes, args.queue_rate,
        )  # fmt: skip
        specs.append(spec)
    return specs


def server_env(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs = [item.partition("=") for item in items]
    if any(not name or not sep for name, sep, _ in pairs):
        raise SystemExit("--server-env takes NAME=VALUE")
    return tuple((name, value) for name, _, value in pairs)


async def run_all(args: argparse.Namespace, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    machine = machine_info()
    command = "python -m bench.fanout " + " ".join(sys.argv[1:])
    runs: list[dict[str, Any]] = []
    if args.append and args.json and args.json.exists():
        runs = json.loads(args.json.read_text())["runs"]
    print(markdown_table([]), flush=True)
    for spec in specs:
        log_dir = Path(tempfile.mkdtemp(prefix="blf-fanout-"))
        try:
            run = await run_one(spec, log_dir, args.app_root.resolve())
        finally:
            if not args.keep_logs:
                shutil.rmtree(log_dir, ignore_errors=True)
        run["log_dir"] = str(log_dir) if args.keep_logs else None
        runs.append(run)
        print_run(run)
        if args.json:
            write_json(args.json, machine, runs, command)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_viewers":
        return viewer_main(sys.argv[2:])
    args = parse_args(argv)
    if args.table:
        runs = json.loads(args.table.read_text())["runs"]
        print(markdown_table(runs) + "\n\n" + markdown_table(runs, DETAIL_COLUMNS))
        return 0
    if args.stacks:
        print(stack_summary(args.stacks))
        return 0
    bench.common.VERBOSE = args.verbose
    if args.pin:
        os.sched_setaffinity(0, {1})
    use_uvloop()
    try:
        with terminate_as_interrupt():
            runs = asyncio.run(run_all(args, specs_from(args)))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    if args.plot:
        from bench import plot  # matplotlib only when a plot is asked for

        plot.draw(runs, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

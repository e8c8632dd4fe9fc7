"""One run: start memcached, the simulator and the panel, connect the viewers, drive the
changes, take the readings, and summarize.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.sim.client import AmiClient
from bench.common import (
    PREFIX,
    START_TIMEOUT,
    Child,
    Children,
    app_cli,
    free_port,
    http_get,
    memcached_argv,
    process_tree,
    progress,
    rss_kb,
    status_kb,
    wait_for_port,
)
from bench.fanout.drive import (
    Readings,
    StoreWatcher,
    drive,
    drive_pauses,
    plan_changes,
    plan_pauses,
    save_sends,
    sessions_midway,
)
from bench.fanout.report import Memory, Window, summarize
from bench.fanout.viewers import TIMEOUT_SCALE, ClientProcess

SETTLE = 1.0  # seconds between the last viewer connecting and the first change
SSE_DRAIN = 3.0  # seconds after the last change that deliveries may still arrive


@dataclass(frozen=True)
class RunSpec:
    mode: str
    viewers: int
    rate: float
    workers: int
    seconds: float
    clients: int
    extensions: str
    poll_interval: float
    pin: bool
    seed: int
    profile_dir: Path | None = None
    server_env: tuple[tuple[str, str], ...] = ()
    label: str | None = None
    collector: str = "serve"  # "process": `blf-panel collect` alone, web workers COLLECTOR=off
    scopes: int = 0  # >0: viewers spread over this many scopes (signed embed links), see `scope_tokens`
    queue_rate: float = 0.0  # >0: queue members paused and unpaused this often a second as well


@dataclass
class Parts:
    """The processes of one run and their ports."""

    memcached: Child
    simulator: Child
    server: Child
    memcached_port: int
    ami_port: int
    web_port: int
    collector: Child | None = None  # with --collector process
    clients: list[ClientProcess] = field(default_factory=list)

    def server_pids(self) -> list[int]:
        """The serve process and everything below it: uvicorn's workers (and, with more
        than one, multiprocessing's resource tracker), and the collector when it runs alone."""
        return process_tree(self.server.pid) + ([self.collector.pid] if self.collector else [])


def extension_list(text: str) -> list[str]:
    first, _, last = text.partition("-")
    return [str(n) for n in range(int(first), int(last or first) + 1)]


async def start_parts(children: Children, spec: RunSpec) -> Parts:
    server_cpu = 0  # with --pin; the clients get CPU 1
    memcached_port, ami_port, web_port = free_port(), free_port(), free_port()
    memcached = children.start("memcached", memcached_argv(memcached_port), cpu=server_cpu)
    simulator = children.start(
        "simulator",
        app_cli("simulate", "--port", str(ami_port), "--extensions", spec.extensions)
        + (["--queues"] if spec.queue_rate else []),
        env={"LOG_LEVEL": "WARNING"},
        cpu=server_cpu,
    )
    await wait_for_port(memcached, memcached_port)
    await wait_for_port(simulator, ami_port)
    env = {
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(ami_port),
        "MEMCACHED_URL": f"memcached://127.0.0.1:{memcached_port}",
        "STORE_PREFIX": PREFIX,
        "LOG_LEVEL": "WARNING",
        **dict(spec.server_env),
    }
    if spec.scopes:
        env["EMBED_SECRET"] = EMBED_SECRET
    collector = None
    if spec.collector == "process":
        collector = children.start("collector", app_cli("collect"), env=env, cpu=server_cpu)
        env["COLLECTOR"] = "off"
    argv = app_cli("serve", "--host", "127.0.0.1", "--port", str(web_port), "--workers")
    server = children.start("serve", [*argv, str(spec.workers)], env=env, cpu=server_cpu)
    await wait_until_healthy(server, web_port, spec.workers)
    return Parts(memcached, simulator, server, memcached_port, ami_port, web_port, collector)


async def wait_until_healthy(child: Child, port: int, workers: int) -> None:
    """Every worker answers `/healthz` 200 (PBX linked, store ok, a collector running):
    several answers in a row, since each connection may land on any worker."""
    deadline = time.monotonic() + START_TIMEOUT
    good = 0
    while good < 4 * workers:
        child.check_alive()
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            status, _ = await http_get(port, "/healthz")
            good = good + 1 if status == 200 else 0
        if time.monotonic() > deadline:
            raise RuntimeError(f"the panel did not become healthy:\n{child.log_tail()}")
        await asyncio.sleep(0.05 if good else 0.2)


EMBED_SECRET = "bench-" + "s" * 40  # the server's and the token minter's; loopback only


def scope_tokens(spec: RunSpec, path: Path) -> Path | None:
    """`--scopes K`: K signed embed links whose scopes differ (each names one extension the
    PBX does not have) but show the same tiles, so the viewers get the same bytes as with
    one scope while the server builds K messages per update: what scopes cost the fan-out."""
    if not spec.scopes:
        return None
    from app.auth.tokens import mint_token
    from app.settings import parse_extension_range

    extensions = parse_extension_range(spec.extensions)
    tokens = [
        mint_token(EMBED_SECRET, ttl=6 * 3600, extensions=[*extensions, f"9{k:05d}"])
        for k in range(spec.scopes)
    ]
    path.write_text("\n".join(tokens) + "\n")
    return path


async def start_clients(parts: Parts, spec: RunSpec, tokens: Path | None = None) -> float:
    """Start the client processes and wait until each has its viewers; returns seconds taken."""
    began = time.monotonic()
    shares = [spec.viewers // spec.clients + (i < spec.viewers % spec.clients) for i in range(spec.clients)]
    client_cpu = 1 if spec.pin else None
    for number, share in enumerate(shares):
        client = await ClientProcess.start(
            spec.mode, parts.web_port, share, spec.seed + number, spec.poll_interval, client_cpu, tokens
        )
        parts.clients.append(client)
    timeout = (60.0 + spec.viewers / 50) * TIMEOUT_SCALE
    await asyncio.gather(*(client.wait_ready(timeout) for client in parts.clients))
    return time.monotonic() - began


@contextlib.contextmanager
def profiling(spec: RunSpec, pids: Sequence[int], seconds: float) -> Iterator[None]:
    """py-spy on every server process for the drive window, when --profile is given."""
    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if spec.profile_dir is None or py_spy is None:
        yield
        return
    spec.profile_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in pids:
        out = spec.profile_dir / f"{spec.mode}-n{spec.viewers}-r{spec.rate:g}-w{spec.workers}-{pid}.txt"
        argv = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
        argv += ["--format", "raw", "--nonblocking", "--output", str(out)]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for spy in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(seconds + 10)


async def run_one(spec: RunSpec, log_dir: Path, app_root: Path) -> dict[str, Any]:
    """Start everything, connect the viewers, drive the changes, collect the figures."""
    children = Children(log_dir, cwd=app_root, pin=spec.pin)
    parts: Parts | None = None
    try:
        scopes = f" K={spec.scopes}" if spec.scopes else ""
        progress(f"{spec.mode} N={spec.viewers} R={spec.rate:g} W={spec.workers}{scopes}: starting")
        parts = await start_parts(children, spec)
        progress("server healthy; connecting viewers")
        server_pids = parts.server_pids()
        rss_before = rss_kb(server_pids)
        connect_s = await start_clients(parts, spec, scope_tokens(spec, log_dir / "tokens.txt"))
        progress(f"viewers connected in {connect_s:.1f}s")
        await asyncio.sleep(SETTLE)
        rss_after = rss_kb(server_pids)
        watcher = StoreWatcher(parts.memcached_port)
        watch_task = asyncio.create_task(watcher.run(), name="store-watcher")
        await asyncio.sleep(0.2)  # the watcher's baseline: the snapshot before any change
        driver = await AmiClient.login(parts.ami_port)
        driver.read_replies()  # open loop: the Setvars' replies are read as they come
        plan = plan_changes(extension_list(spec.extensions), int(spec.rate * spec.seconds), spec.seed)
        clients = [c.pid for c in parts.clients]
        watched = [*server_pids, parts.memcached.pid, parts.simulator.pid, *clients, os.getpid()]
        for client in parts.clients:
            await client.tell("start")
        before = await Readings.take(watched, parts.memcached_port)
        ops_before = watcher.ops
        with profiling(spec, server_pids, spec.seconds):
            midway = sessions_midway(driver, spec.seconds / 2)
            sessions_task = asyncio.create_task(midway, name="ami-sessions-midway")
            if spec.queue_rate:  # lamps and pauses side by side, one list of sends in time order
                pauses = plan_pauses(extension_list(spec.extensions), int(spec.queue_rate * spec.seconds))
                (sends, lateness), (paused, _) = await asyncio.gather(
                    drive(driver, plan, spec.rate), drive_pauses(driver, pauses, spec.queue_rate)
                )
                sends = sorted([*sends, *paused], key=lambda send: send.at)
            else:
                sends, lateness = await drive(driver, plan, spec.rate)
            after = await Readings.take(watched, parts.memcached_port)
            after.memcached_ops -= watcher.ops - ops_before
            rss_end = rss_kb(server_pids)
            ami_sessions = await sessions_task
        progress("changes sent; draining")
        await asyncio.sleep(SSE_DRAIN + (spec.poll_interval if spec.mode == "poll" else 0.0))
        peak_rss = {pid: status_kb(pid, "VmHWM") for pid in server_pids}
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, ValueError, IndexError):
            await watch_task
        for client in parts.clients:
            await client.tell("stop")
        await driver.close()
        sends_file = log_dir / "sends.json"
        save_sends(sends_file, sends)
        report_timeout = (60.0 + spec.viewers * spec.rate * spec.seconds / 200_000) * TIMEOUT_SCALE
        reports = await asyncio.gather(*(c.report(sends_file, report_timeout) for c in parts.clients))
        progress("reports in; stopping")
        logs = [parts.server, parts.simulator, *([parts.collector] if parts.collector else [])]
        trouble = [f"{c.name}: {line}" for c in logs for line in c.trouble()]
        return summarize(
            spec,
            parts,
            Window(before, after, sends, lateness, driver.errors, ami_sessions, watcher.latencies(sends)),
            reports,
            Memory(rss_before, rss_after, rss_end, peak_rss),
            connect_s,
            trouble,
        )
    finally:
        if parts is not None:
            await asyncio.gather(*(client.stop() for client in parts.clients))
        children.stop_all()
        progress("stopped")

"""Several web processes, one collector: the memcached lease elects the AMI holder, and
`serve` runs the collector as a child process of its own (`blf-panel collect`)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from app.sim import Simulator
from app.store.memcached import MemcachedStore
from tests.helpers import SseClient, setvar, wait_for_snapshot

EXTENSIONS = [str(n) for n in range(100, 110)]


def env(sim: Simulator, memcached, **more: str) -> dict[str, str]:
    return {
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(sim.port),
        "MEMCACHED_URL": memcached.url,
        "STORE_PREFIX": "w:",
        "LEASE_TTL": "2",
        "AMI_PING_INTERVAL": "1",
        "HEARTBEAT": "1",
        "LOG_LEVEL": "INFO",
        **more,
    }


async def healthy(url: str, timeout: float = 20.0) -> None:
    """Wait for /healthz to say ok (the process is up and sees a live PBX)."""
    async with httpx.AsyncClient() as client, asyncio.timeout(timeout):
        while True:
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)  # another process: nothing of its to await here


# --- processes, from /proc (another process's end cannot be awaited: bounded polls) ---


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def children_of(pid: int) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if parent_of(int(entry.name)) == pid:
                    children.add(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                pass  # ended while we looked
    return children


def command_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


def running(pid: int) -> bool:
    """A zombie counts as ended: an orphan's is not always reaped (PID 1 may not reap)."""
    try:
        os.kill(pid, 0)
        return _stat(pid)[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


async def ended(pid: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if not running(pid):
                return
            await asyncio.sleep(0.05)


async def holder_pid(store: MemcachedStore) -> int:
    """The pid in the collector lease (owner `host:pid:random`)."""
    holder = await store.lease.holder()
    assert holder is not None, "nobody holds the collector lease"
    return int(holder.split(":")[1])


def is_collect_child(pid: int, serve_pid: int) -> bool:
    return parent_of(pid) == serve_pid and command_of(pid)[-2:] == ["app.cli", "collect"]


async def test_two_hosts_one_collector_and_takeover(blf, free_port, memcached) -> None:
    store = MemcachedStore(memcached.host, memcached.port, prefix="w:")
    async with Simulator(EXTENSIONS, port=0) as sim:
        ports = [free_port(), free_port()]
        servers = [
            blf("serve", "--host", "127.0.0.1", "--port", str(port), env=env(sim, memcached))
            for port in ports
        ]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        try:
            for url in urls:
                await healthy(url)
            assert sim.peak_sessions == 1 and sim.logins == 1, "one AMI session for both hosts"
            pid = await holder_pid(store)
            serve_pids = [s.proc.pid for s in servers]
            host = serve_pids.index(parent_of(pid))  # the holder is the collect child of a host
            async with SseClient(f"{urls[host ^ 1]}/events") as stream:
                await stream.next_with('id="ext-109"', timeout=10)
                os.kill(serve_pids[host], signal.SIGSTOP)  # that host freezes: it restarts nothing
                os.kill(pid, signal.SIGKILL)  # and its collector dies without a goodbye
                await wait_for_snapshot(store, lambda s: s["pbx"]["connected"] and sim.logins == 2, 30)
                new_pid = await holder_pid(store)
                assert is_collect_child(new_pid, serve_pids[host ^ 1]), "the other host took over"
                await setvar(sim.port, "Custom:105", "INUSE")
                change = await stream.next_with("state-inuse", timeout=10)
            assert 'id="ext-105" class="tile state-inuse"' in change["data"]
            assert sim.sessions == 1
        finally:
            await store.close()


def workers_of(serve_pid: int) -> list[int]:
    """uvicorn's worker processes (multiprocessing spawn) under serve."""
    return [child for child in children_of(serve_pid) if "--multiprocessing-fork" in command_of(child)]


def resource_tracker_of(serve_pid: int) -> list[int]:
    """multiprocessing's resource tracker, which spawning the workers starts under serve."""
    return [child for child in children_of(serve_pid) if "resource_tracker" in " ".join(command_of(child))]


async def test_workers_2_share_one_ami_session(blf, free_port, memcached) -> None:
    """The collector is neither serve's own process nor a worker but a `collect` child;
    SIGTERM to serve stops all of them."""
    store = MemcachedStore(memcached.host, memcached.port, prefix="w:")
    async with Simulator(EXTENSIONS, port=0) as sim:
        port = free_port()
        serve = blf(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", env=env(sim, memcached)
        )
        url = f"http://127.0.0.1:{port}"
        await healthy(url)
        try:
            pid = await holder_pid(store)
        finally:
            await store.close()
        assert is_collect_child(pid, serve.proc.pid)
        workers = workers_of(serve.proc.pid)
        assert len(workers) == 2 and pid not in workers
        async with SseClient(f"{url}/events") as first, SseClient(f"{url}/events") as second:
            await first.next_with('id="ext-109"', timeout=10)
            await second.next_with('id="ext-109"', timeout=10)
            assert sim.peak_sessions == 1 and sim.logins == 1, "one AMI session for both workers"
            await setvar(sim.port, "Custom:107", "RINGING")  # our own AMI client: a second login
            for stream in (first, second):
                change = await stream.next_with("state-ringing")
                assert 'id="ext-107" class="tile state-ringing"' in change["data"]
        assert sim.logins == 2
        tracker = resource_tracker_of(serve.proc.pid)
        assert serve.terminate(timeout=30) == 0
        for process in (*workers, pid, *tracker):
            await ended(process)


async def test_serve_killed_takes_its_workers_along(blf, free_port, memcached) -> None:
    """SIGKILL of `serve --workers 2`: the workers, which the kernel tells of serve's death
    (PR_SET_PDEATHSIG), the resource tracker and the collector end, and the port is free."""
    store = MemcachedStore(memcached.host, memcached.port, prefix="w:")
    async with Simulator(EXTENSIONS, port=0) as sim:
        port = free_port()
        serve = blf(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", env=env(sim, memcached)
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await healthy(url)
            collector = await holder_pid(store)
        finally:
            await store.close()
        workers, tracker = workers_of(serve.proc.pid), resource_tracker_of(serve.proc.pid)
        assert len(workers) == 2 and len(tracker) == 1
        serve.kill()
        for process in (*workers, *tracker, collector):
            await ended(process)
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{url}/healthz")


async def test_serve_restarts_its_collector_process(blf, free_port, memcached) -> None:
    """A SIGKILLed collector is started again and states flow; SIGTERM to serve stops it."""
    store = MemcachedStore(memcached.host, memcached.port, prefix="w:")
    async with Simulator(EXTENSIONS, port=0) as sim:
        port = free_port()
        serve = blf("serve", "--host", "127.0.0.1", "--port", str(port), env=env(sim, memcached))
        url = f"http://127.0.0.1:{port}"
        try:
            await healthy(url)
            pid = await holder_pid(store)
            assert is_collect_child(pid, serve.proc.pid)
            async with SseClient(f"{url}/events") as stream:
                await stream.next_with('id="ext-109"', timeout=10)
                os.kill(pid, signal.SIGKILL)
                await wait_for_snapshot(store, lambda s: s["pbx"]["connected"] and sim.logins == 2, 30)
                new_pid = await holder_pid(store)
                assert new_pid != pid and is_collect_child(new_pid, serve.proc.pid)
                await setvar(sim.port, "Custom:104", "BUSY")
                change = await stream.next_with("state-busy", timeout=10)
            assert 'id="ext-104" class="tile state-busy"' in change["data"]
        finally:
            await store.close()
        assert serve.terminate(timeout=30) == 0
        await ended(new_pid)
    log = serve.proc.stderr.read()
    assert log.count("restarting it") == 1 and f"{pid} was killed by SIGKILL" in log
    assert "Traceback" not in log


async def test_serve_killed_takes_its_collector_along(blf, free_port, memcached) -> None:
    """Even SIGKILL, which serve cannot act on: the kernel tells the child (PDEATHSIG)."""
    store = MemcachedStore(memcached.host, memcached.port, prefix="w:")
    async with Simulator(EXTENSIONS, port=0) as sim:
        port = free_port()
        serve = blf("serve", "--host", "127.0.0.1", "--port", str(port), env=env(sim, memcached))
        try:
            await healthy(f"http://127.0.0.1:{port}")
            pid = await holder_pid(store)
        finally:
            await store.close()
        assert is_collect_child(pid, serve.proc.pid)
        serve.kill()
        await ended(pid)


async def test_ctrl_c_stops_serve_and_its_collector_once(free_port, memcached) -> None:
    """Ctrl-C signals the whole process group: the collector stops with serve, unrestarted."""
    store = MemcachedStore(memcached.host, memcached.port, prefix="w:")
    async with Simulator(EXTENSIONS, port=0) as sim:
        port = free_port()
        serve = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=Path(__file__).parent.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env(sim, memcached)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a process group of its own, as a shell gives a foreground job
        )
        try:
            await healthy(f"http://127.0.0.1:{port}")
            pid = await holder_pid(store)
            assert is_collect_child(pid, serve.pid)
            os.killpg(serve.pid, signal.SIGINT)
            _, log = await asyncio.wait_for(serve.communicate(), 30)
            assert serve.returncode == 0
            await ended(pid)
        finally:
            await store.close()
            if serve.returncode is None:
                os.killpg(serve.pid, signal.SIGKILL)
                await serve.wait()
    text = log.decode()
    assert text.count("collector process") == 2, text  # started; stopped, not restarted
    assert "restarting it in" not in text and "Traceback" not in text


async def test_serve_without_memcached_keeps_the_collector_inside(blf, free_port) -> None:
    """The in-process store (the embedded demo): one process, no collector child."""
    port = free_port()
    serve = blf(
        "serve", "--host", "127.0.0.1", "--port", str(port), env={"AMI_HOST": "", "MEMCACHED_URL": ""}
    )
    await healthy(f"http://127.0.0.1:{port}")
    assert children_of(serve.proc.pid) == set()


async def test_web_only_host_with_a_separate_collect_process(blf, free_port, memcached) -> None:
    """COLLECTOR=off web host + `blf-panel collect`: the collector holds the lease, so the
    panel says the states are live, and changes flow."""
    async with Simulator(EXTENSIONS, port=0) as sim:
        blf("collect", env=env(sim, memcached))
        port = free_port()
        serve = blf(
            "serve", "--host", "127.0.0.1", "--port", str(port), env=env(sim, memcached, COLLECTOR="off")
        )
        url = f"http://127.0.0.1:{port}"
        await healthy(url)
        assert children_of(serve.proc.pid) == set(), "COLLECTOR=off: no collector process"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/healthz")).json()["collector_running"] is True
        async with SseClient(f"{url}/events") as stream:
            await stream.next_with('id="ext-109"', timeout=10)
            await setvar(sim.port, "Custom:103", "BUSY")
            change = await stream.next_with("state-busy")
        assert 'id="ext-103" class="tile state-busy"' in change["data"]
        assert sim.peak_sessions <= 2 and sim.logins == 2  # the collector and our Setvar

"""Several web processes, one collector: the memcached lease elects the AMI holder."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx

from app.simulator import Simulator
from app.store import MemcachedStore
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
            assert sim.peak_sessions == 1 and sim.logins == 1, "one AMI session for both processes"
            holder = await store.lease_holder()
            assert holder is not None
            pid = int(holder.split(":")[1])
            survivor = urls[[s.proc.pid for s in servers].index(pid) ^ 1]
            async with SseClient(f"{survivor}/events") as stream:
                await stream.next_with('id="ext-109"', timeout=10)
                os.kill(pid, signal.SIGKILL)  # the collector's process dies without a goodbye
                await wait_for_snapshot(store, lambda s: s["pbx"]["connected"] and sim.logins == 2, 20)
                new_holder = await store.lease_holder()
                assert new_holder is not None and int(new_holder.split(":")[1]) != pid
                await setvar(sim.port, "Custom:105", "INUSE")
                change = await stream.next_with("state-inuse", timeout=10)
            assert 'id="ext-105" class="tile state-inuse"' in change["data"]
            assert sim.sessions == 1
        finally:
            await store.close()


async def test_workers_2_share_one_ami_session(blf, free_port, memcached) -> None:
    async with Simulator(EXTENSIONS, port=0) as sim:
        port = free_port()
        blf("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", env=env(sim, memcached))
        url = f"http://127.0.0.1:{port}"
        await healthy(url)
        async with SseClient(f"{url}/events") as first, SseClient(f"{url}/events") as second:
            await first.next_with('id="ext-109"', timeout=10)
            await second.next_with('id="ext-109"', timeout=10)
            assert sim.peak_sessions == 1 and sim.logins == 1, "one AMI session for both workers"
            await setvar(sim.port, "Custom:107", "RINGING")  # our own AMI client: a second login
            for stream in (first, second):
                change = await stream.next_with("state-ringing")
                assert 'id="ext-107" class="tile state-ringing"' in change["data"]
        assert sim.logins == 2


async def test_web_only_host_with_a_separate_collect_process(blf, free_port, memcached) -> None:
    """COLLECTOR=off web host + `blf-panel collect`: the collector holds the lease, so the
    panel says the states are live, and changes flow."""
    async with Simulator(EXTENSIONS, port=0) as sim:
        blf("collect", env=env(sim, memcached))
        port = free_port()
        blf("serve", "--host", "127.0.0.1", "--port", str(port), env=env(sim, memcached, COLLECTOR="off"))
        url = f"http://127.0.0.1:{port}"
        await healthy(url)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/healthz")).json()["collector_running"] is True
        async with SseClient(f"{url}/events") as stream:
            await stream.next_with('id="ext-109"', timeout=10)
            await setvar(sim.port, "Custom:103", "BUSY")
            change = await stream.next_with("state-busy")
        assert 'id="ext-103" class="tile state-busy"' in change["data"]
        assert sim.peak_sessions <= 2 and sim.logins == 2  # the collector and our Setvar

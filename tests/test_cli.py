"""The `blf-panel` commands as real processes: simulate, collect and watch together."""

from __future__ import annotations

import importlib.metadata
import json
import queue
import signal
import threading

import pytest

from app.store.memcached import MemcachedStore
from tests.helpers import AmiClient, wait_for_snapshot


def pbx_env(ami_port: int, memcached_url: str) -> dict[str, str]:
    return {
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(ami_port),
        "MEMCACHED_URL": memcached_url,
        "STORE_PREFIX": "cli:",
        "AMI_PING_INTERVAL": "1",
    }


async def test_simulate_collect_watch(blf, free_port, memcached) -> None:
    port = free_port()
    simulate = blf("simulate", "--port", str(port), "--extensions", "100-109")
    assert "listening" in simulate.proc.stderr.readline() or simulate.proc.poll() is None
    collect = blf("collect", env=pbx_env(port, memcached.url))
    store = MemcachedStore(memcached.host, memcached.port, prefix="cli:")
    try:
        await wait_for_snapshot(store, lambda s: s["pbx"]["connected"] and len(s["extensions"]) == 10, 15)
        watch = blf("watch", env=pbx_env(port, memcached.url))  # live, into a pipe
        head = watch.readline()
        assert head.startswith("PBX connected") and "10 extensions" in head
        client = await AmiClient.login(port)
        try:
            await client.setvar("Custom:105", "INUSE")
        finally:
            await client.close()
        snapshot = await wait_for_snapshot(
            store, lambda s: s["extensions"]["105@ext-local"]["state"] == "inuse"
        )
        assert snapshot["pbx"]["connected"]
        line = watch.readline()
        while "105@ext-local" not in line:
            line = watch.readline()
        assert line.rstrip().endswith("105@ext-local  idle -> inuse")
    finally:
        await store.close()

    once = blf("watch", "--once", env=pbx_env(port, memcached.url))
    out, _ = once.proc.communicate(timeout=15)
    assert once.proc.returncode == 0
    assert "PBX connected" in out and "105 inuse" in " ".join(out.split())

    as_json = blf("watch", "--once", "--json", env=pbx_env(port, memcached.url))
    out, _ = as_json.proc.communicate(timeout=15)
    assert json.loads(out)["extensions"]["105@ext-local"]["state"] == "inuse"

    assert collect.terminate() == 0
    assert simulate.terminate() == 0


def test_watch_once_runs_the_embedded_demo(blf) -> None:
    """No settings at all: the demo PBX, the collector and the table in one process."""
    watch = blf("watch", "--once", env={"AMI_HOST": "", "MEMCACHED_URL": "", "DEMO_EXTENSIONS": "100-149"})
    out, err = watch.proc.communicate(timeout=30)
    assert watch.proc.returncode == 0, err
    head = out.splitlines()[0]
    assert head.startswith("PBX connected") and "50 extensions" in head
    for exten in ("100", "125", "149"):
        assert f" {exten} " in f" {out} "


def test_watch_once_without_a_collector_says_so(blf, memcached) -> None:
    watch = blf("watch", "--once", env={"MEMCACHED_URL": memcached.url, "AMI_HOST": ""})
    _, err = watch.proc.communicate(timeout=15)
    assert watch.proc.returncode == 1
    assert "no snapshot" in err and "Traceback" not in err


def test_watch_once_with_memcached_down(blf, memcached) -> None:
    url = memcached.url
    memcached.stop()
    watch = blf("watch", "--once", env={"MEMCACHED_URL": url, "STORE_TIMEOUT": "0.5"})
    _, err = watch.proc.communicate(timeout=15)
    assert watch.proc.returncode == 1 and "store unreachable" in err and "Traceback" not in err


def test_collect_stops_cleanly_on_sigint(blf, free_port, memcached) -> None:
    collect = blf("collect", env=pbx_env(free_port(), memcached.url))  # no PBX there: retrying
    lines = [collect.proc.stderr.readline() for _ in range(2)]
    assert "holding the collector lease" in lines[0] and "unreachable" in lines[1]
    collect.proc.send_signal(signal.SIGINT)
    assert collect.proc.wait(10) == 0


def test_serve_stops_cleanly_on_sigterm(blf, free_port) -> None:
    """Exit 0, as documented: uvicorn raises the SIGTERM it caught again after its shutdown,
    which must end uvicorn.run (so serve can stop its collector process), not the process."""
    serve = blf("serve", "--port", str(free_port()), env={"AMI_HOST": "", "MEMCACHED_URL": ""})
    while "Application startup complete" not in (line := serve.proc.stderr.readline()):
        assert line, "serve ended before it started"
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(30) == 0
    assert "Traceback" not in serve.proc.stderr.read()


def test_bad_arguments_are_one_line_and_exit_2(blf) -> None:
    simulate = blf("simulate", "--extensions", "100-abc")
    _, err = simulate.proc.communicate(timeout=15)
    assert simulate.proc.returncode == 2 and err.count("\n") == 1 and "--extensions" in err


@pytest.mark.parametrize(
    "args",
    [["serve", "--prot", "8000"], ["watch", "--prot"], ["collect", "extra"], ["serve", "--port", "abc"]],
)
def test_a_bad_option_of_a_command_shows_that_commands_usage(blf, args: list[str]) -> None:
    """argparse showed the top-level usage for `serve --prot`: no help at all for serve."""
    process = blf(*args)
    out, err = process.proc.communicate(timeout=15)
    assert process.proc.returncode == 2 and out == ""
    usage, error = err.splitlines()
    assert usage.startswith(f"usage: blf-panel {args[0]} [-h]")
    assert error.startswith(f"blf-panel {args[0]}: error: ") and args[1] in error


def test_version(blf) -> None:
    process = blf("--version")
    out, err = process.proc.communicate(timeout=15)
    assert process.proc.returncode == 0 and err == ""
    assert out == f"blf-panel {importlib.metadata.version('blf-panel')}\n"


def stderr_lines(process) -> queue.Queue[str]:
    """The process's stderr lines as they come, from a thread: `get(timeout=...)` fails
    instead of hanging (a select on the pipe misses lines already in the reader's buffer)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.proc.stderr], daemon=True).start()
    return lines


def test_collect_says_memcached_is_unreachable_and_starts_when_it_is_back(blf, free_port, memcached) -> None:
    """It printed nothing and never logged in: now one line for the outage, one when it is
    back, then the lease is taken (and the collector tries the PBX)."""
    memcached.stop()
    env = {**pbx_env(free_port(), memcached.url), "STORE_TIMEOUT": "0.5", "LEASE_TTL": "2"}
    collect = blf("collect", env=env)
    lines = stderr_lines(collect)
    first = lines.get(timeout=10)
    assert "store unreachable" in first and f"127.0.0.1:{memcached.port}" in first, first
    memcached.start()
    assert "store reachable again" in lines.get(timeout=10)
    assert "holding the collector lease" in lines.get(timeout=10)
    collect.proc.send_signal(signal.SIGINT)
    assert collect.proc.wait(10) == 0
    rest = []
    while (line := lines.get(timeout=10)) and "stopped" not in line:  # its last line
        rest.append(line)
    assert not [line for line in rest if "store unreachable" in line], "one line per outage"

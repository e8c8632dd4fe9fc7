"""`blf-panel check` (app/check.py): in this process against the simulator's restricted
manager users and a real memcached, and as a real process for its exit codes and one-line
errors."""

from __future__ import annotations

import asyncio
import io

from app.check import run_check
from app.settings import Settings, load_settings
from app.sim import Simulator
from app.sim.users import ManagerUser
from tests.helpers import LogWatch

EXTENSIONS = [str(n) for n in range(100, 110)]
LAMP_FILTERS = ("eventfilter = Event: ExtensionStatus", "eventfilter = Event: DeviceStateChange")
WAITING = "waiting up to"  # the check logs it when it starts waiting for events


def settings_for(port: int, memcached_url: str = "") -> Settings:
    environ = {"AMI_HOST": "127.0.0.1", "AMI_PORT": str(port), "MEMCACHED_URL": memcached_url}
    return load_settings(environ, env_file=None)


def rows(table: str) -> dict[str, str]:
    """capability -> the rest of its line, from the printed table."""
    lines = table.splitlines()
    width = lines[0].index("status")
    return {line[:width].strip(): line[width:] for line in lines[1 : lines.index("")]}


async def check_while(sim: Simulator, settings: Settings, logs: LogWatch, wait: float) -> tuple[int, str]:
    """Run the check; once it waits for events, change a lamp, a presence and start a call."""
    out = io.StringIO()
    check = asyncio.create_task(run_check(settings, wait=wait, out=out, grace=0.2), name="check-under-test")
    try:
        await logs.wait_for(WAITING)
        sim.set_device_state("Custom:100", "INUSE")
        sim.set_presence("101", "dnd", "meeting", "In a meeting")
        sim.place_call("102", "103")
        code = await check
    finally:
        check.cancel()
    return code, out.getvalue()


async def test_the_stack_notes_user_is_shown_what_it_lacks(memcached, logs: LogWatch) -> None:
    """read = call, write = reporting, the two lamp filters: the lamps work; presence and calls
    are proven missing (the PBX's own lists changed, their events never came), with the fix."""
    user = ManagerUser("blf", "blfsecret", read="call", write="reporting", eventfilters=LAMP_FILTERS)
    async with Simulator(EXTENSIONS, users=[user]) as sim:
        code, table = await check_while(sim, settings_for(sim.port, memcached.url), logs, wait=1.5)
    found = rows(table)
    assert code == 1
    for ok in (
        "Ping",
        "ExtensionStateList",
        "DeviceStateList",
        "CoreShowChannels",
        "DBGet",
    ):
        assert found[ok].split() == ["ok"], (ok, table)
    assert found["ExtensionStatus"].split() == found["memcached"].split() == ["ok"]
    assert found["PJSIPShowEndpoint"].startswith("missing (optional)")
    assert "add system to the `write =` line of [blf] in manager.conf" in found["PJSIPShowEndpoint"]
    assert found["presence events"].startswith("missing ")
    assert found["presence events"].endswith(
        "add to [blf] in manager.conf: eventfilter = Event: PresenceStateChange; "
        "eventfilter = Event: PresenceStatus"
    )
    assert found["channel events"].startswith("missing ") and "eventfilter = Event: Newchannel" in table
    assert found["FullyBooted"].startswith("not seen")  # read = call: no system events at all
    assert "channel events: none arrived while 2 item(s) of CoreShowChannels changed" in table
    assert table.rstrip().splitlines()[-1].startswith("2 things the panel needs are missing")


async def test_a_user_that_may_not_read_call_events(logs: LogWatch) -> None:
    """read = system: no call event at all arrives, so the fix is the read line, not a filter."""
    user = ManagerUser("blf", "blfsecret", read="system", write="reporting")
    async with Simulator(EXTENSIONS, users=[user]) as sim:
        code, table = await check_while(sim, settings_for(sim.port), logs, wait=1.5)
    found = rows(table)
    assert code == 1
    assert found["FullyBooted"].split() == ["ok"]
    for name in ("ExtensionStatus", "DeviceStateChange", "presence events", "channel events"):
        assert found[name].startswith("missing ") and "add call to the `read =` line of [blf]" in found[name]
    assert found["memcached"].startswith("not used")


async def test_nothing_happening_is_not_seen_and_does_not_fail(logs: LogWatch) -> None:
    async with Simulator(EXTENSIONS) as sim:
        out = io.StringIO()
        code = await run_check(settings_for(sim.port), wait=0.2, out=out, grace=0.2)
    found = rows(out.getvalue())
    assert code == 0
    assert found["ExtensionStatus"].startswith("not seen") and found["channel events"].startswith("not seen")
    assert "make a call while `blf-panel check --wait 60` runs" in found["channel events"]
    assert "6 kinds of event not seen" in out.getvalue()  # + queue events, Reload


async def test_memcached_down_fails_the_check(memcached, logs: LogWatch) -> None:
    url = memcached.url
    memcached.stop()
    async with Simulator(EXTENSIONS) as sim:
        out = io.StringIO()
        code = await run_check(settings_for(sim.port, url), wait=0, out=out, grace=0)
    assert code == 1
    assert rows(out.getvalue())["memcached"].startswith("missing")
    assert f"start memcached at 127.0.0.1:{memcached.port}, or correct MEMCACHED_URL" in out.getvalue()


# --- the command, as a real process ---


def test_check_command_against_a_busy_simulator(blf, free_port, memcached) -> None:
    """Every capability of a full user shows as it happens (churn makes calls, lamps,
    presence changes, callers through the demo queues and agents pausing). Nobody reloads
    app_queue, so that kind alone stays "not seen", which does not fail the check."""
    port = free_port()
    simulate = blf("simulate", "--port", str(port), "--extensions", "100-119", "--churn", "50")
    assert "simulated Asterisk on" in simulate.proc.stderr.readline()  # it listens
    env = {"AMI_HOST": "127.0.0.1", "AMI_PORT": str(port), "MEMCACHED_URL": memcached.url}
    check = blf("check", "--wait", "15", env=env)
    out, err = check.proc.communicate(timeout=60)
    assert check.proc.returncode == 0, (out, err)
    table = out.splitlines()[1 : out.splitlines().index("")]
    unseen = [line for line in table if "not seen" in line]
    assert all(line.split()[-1] == "ok" for line in table if line not in unseen), out
    assert [line.split()[0] for line in unseen] == ["Reload"], out
    assert "everything the panel needs works" in out


def test_check_command_says_in_one_line_why_it_cannot_start(blf, free_port) -> None:
    port = free_port()
    unreachable = blf("check", env={"AMI_HOST": "127.0.0.1", "AMI_PORT": str(port)})
    _, err = unreachable.proc.communicate(timeout=30)
    assert unreachable.proc.returncode == 1
    assert err == f"blf-panel: cannot reach the PBX at 127.0.0.1:{port}: connection refused\n"

    simulate = blf("simulate", "--port", str(port), "--extensions", "100-101")
    assert "simulated Asterisk on" in simulate.proc.stderr.readline()  # it listens
    refused = blf("check", env={"AMI_HOST": "127.0.0.1", "AMI_PORT": str(port), "AMI_SECRET": "wrong"})
    _, err = refused.proc.communicate(timeout=30)
    assert refused.proc.returncode == 1
    assert err.startswith(f"blf-panel: AMI login refused for user 'blf' at 127.0.0.1:{port} ")
    assert err.count("\n") == 1

    demo = blf("check", env={"AMI_HOST": ""})
    _, err = demo.proc.communicate(timeout=30)
    assert demo.proc.returncode == 2 and err.startswith("blf-panel: check needs AMI_HOST")

"""The collector's login-time report (Collector._check_capabilities): one log line per
capability its AMI user lacks, what is lost, why and the fix, at every login; against the
simulator's restricted manager users over real TCP."""

from __future__ import annotations

import contextlib
import logging

from app.ami import AmiTarget
from app.collector import Collector
from app.sim import Simulator
from app.sim.users import ManagerUser
from app.store import MemoryStore
from app.tasks import background
from tests.helpers import LogWatch, wait_for_snapshot

EXTENSIONS = [str(n) for n in range(100, 110)]
LAMP_FILTERS = ("eventfilter = Event: ExtensionStatus", "eventfilter = Event: DeviceStateChange")
PICTURE = "AMI full picture"  # logged after the capabilities, once the lists are in


def target(port: int, events: str = "call,agent") -> AmiTarget:
    timings = dict(ping_interval=0.3, ping_timeout=0.3, reconnect_max=0.5, auth_retry=0.3, boot_wait=1.0)
    return AmiTarget("127.0.0.1", port, "blf", "blfsecret", events=events, **timings)


def capability_lines(logs: LogWatch) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in logs.records
        if r.name == "app.collector" and " unavailable: " in r.getMessage()
    ]


@contextlib.asynccontextmanager
async def collecting(user: ManagerUser, events: str = "call,agent"):
    store = MemoryStore()
    async with Simulator(EXTENSIONS, users=[user]) as sim:
        collector = Collector(target(sim.port, events), store)
        async with background(collector.run(), "collector-under-test"):
            yield sim, store
    await store.close()


async def test_the_stack_notes_user_is_told_what_it_lacks_at_every_login(logs: LogWatch) -> None:
    """read = call, write = reporting and the two lamp filters (STACK-NOTES): the lamps work;
    the only action it may not run is PJSIPShowEndpoint, said once per login."""
    user = ManagerUser("blf", "blfsecret", read="call", write="reporting", eventfilters=LAMP_FILTERS)
    async with collecting(user) as (sim, store):
        await logs.wait_for(PICTURE)
        await wait_for_snapshot(store, lambda s: s["pbx"]["connected"] and len(s["extensions"]) == 10)
        assert capability_lines(logs) == [
            (
                logging.INFO,  # optional: DIRECTORY_FILE can name everyone
                "AMI names from the PBX's PJSIP endpoints (their caller ID) unavailable: "
                "PJSIPShowEndpoint refused for AMI user 'blf' (Permission denied); fix: add system to "
                "the `write =` line of [blf] in manager.conf (DIRECTORY_FILE can give the names instead)",
            )
        ]
        await sim.restart()
        await logs.wait_for(PICTURE, count=2)
    assert len(capability_lines(logs)) == 2


async def test_a_user_without_reporting_loses_the_calls_at_login(logs: LogWatch) -> None:
    user = ManagerUser("blf", "blfsecret", read="call", write="call")
    async with collecting(user):
        await logs.wait_for(PICTURE)
    lines = capability_lines(logs)
    assert [message.split(" unavailable: ")[1].split(" refused")[0] for _, message in lines] == [
        "CoreShowChannels",
        "PJSIPShowEndpoint",
        "DBGet",
    ]
    assert lines[0] == (
        logging.WARNING,
        "AMI calls already in progress at login (shown only from their next change) unavailable: "
        "CoreShowChannels refused for AMI user 'blf' (Permission denied); fix: add reporting to the "
        "`write =` line of [blf] in manager.conf",
    )


async def test_a_user_with_every_class_hears_nothing(logs: LogWatch) -> None:
    async with collecting(ManagerUser("blf", "blfsecret")):
        await logs.wait_for(PICTURE)
    assert capability_lines(logs) == []


async def test_events_the_login_does_not_ask_for(logs: LogWatch) -> None:
    """AMI_EVENTS=system: Asterisk sends no call event at all, whatever the user may read."""
    async with collecting(ManagerUser("blf", "blfsecret"), events="system"):
        await logs.wait_for(PICTURE)
    lines = capability_lines(logs)
    assert len(lines) == 5 and {level for level, _ in lines} == {logging.WARNING}
    assert lines[0][1] == (
        "AMI lamp changes (every lamp stays as it was at login) unavailable: the login asks for "
        "`Events: system` (AMI_EVENTS), without call; fix: set AMI_EVENTS=call,agent"
    )

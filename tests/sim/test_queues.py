"""The simulator's queues (app/sim/queues.py): QueueStatus, QueuePause, QueueAdd, QueuePenalty,
QueueRemove, QueueSummary and the member events, byte for byte against transcripts 05 and 17;
a queue call's events in order; the actions' classes as app_queue.c registers them."""

from __future__ import annotations

import re

from app.sim import Simulator
from app.sim.queue_model import member_bucket
from app.sim.users import ManagerUser
from tests.sim.support import Connect, client_frames, fixture, messages, normalize, parse, replay

# Epoch seconds that differ between any two runs: when a member logged in or paused.
TIMES_RE = re.compile(rb"^(LoginTime|LastPause|LastCall): [1-9][0-9]*", re.M)
SUPPORT = [
    ("PJSIP/100", "Alice 100", "PJSIP/100"),
    ("Local/101@blf-queue/n", "Bob 101", "PJSIP/101"),
    ("Local/102@blf-queue/n", "Carol 102", "Custom:102"),
]


def times_blanked(data: bytes) -> bytes:
    return TIMES_RE.sub(rb"\1: *", normalize(data))


def recorded_pbx(registered: bool) -> Simulator:
    """The recording's PBX: hints 100, 101 (their devices are PJSIP/..., no ExtensionStatus
    here), queue `support` with its three static members; 100 and 101 registered from 13 on."""
    pbx = Simulator(["100", "101"], context="blf")
    for device in ("PJSIP/100", "PJSIP/101"):
        pbx.set_device_state(device, "NOT_INUSE" if registered else "UNAVAILABLE")
    pbx.set_device_state("PJSIP/103", "UNAVAILABLE")
    pbx.queues.add_queue("support", SUPPORT)
    return pbx


def test_members_list_in_asterisks_hash_bucket_order() -> None:
    """member_hash_fn over 37 buckets: Dave (7), Carol (8), Bob (9), Alice (23), as listed."""
    buckets = [member_bucket(i) for i in ("Local/103@blf-queue/n", *(m[0] for m in SUPPORT[::-1]))]
    assert buckets == sorted(buckets) == [7, 8, 9, 23]


async def test_queuestatus_matches_transcript_05(connect: Connect) -> None:
    async with recorded_pbx(registered=False) as pbx:
        client = await connect(pbx)
        ours = await replay(client, client_frames("05-queuestatus.client.txt"))
        assert times_blanked(ours) == times_blanked(fixture("05-queuestatus.txt"))


async def test_pause_add_penalty_remove_summary_match_transcript_17(connect: Connect) -> None:
    async with recorded_pbx(registered=True) as pbx:
        client = await connect(pbx)
        frames = client_frames("17-queue-pause-add-remove.client.txt")
        *actions, summary, logoff = frames
        await client.send_raw(b"".join(actions))
        for _ in range(13):  # up to the error of QueuePause PJSIP/999: every reply read
            while not (await client.read()).startswith(b"Response: Error"):
                pass
            break
        for state in ("INUSE", "NOT_INUSE", "UNAVAILABLE", "NOT_INUSE"):  # the CLI stimuli
            pbx.set_device_state("Custom:102", state)
        ours = await replay(client, [summary, logoff])
        assert times_blanked(ours) == times_blanked(fixture("17-queue-pause-add-remove.txt"))
        reasons = [dict(parse(m)).get("PausedReason") for m in messages(ours) if b"QueueMemberPause" in m]
        assert reasons == ["lunch", "", "break", ""]


async def test_a_queue_call_walks_join_ring_connect_complete(connect: Connect) -> None:
    async with Simulator(["100", "101"], context="blf") as pbx:
        pbx.queues.add_queue("sales", [("Local/100@from-queue/n", "Anna", "Custom:100")])
        client = await connect(pbx)
        await client.login(events="call,agent")
        entry = pbx.queues.join("sales", "+4930123456", "Max Caller")
        pbx.queues.ring("sales", entry)
        pbx.queues.connect("sales", entry)
        pbx.queues.complete("sales", entry)
        await client.send("Ping", ActionID="p")
        while b"Ping: Pong" not in await client.read():  # everything before the Pong is in
            pass
        names = [dict(parse(m))["Event"] for m in messages(bytes(client.received)) if m.startswith(b"Event:")]
        queue_events = [n for n in names if n.startswith(("Queue", "Agent"))]
        assert queue_events == [
            "QueueCallerJoin",
            "AgentCalled",
            "QueueMemberStatus",  # Custom:100 RINGING
            "QueueMemberStatus",  # INUSE
            "QueueCallerLeave",
            "AgentConnect",
            "AgentComplete",
            "QueueMemberStatus",  # NOT_INUSE again
        ]
        assert names.index("AgentCalled") < names.index("DialBegin") < names.index("AgentConnect")
        status = await client.action("QueueStatus", Queue="sales", ActionID="s")
        member = next(m for m in [status, *await client.read_many(2)] if m.startswith(b"Event: QueueMember"))
        assert dict(parse(member))["CallsTaken"] == "1" and dict(parse(member))["InCall"] == "0"


async def test_an_abandoned_caller_counts_and_leaves(connect: Connect) -> None:
    async with Simulator(["100"], context="blf") as pbx:
        pbx.queues.add_queue("sales", [("PJSIP/100", "Anna", "Custom:100")])
        client = await connect(pbx)
        await client.login(events="agent")
        first = pbx.queues.join("sales", "+4930111111", "First")
        pbx.queues.join("sales", "+4930222222", "Second")
        pbx.queues.abandon("sales", first)
        got = [dict(parse(await client.read())) for _ in range(4)]
        assert [g["Event"] for g in got] == [
            "QueueCallerJoin",
            "QueueCallerJoin",
            "QueueCallerAbandon",
            "QueueCallerLeave",
        ]
        assert (got[2]["Position"], got[2]["OriginalPosition"]) == ("1", "1")
        assert (got[3]["Position"], got[3]["Count"]) == ("1", "1")
        assert pbx.queues.queues["sales"].abandoned == 1


async def test_queue_changes_need_the_agent_class(connect: Connect) -> None:
    """app_queue.c registers QueueStatus/QueueSummary for everyone, QueuePause & co for `agent`."""
    user = ManagerUser("reader", "secret", read="call", write="reporting")
    async with Simulator(["100"], context="blf", users=[user]) as pbx:
        pbx.queues.add_queue("sales", [("PJSIP/100", "Anna", "Custom:100")])
        client = await connect(pbx)
        await client.send("Login", Username="reader", Secret="secret")
        await client.read()
        assert (await client.action("QueueSummary")).startswith(b"Response: Success")
        assert (await client.read_many(2))[1].startswith(b"Event: QueueSummaryComplete")
        denied = await client.action("QueuePause", Interface="PJSIP/100", Paused="true")
        assert dict(parse(denied))["Message"] == "Permission denied"

"""Queues from the PBX to the store (app/queues.py, the collector, the snapshot): the Asterisk
22.10.1 transcripts replayed through the parser, members mapped to extensions, hostile names,
and the simulator's queues followed live by a real collector into the store."""

from __future__ import annotations

import asyncio
import json
import zlib
from pathlib import Path

import pytest

from app.ami import AmiProtocol, AmiTarget
from app.collector import Collector
from app.queues import QUEUE_EVENTS, STATUS_ITEMS, QueueBook, member_keys
from app.sim import Simulator
from app.sim.wire import SYSTEM
from app.snapshot import PbxPicture
from app.states import ExtensionState, HintIndex, InvalidFrame
from app.store import MemoryStore
from app.tasks import background
from tests.helpers import wait_for_snapshot

TRANSCRIPTS = Path(__file__).parent / "fixtures" / "ami"
# The recording's hints (tests/fixtures/ami/README.md): 100..104 => PJSIP/10X.
INDEX = HintIndex(
    ExtensionState(str(n), "blf", f"PJSIP/{n},CustomPresence:{n}", 0, "idle") for n in range(100, 105)
)


class _Null(asyncio.Transport):
    def write(self, data: bytes) -> None:  # pragma: no cover
        pass


def replayed(name: str) -> list[dict[str, str]]:
    """The queue frames of a transcript, framed by the collector's own protocol."""
    protocol, seen = AmiProtocol(), []
    protocol.connection_made(_Null())
    protocol.handle_message = lambda message: seen.append(dict(message))  # type: ignore[method-assign]
    protocol.data_received((TRANSCRIPTS / name).read_bytes())
    return [m for m in seen if m.get("Event") in QUEUE_EVENTS | STATUS_ITEMS]


def members(book: QueueBook, queue: str = "support") -> dict[str, dict[str, object]]:
    return {m["name"]: m for m in book.as_json(queue, INDEX, show_numbers=True)["members"]}  # type: ignore[misc]


def test_transcript_05_gives_the_members_and_their_extensions() -> None:
    book = QueueBook()
    names, problems = book.replace_all(replayed("05-queuestatus.txt"), 1795706500.0)
    assert names == {"support"} and problems == []
    got = members(book)
    assert {n: (m["extension"], m["membership"], m["status"]) for n, m in got.items()} == {
        "Alice 100": ("100@blf", "static", "unavailable"),
        "Bob 101": ("101@blf", "static", "unavailable"),  # Local/101@blf-queue/n, StateInterface PJSIP/101
        "Carol 102": ("102@blf", "static", "unknown"),  # Local/102@..., Custom:102 in no hint
    }
    assert book.as_json("support", INDEX, show_numbers=True)["strategy"] == "ringall"


def test_transcript_17_pauses_reasons_and_membership_step_by_step() -> None:
    book, seen = QueueBook(), []
    for frame in replayed("17-queue-pause-add-remove.txt"):
        book.apply(frame, 1795706700.0)
        if frame["Event"].startswith("QueueMember") and frame["Event"] != "QueueMember":
            shown = members(book)
            seen.append(
                (frame["Event"], {n: (m["paused"], m["reason"], m["penalty"]) for n, m in shown.items()})
            )
    pauses = [(e, s["Alice 100"][:2], s["Bob 101"][:2]) for e, s in seen if e == "QueueMemberPause"]
    assert pauses == [
        ("QueueMemberPause", (True, "lunch"), (False, "")),
        ("QueueMemberPause", (False, ""), (False, "")),
        ("QueueMemberPause", (False, ""), (True, "break")),
        ("QueueMemberPause", (False, ""), (False, "")),
    ]
    added = dict(seen)["QueueMemberAdded"]
    assert added["Dave 103"] == (False, "", 1) and dict(seen)["QueueMemberPenalty"]["Dave 103"][2] == 3
    assert "Dave 103" not in dict(seen)["QueueMemberRemoved"]
    dave = next(f for f in replayed("17-queue-pause-add-remove.txt") if f["Event"] == "QueueMemberAdded")
    assert member_keys(INDEX, dave["Interface"], dave["StateInterface"]) == ["103@blf"]
    assert [m["status"] for m in members(book).values()] == ["not_inuse", "not_inuse", "not_inuse"]


def test_extension_json_carries_its_queues_with_the_pause() -> None:
    picture = PbxPicture(started_at=0.0)
    for n in (100, 101):
        picture.apply(ExtensionState(str(n), "blf", f"PJSIP/{n}", 0, "idle"), 1.0)
    book = QueueBook()
    for frame in replayed("17-queue-pause-add-remove.txt")[:6]:  # up to Alice's pause (lunch)
        book.apply(frame, 2.0)
    assert picture.show_queues(book, {"support"}, 2.0, show_numbers=True)
    snapshot = json.loads(picture.publication(1, 3.0, full=True).snapshot)
    assert snapshot["extensions"]["100@blf"]["queues"] == [
        {"queue": "support", "paused": True, "reason": "lunch", "paused_since": 1795706606}
    ]
    assert snapshot["extensions"]["101@blf"]["queues"][0]["paused"] is False
    assert snapshot["queues"]["support"]["version"] == 1


def test_hostile_queue_and_member_names() -> None:
    book = QueueBook()
    with pytest.raises(InvalidFrame):
        book.apply(
            {"Event": "QueueMemberAdded", "Queue": "sup port\u202e<script>", "Interface": "PJSIP/100"}, 0.0
        )
    book.apply(
        {
            "Event": "QueueMemberPause",
            "Queue": "support",
            "Interface": "PJSIP/100",
            "MemberName": "Eve\u202e\u200b <b>\x07 Evil",
            "Paused": "1",
            "PausedReason": "lunch\r\nEvent: Fake",
        },
        0.0,
    )
    member = book.as_json("support", INDEX, show_numbers=True)["members"][0]
    assert member["name"] == "Eve <b> Evil" and member["reason"] == "lunch Event: Fake"
    assert list(book.queues) == ["support"]


def test_callers_hide_outside_numbers_under_the_number_rule() -> None:
    book = QueueBook()
    for number in ("+4930123456", "101"):
        book.apply(
            {
                "Event": "QueueCallerJoin",
                "Queue": "q",
                "Uniqueid": number,
                "Position": "1",
                "CallerIDNum": number,
                "CallerIDName": "X",
            },
            5.0,
        )
    callers = book.as_json("q", INDEX, show_numbers=False)["callers"]
    assert [c["number"] for c in callers] == ["", "101"]  # an extension stays visible
    assert book.as_json("q", INDEX, show_numbers=False)["longest_since"] == 5.0


def test_fifty_queues_of_200_members_and_100_callers_fit_memcached(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 12 item 6: the snapshot, compressed as the store does, stays under 1 MB."""
    picture, book = PbxPicture(started_at=0.0), QueueBook()
    for n in range(1000, 3000):
        picture.apply(ExtensionState(str(n), "ext-local", f"PJSIP/{n}", 0, "idle"), 1.0)
    for q in range(50):
        for m in range(200):
            exten = 1000 + (q * 37 + m) % 2000
            book.apply(
                {
                    "Event": "QueueMemberAdded",
                    "Queue": f"queue{q}",
                    "Interface": f"Local/{exten}@from-queue/n",
                    "StateInterface": f"PJSIP/{exten}",
                    "MemberName": f"Agent Name {exten}",
                    "Membership": "dynamic",
                    "Paused": str(m % 3 == 0 and 1 or 0),
                    "PausedReason": "after-call work",
                    "LastPause": "1795706606",
                    "Status": "1",
                },
                1.0,
            )
        for c in range(100):
            book.apply(
                {
                    "Event": "QueueCallerJoin",
                    "Queue": f"queue{q}",
                    "Uniqueid": f"1795706606.{q * 100 + c}",
                    "Position": str(c + 1),
                    "CallerIDNum": f"+4930{q:03d}{c:05d}",
                    "CallerIDName": "Caller Name",
                },
                2.0,
            )
    picture.show_queues(book, set(book.queues), 2.0, show_numbers=True)
    snapshot = picture.publication(1, 3.0, full=True).snapshot
    packed = zlib.compress(snapshot)
    with capsys.disabled():
        print(
            f"\n50x200 members, 50x100 callers, 2,000 extensions: "
            f"{len(snapshot):,} B JSON, {len(packed):,} B zlib"
        )
    assert len(packed) < 1_000_000


async def test_a_pause_and_a_queue_call_reach_the_store_and_a_reload_resyncs() -> None:
    store = MemoryStore()
    async with Simulator(["100", "101"], context="blf") as sim:
        sim.queues.add_queue(
            "support", [("Local/100@from-queue/n", "Anna", "Custom:100"), ("PJSIP/101", "Ben", "Custom:101")]
        )
        target = AmiTarget("127.0.0.1", sim.port, "blf", "blfsecret", ping_interval=0.3, ping_timeout=0.3)
        collector = Collector(target, store, show_numbers=False)
        async with background(collector.run(), "collector-under-test"):
            snap = await wait_for_snapshot(store, lambda s: "support" in s.get("queues", {}))
            assert [m["extension"] for m in snap["queues"]["support"]["members"]] == ["100@blf", "101@blf"]
            queue = sim.queues.queues["support"]
            sim.queues.set_paused(queue, queue.members[0], True, "lunch")
            snap = await wait_for_snapshot(store, lambda s: s["extensions"]["100@blf"]["queues"][0]["paused"])
            assert snap["extensions"]["100@blf"]["queues"][0]["reason"] == "lunch"
            entry = sim.queues.join("support", "+4930123456", "Max")
            snap = await wait_for_snapshot(store, lambda s: s["queues"]["support"]["callers"])
            assert snap["queues"]["support"]["callers"][0]["number"] == ""  # SHOW_CALLER_NUMBERS=off
            sim.queues.ring("support", entry)  # Ben only: Anna is paused
            snap = await wait_for_snapshot(store, lambda s: s["queues"]["support"]["members"][1]["ringing"])
            sim.queues.connect("support", entry)
            snap = await wait_for_snapshot(store, lambda s: s["queues"]["support"]["members"][1]["in_call"])
            assert snap["queues"]["support"]["callers"] == []
            sim.queues.complete("support", entry)
            snap = await wait_for_snapshot(store, lambda s: s["queues"]["support"]["completed"] == 1)
            assert snap["queues"]["support"]["members"][1]["calls_taken"] == 1
            # A reload that changed members without an event: only `Reload` says so.
            queue.members.pop(0)
            sim.emit(
                SYSTEM, b"Event: Reload\r\nPrivilege: system,all\r\nModule: app_queue.so\r\nStatus: 0\r\n\r\n"
            )
            snap = await wait_for_snapshot(store, lambda s: len(s["queues"]["support"]["members"]) == 1)
            assert snap["extensions"]["100@blf"]["queues"] == []
            assert collector.logins == 1
    await store.close()

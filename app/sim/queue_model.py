"""The state app_queue keeps: queues, members (static, dynamic) and callers waiting, with
Asterisk's member order. Do not break: members list in ao2 hash-bucket order (transcripts 05, 17)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.sim.calls import Bridge, Channel, Party
from app.sim.wire import EVENT_CLASSES, Header, action_id_header, encode
from app.states import DEVICE_STATES

AGENT = EVENT_CLASSES["agent"]
_AGENT_CLASS: Header = ("Privilege", "agent,all")
_CODE = {name: code for code, name in enumerate(DEVICE_STATES)}  # enum ast_device_state
_BUCKETS = 37  # init_queue(): ao2_container_alloc_hash(..., 37, member_hash_fn, ...)
_LINEAR = ("linear", "rrordered")  # these keep members in a list, in the order added
_IN_USE = ("INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD")


def member_bucket(interface: str) -> int:
    """app_queue.c member_hash_fn(): the first 5 characters from the `/`, 6 bits each
    (compress_char), in a 37-bucket table; iteration goes bucket by bucket."""
    slash = interface.find("/")
    name = interface[slash:] if slash >= 0 else interface
    total = 0
    for i, char in enumerate(name[:5]):
        code = ord(char)
        total += (0 if code < 32 else code - 64 if code > 96 else code - 32) << (i * 6)
    return total % _BUCKETS


@dataclass(eq=False)
class Member:
    interface: str
    name: str
    state_interface: str
    dynamic: bool = False
    penalty: int = 0
    calls: int = 0
    lastcall: int = 0
    lastpause: int = 0
    logintime: int = field(default_factory=lambda: int(time.time()))
    incall: bool = False
    status: int = 0
    paused: bool = False
    reason: str = ""
    ringinuse: int = 0
    wrapuptime: int = 0

    def fields(self, queue: str, item: bool) -> list[Header]:
        """queue_member_blob_create() for events; manager_queues_status()'s QueueMember for a
        list `item` (Name/Location, no Ringinuse)."""
        head: list[Header] = (
            [("Queue", queue), ("Name", self.name), ("Location", self.interface)]
            if item
            else [("Queue", queue), ("MemberName", self.name), ("Interface", self.interface)]
        )
        return [
            *head,
            ("StateInterface", self.state_interface),
            ("Membership", "dynamic" if self.dynamic else "static"),
            ("Penalty", self.penalty),
            ("CallsTaken", self.calls),
            ("LastCall", self.lastcall),
            ("LastPause", self.lastpause),
            ("LoginTime", self.logintime),
            ("InCall", int(self.incall)),
            ("Status", self.status),
            ("Paused", int(self.paused)),
            ("PausedReason", self.reason),
            *([] if item else [("Ringinuse", self.ringinuse)]),
            ("Wrapuptime", self.wrapuptime),
        ]

    @property
    def available(self) -> bool:
        """is_member_available() without wrap-up times."""
        state = DEVICE_STATES[self.status]
        if state in ("INVALID", "UNAVAILABLE") or (state in _IN_USE and not self.ringinuse):
            return False
        return not self.paused


@dataclass(eq=False)
class Entry:
    """A caller waiting in a queue (struct queue_ent)."""

    channel: Channel
    start: float
    original_position: int
    agents: list[tuple[Member, Channel]] = field(default_factory=list)  # ringing now
    agent: tuple[Member, Channel] | None = None  # who answered
    bridge: Bridge | None = None
    connected_at: float = 0.0
    party: Party | None = None


@dataclass(eq=False)
class Queue:
    name: str
    strategy: str = "ringall"
    servicelevel: int = 0  # queues.conf servicelevel, seconds (Asterisk's default: 0)
    members: list[Member] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    holdtime: int = 0
    talktime: int = 0
    completed: int = 0
    abandoned: int = 0
    completed_in_sl: int = 0
    abandoned_in_sl: int = 0

    def ordered(self) -> list[Member]:
        if self.strategy in _LINEAR:
            return list(self.members)
        return sorted(self.members, key=lambda m: member_bucket(m.interface))  # stable in a bucket

    def member(self, interface: str) -> Member | None:
        """member_cmp_fn(): interfaces compared without case."""
        return next((m for m in self.members if m.interface.lower() == interface.lower()), None)

    def params(self, action_id: str) -> bytes:
        done, abandoned = self.completed, self.abandoned
        sl = 100 * self.completed_in_sl / done if done else 0.0
        sl2 = (
            100 * (self.abandoned_in_sl + self.completed_in_sl) / (done + abandoned)
            if done + abandoned
            else 0.0
        )
        return encode(
            [
                ("Event", "QueueParams"),
                ("Queue", self.name),
                ("Max", 0),
                ("Strategy", self.strategy),
                ("Calls", len(self.entries)),
                ("Holdtime", self.holdtime),
                ("TalkTime", self.talktime),
                ("Completed", done),
                ("Abandoned", abandoned),
                ("ServiceLevel", self.servicelevel),
                ("ServicelevelPerf", f"{sl:2.1f}"),
                ("ServicelevelPerf2", f"{sl2:2.1f}"),
                ("Weight", 0),
                *action_id_header(action_id),
            ]
        )


def member_exten(member: Member) -> str:
    """The extension behind a member: `Local/101@from-queue/n`, `PJSIP/101` and `Custom:101`
    all give 101 on the simulated PBX (its hints are `N => Custom:N`)."""
    for device in (member.state_interface, member.interface):
        tail = device.split("/", 1)[-1].split(":", 1)[-1]
        exten = tail.split("@", 1)[0]
        if exten:
            return exten
    return ""


def non_negative(text: str, default: int = 0) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        return default
    return value if value >= 0 else default


Answer = tuple[bytes, Callable[[], None] | None]

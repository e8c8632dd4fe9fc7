"""AMI queue frames (app_queue: QueueStatus items, QueueMember*, QueueCaller*, Agent*) into
queue state, and that state as the store contract shows it. Pure: no I/O, no asyncio.
Do not break: every field is untrusted; a queue or member name becomes a JSON key only once
checked (`QUEUE_RE`, `DEVICE_RE`), every text is cleaned, outside numbers obey the number rule."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from app.schema import (
    MAX_NAME,
    MAX_NUMBER,
    MAX_PRESENCE_TEXT,
    ExtensionQueueJSON,
    QueueCallerJSON,
    QueueJSON,
    QueueMemberJSON,
    clean_text,
)
from app.states import DEVICE_RE, DEVICE_STATES, HintIndex, InvalidFrame

# The events the collector follows (apps/app_queue.c, each of class EVENT_FLAG_AGENT).
MEMBER_EVENTS = frozenset(
    {
        "QueueMemberStatus",
        "QueueMemberAdded",
        "QueueMemberRemoved",
        "QueueMemberPause",
        "QueueMemberPenalty",
        "QueueMemberRinginuse",
    }
)
CALLER_EVENTS = frozenset({"QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon"})
AGENT_EVENTS = frozenset({"AgentCalled", "AgentConnect", "AgentComplete", "AgentRingNoAnswer", "AgentDump"})
QUEUE_EVENTS = MEMBER_EVENTS | CALLER_EVENTS | AGENT_EVENTS
# The items of a QueueStatus answer (manager_queues_status), not events of their own.
STATUS_ITEMS = frozenset({"QueueParams", "QueueMember", "QueueEntry"})
# `Reload` of this module (manager.c, class system): queues.conf may have changed members
# without a QueueMember* event (transcript 20 shows the Reload alone): ask QueueStatus again.
QUEUE_MODULES = frozenset({"app_queue.so", "app_queue"})

# Queue names are admin-chosen section names of queues.conf, still untrusted: only these
# characters become a key of the snapshot's `queues` (FreePBX uses numbers, others words).
QUEUE_RE = re.compile(r"[A-Za-z0-9_.+\-]{1,80}")
MEMBERSHIPS = ("static", "dynamic", "realtime")
MAX_CALLERS = 1000  # callers kept per queue: more cannot be shown and would swell the snapshot
MAX_MEMBERS = 1000
# What Asterisk writes for a caller ID it does not have: QueueEntry (S_COR "unknown") and the
# channel snapshot (manager_channels.c "<unknown>").
_NO_ID = frozenset({"", "unknown", "<unknown>"})


@dataclass
class Member:
    """One member of one queue, as the last frame about it said."""

    interface: str
    name: str = ""
    state_interface: str = ""
    membership: str = "static"
    penalty: int = 0
    calls_taken: int = 0
    last_call: int = 0  # epoch seconds, 0: never
    last_pause: int = 0  # epoch seconds of the last pause (Asterisk keeps it after unpausing)
    login_time: int = 0
    in_call: bool = False
    status: int = 0  # Asterisk's enum ast_device_state (DEVICE_STATES' order)
    paused: bool = False
    reason: str = ""
    ringing: str = ""  # the Uniqueid of the caller it rings for (AgentCalled), "" when none


@dataclass
class Caller:
    uniqueid: str
    channel: str
    position: int
    joined_at: float  # epoch seconds
    name: str
    number: str


@dataclass
class Queue:
    name: str
    strategy: str = ""
    max: int = 0
    holdtime: int = 0
    talktime: int = 0
    completed: int = 0
    abandoned: int = 0
    service_level: int = 0  # seconds (queues.conf servicelevel)
    service_level_perf: float = 0.0  # percent, as QueueParams reports it
    service_level_perf2: float = 0.0
    weight: int = 0
    members: dict[str, Member] = field(default_factory=dict)  # interface -> member
    callers: list[Caller] = field(default_factory=list)  # by position


def _int(frame: Mapping[str, str], name: str) -> int:
    try:
        return int(str(frame.get(name) or "0").strip())
    except ValueError:
        return 0


def _float(frame: Mapping[str, str], name: str) -> float:
    try:
        value = float(str(frame.get(name) or "0").strip())
    except ValueError:
        return 0.0
    return value if 0.0 <= value <= 100.0 else 0.0


def queue_name(frame: Mapping[str, str]) -> str:
    name = str(frame.get("Queue") or "").strip()
    if not QUEUE_RE.fullmatch(name):
        raise InvalidFrame(f"bad Queue {name[:40]!r}")
    return name


def _interface(frame: Mapping[str, str], name: str) -> str:
    value = str(frame.get(name) or "").strip()
    if not DEVICE_RE.fullmatch(value):
        raise InvalidFrame(f"bad {name} {value[:40]!r}")
    return value


def _caller_id(value: object, limit: int) -> str:
    text = clean_text(value, limit)
    return "" if text in _NO_ID else text


class QueueBook:
    """Every queue of one PBX; `apply` takes a frame and returns the queues it changed."""

    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.queues

    def replace_all(self, items: Iterable[Mapping[str, str]], now: float) -> tuple[set[str], list[str]]:
        """A whole QueueStatus answer: queues it does not list are gone. Returns every queue
        name before and after (any may have changed) and why items were skipped."""
        before = set(self.queues)
        self.queues = {}
        problems = []
        for item in items:
            try:
                self.apply(item, now)
            except InvalidFrame as error:
                problems.append(str(error))
        return before | set(self.queues), problems

    def apply(self, frame: Mapping[str, str], now: float) -> set[str]:
        """One event or QueueStatus item; InvalidFrame when it names no valid queue."""
        event = str(frame.get("Event") or "")
        name = queue_name(frame)
        if event == "QueueParams":
            self._params(self._queue(name), frame)
        elif event == "QueueMember" or event in MEMBER_EVENTS:
            return self._member(name, event, frame)
        elif event == "QueueEntry":
            self._caller(self._queue(name), frame, now - max(0, _int(frame, "Wait")))
        elif event in CALLER_EVENTS:
            return self._caller_event(name, event, frame, now)
        elif event in AGENT_EVENTS:
            return self._agent_event(name, event, frame, now)
        else:
            return set()
        return {name}

    def _queue(self, name: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = Queue(name)
        return queue

    @staticmethod
    def _params(queue: Queue, frame: Mapping[str, str]) -> None:
        queue.strategy = clean_text(frame.get("Strategy"), 40)
        queue.max = _int(frame, "Max")
        queue.holdtime, queue.talktime = _int(frame, "Holdtime"), _int(frame, "TalkTime")
        queue.completed, queue.abandoned = _int(frame, "Completed"), _int(frame, "Abandoned")
        queue.service_level = _int(frame, "ServiceLevel")
        queue.service_level_perf = _float(frame, "ServicelevelPerf")
        queue.service_level_perf2 = _float(frame, "ServicelevelPerf2")
        queue.weight = _int(frame, "Weight")

    def _member(self, name: str, event: str, frame: Mapping[str, str]) -> set[str]:
        """A QueueMember item (`Name`, `Location`) or a QueueMember* event (`MemberName`,
        `Interface`): both carry the member's whole record (queue_member_blob_create)."""
        item = event == "QueueMember"
        interface = _interface(frame, "Location" if item else "Interface")
        queue = self._queue(name)
        if event == "QueueMemberRemoved":
            return {name} if queue.members.pop(interface, None) is not None else set()
        member = queue.members.get(interface)
        if member is None:
            if len(queue.members) >= MAX_MEMBERS:
                raise InvalidFrame(f"more than {MAX_MEMBERS} members in queue {name}")
            member = queue.members[interface] = Member(interface)
        state_interface = str(frame.get("StateInterface") or "").strip()
        member.name = clean_text(frame.get("Name" if item else "MemberName"), MAX_NAME) or interface
        member.state_interface = state_interface if DEVICE_RE.fullmatch(state_interface) else ""
        membership = str(frame.get("Membership") or "").strip()
        member.membership = membership if membership in MEMBERSHIPS else "static"
        member.penalty = _int(frame, "Penalty")
        member.calls_taken = _int(frame, "CallsTaken")
        member.last_call, member.last_pause = _int(frame, "LastCall"), _int(frame, "LastPause")
        member.login_time = _int(frame, "LoginTime")
        member.in_call = _int(frame, "InCall") == 1
        status = _int(frame, "Status")
        member.status = status if 0 <= status < len(DEVICE_STATES) else 0
        member.paused = _int(frame, "Paused") == 1
        member.reason = clean_text(frame.get("PausedReason"), MAX_PRESENCE_TEXT) if member.paused else ""
        return {name}

    def _caller(self, queue: Queue, frame: Mapping[str, str], joined_at: float) -> None:
        uniqueid = clean_text(frame.get("Uniqueid"), 64)
        if not uniqueid:
            raise InvalidFrame("missing field Uniqueid")
        queue.callers = [c for c in queue.callers if c.uniqueid != uniqueid]
        if len(queue.callers) >= MAX_CALLERS:
            raise InvalidFrame(f"more than {MAX_CALLERS} callers in queue {queue.name}")
        caller = Caller(
            uniqueid,
            clean_text(frame.get("Channel"), 128),
            _int(frame, "Position"),
            joined_at,
            _caller_id(frame.get("CallerIDName"), MAX_NAME),
            _caller_id(frame.get("CallerIDNum"), MAX_NUMBER),
        )
        queue.callers.append(caller)
        queue.callers.sort(key=lambda c: (c.position, c.joined_at))

    def _caller_event(self, name: str, event: str, frame: Mapping[str, str], now: float) -> set[str]:
        queue = self._queue(name)
        if event == "QueueCallerJoin":
            self._caller(queue, frame, now)
            return {name}
        uniqueid = clean_text(frame.get("Uniqueid"), 64)
        if event == "QueueCallerAbandon":
            queue.abandoned += 1
        # leave_queue(): the callers behind move up (`pos = ++pos` over the rest).
        queue.callers = [c for c in queue.callers if c.uniqueid != uniqueid]
        for position, caller in enumerate(queue.callers, 1):
            caller.position = position
        for member in queue.members.values():
            if member.ringing == uniqueid:
                member.ringing = ""
        return {name}

    def _agent_event(self, name: str, event: str, frame: Mapping[str, str], now: float) -> set[str]:
        """Agent* name the member by `Interface` and the caller by its channel's `Uniqueid`."""
        queue = self._queue(name)
        member = queue.members.get(_interface(frame, "Interface"))
        if member is None:
            return set()
        if event == "AgentCalled":
            member.ringing = clean_text(frame.get("Uniqueid"), 64) or "?"
        elif event == "AgentConnect":
            member.ringing, member.in_call = "", True
        elif event == "AgentComplete":
            # update_queue(): the member's calls and last call, the queue's completed calls.
            member.in_call = False
            member.calls_taken += 1
            member.last_call = int(now)
            queue.completed += 1
        else:  # AgentRingNoAnswer, AgentDump
            member.ringing, member.in_call = "", False
        return {name}

    # --- as the store contract shows it ---

    def as_json(self, name: str, index: HintIndex, *, show_numbers: bool) -> QueueJSON:
        queue = self.queues[name]
        callers = [self._caller_json(c, index, show_numbers) for c in queue.callers]
        members = sorted(queue.members.values(), key=lambda m: (m.name.casefold(), m.interface))
        return {
            "name": queue.name,
            "strategy": queue.strategy,
            "max": queue.max,
            "callers": callers,
            "longest_since": min((c.joined_at for c in queue.callers), default=None),
            "completed": queue.completed,
            "abandoned": queue.abandoned,
            "holdtime": queue.holdtime,
            "talktime": queue.talktime,
            "service_level": queue.service_level,
            "service_level_perf": queue.service_level_perf,
            "service_level_perf2": queue.service_level_perf2,
            "members": [self._member_json(m, index) for m in members],
        }

    @staticmethod
    def _caller_json(caller: Caller, index: HintIndex, show_numbers: bool) -> QueueCallerJSON:
        internal = bool(caller.number and index.keys_of_exten(caller.number))
        return {
            "position": caller.position,
            "joined_at": round(caller.joined_at, 3),
            "name": caller.name,
            "number": caller.number if show_numbers or internal else "",
        }

    @staticmethod
    def _member_json(member: Member, index: HintIndex) -> QueueMemberJSON:
        keys = member_keys(index, member.interface, member.state_interface)
        return {
            "interface": member.interface,
            "extension": keys[0] if keys else None,
            "name": member.name,
            "membership": member.membership,  # type: ignore[typeddict-item]  # one of MEMBERSHIPS
            "penalty": member.penalty,
            "paused": member.paused,
            "reason": member.reason,
            "paused_since": member.last_pause if member.paused and member.last_pause else None,
            "in_call": member.in_call,
            "ringing": bool(member.ringing),
            "status": DEVICE_STATES[member.status].lower(),
            "calls_taken": member.calls_taken,
            "last_call": member.last_call or None,
        }

    def memberships(self, index: HintIndex) -> dict[str, tuple[ExtensionQueueJSON, ...]]:
        """Extension key -> the queues it serves, with its pause there, by queue name."""
        found: dict[str, list[ExtensionQueueJSON]] = {}
        for name in sorted(self.queues):
            for member in self.queues[name].members.values():
                for key in member_keys(index, member.interface, member.state_interface)[:1]:
                    paused_since = member.last_pause if member.paused and member.last_pause else None
                    found.setdefault(key, []).append(
                        {
                            "queue": name,
                            "paused": member.paused,
                            "reason": member.reason,
                            "paused_since": paused_since,
                        }
                    )
        return {key: tuple(queues) for key, queues in found.items()}


_LOCAL_RE = re.compile(r"Local/([A-Za-z0-9_+*#.\-]{1,64})@([A-Za-z0-9_.\-]{1,80})(/n)?", re.IGNORECASE)
_HINT_RE = re.compile(r"hint:([A-Za-z0-9_+*#.\-]{1,64})@([A-Za-z0-9_.\-]{1,80})", re.IGNORECASE)


def member_keys(index: HintIndex, interface: str, state_interface: str = "") -> list[str]:
    """The extensions a member is, read off the hints as calls are: the hint holding its
    StateInterface (`PJSIP/101`, `Custom:102`) or its Interface; FreePBX's `hint:101@ext-local`
    state interface names the extension itself; a `Local/101@from-queue/n` agent is extension
    101; else a phone named like its extension (`PJSIP/101`). [] when none."""
    for device in (state_interface, interface):
        if device and (keys := index.keys_holding(device)):
            return keys
    for device in (state_interface, interface):
        if match := _HINT_RE.fullmatch(device):
            keys = [k for k in index.keys_of_exten(match.group(1)) if k.endswith(f"@{match.group(2)}")]
            if keys:
                return keys
        if match := _LOCAL_RE.fullmatch(device):
            if keys := index.keys_of_exten(match.group(1)):
                return keys
    for device in (state_interface, interface):
        if device and "/" in device and not device.lower().startswith("local/"):
            if keys := index.keys_of_phone(device):
                return keys
    return []


def held_queue_key(frame: Mapping[str, str]) -> str | None:
    """What a QueueStatus item and an event that arrived during the list are both about: a
    member (`queue:support:PJSIP/100`) or else the queue; None for other frames. An event
    older than the list's item is already in it (the collector then drops it)."""
    event = str(frame.get("Event") or "")
    if event not in QUEUE_EVENTS and event not in STATUS_ITEMS:
        return None
    queue = str(frame.get("Queue") or "")
    if event == "QueueMember" or event in MEMBER_EVENTS:
        return f"queue:{queue}:{frame.get('Location' if event == 'QueueMember' else 'Interface')}"
    return f"queue:{queue}"

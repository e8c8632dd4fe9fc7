"""Queues as Asterisk 22's app_queue answers for them: the actions
(QueueStatus, QueueSummary, QueuePause, QueueAdd, QueueRemove, QueuePenalty) and the member events;
the state is in queue_model, a caller's way through a queue in queue_calls.
Do not break: headers, their order and the replies are app_queue.c's (transcripts 05 and 17);
a reply goes out before the events its action causes; members list in ao2 hash-bucket order."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.sim.wire import Header, action_id_header, encode, error, event_list, response
from app.states import DEVICE_STATES

if TYPE_CHECKING:
    from app.sim.model import Pbx

from app.sim.queue_calls import QueueCalls
from app.sim.queue_model import (
    _AGENT_CLASS,
    _CODE,
    AGENT,
    Answer,
    Entry,
    Member,
    Queue,
    non_negative,
)


def _member_event(event: str, queue: Queue, member: Member) -> bytes:
    return encode([("Event", event), _AGENT_CLASS, *member.fields(queue.name, item=False)])


class Queues(QueueCalls):
    """The queues of one simulated PBX; events go through the PBX's `emit`."""

    def __init__(self, pbx: Pbx) -> None:
        self._pbx = pbx
        self.queues: dict[str, Queue] = {}

    # --- configuration (queues.conf) ---

    def add_queue(
        self, name: str, members: list[tuple[str, str, str]], strategy: str = "ringall", servicelevel: int = 0
    ) -> Queue:
        """A queue with static members (interface, member name, state interface), as loaded
        from queues.conf: no events."""
        queue = self.queues[name] = Queue(name, strategy, servicelevel)
        for interface, member_name, state_interface in members:
            member = Member(interface, member_name or interface, state_interface or interface)
            member.status = _CODE[self._pbx.device_state(member.state_interface)]
            queue.members.append(member)
            self._pbx.set_device_state(f"Queue:{name}_pause_{interface}", "NOT_INUSE")
        self._update_avail(queue, None)
        return queue

    def device_changed(self, device: str, state: str) -> None:
        """device_state_cb(): every member with this state interface whose status moves."""
        for queue in self.queues.values():
            for member in queue.ordered():
                if member.state_interface.lower() == device.lower() and member.status != _CODE[state]:
                    member.status = _CODE[state]
                    self._pbx.emit(AGENT, _member_event("QueueMemberStatus", queue, member))
                    self._update_avail(queue, member)

    def _update_avail(self, queue: Queue, member: Member | None) -> None:
        """`Queue:<name>_avail`: NOT_INUSE when this member is available, INUSE when nobody is."""
        device = f"Queue:{queue.name}_avail"
        if member is not None and member.available:
            self._pbx.set_device_state(device, "NOT_INUSE")
        elif not any(m.available for m in queue.members):
            self._pbx.set_device_state(device, "INUSE")
        elif member is None:
            self._pbx.set_device_state(device, "NOT_INUSE")

    # --- actions: each returns the reply, and the change to make after it went out ---

    def status(self, action_id: str, queue_filter: str = "", member_filter: str = "") -> bytes:
        """manager_queues_status(): per queue its params, members (or the one asked for),
        entries; the count takes them all."""
        items: list[bytes] = []
        now = time.time()
        for queue in self.queues.values():
            if queue_filter and queue.name.lower() != queue_filter.lower():
                continue
            items.append(queue.params(action_id))
            for member in queue.ordered():
                if not member_filter or member_filter in (member.interface, member.name):
                    fields = member.fields(queue.name, item=True)
                    items.append(encode([("Event", "QueueMember"), *fields, *action_id_header(action_id)]))
            for position, entry in enumerate(queue.entries, 1):
                items.append(self._entry(queue, position, entry, now, action_id))
        return event_list(action_id, "Queue status will follow", items, "QueueStatusComplete")

    @staticmethod
    def _entry(queue: Queue, position: int, entry: Entry, now: float, action_id: str) -> bytes:
        chan = entry.channel
        return encode(
            [
                ("Event", "QueueEntry"),
                ("Queue", queue.name),
                ("Position", position),
                ("Channel", chan.name),
                ("Uniqueid", chan.uniqueid),
                ("CallerIDNum", chan.caller_num or "unknown"),
                ("CallerIDName", chan.caller_name or "unknown"),
                ("ConnectedLineNum", chan.connected_num or "unknown"),
                ("ConnectedLineName", chan.connected_name or "unknown"),
                ("Wait", int(now - entry.start)),
                ("Priority", 0),
                *action_id_header(action_id),
            ]
        )

    def summary(self, action_id: str, queue_filter: str = "") -> bytes:
        """manager_queues_summary()."""
        items = []
        now = time.time()
        for queue in self.queues.values():
            if queue_filter and queue.name.lower() != queue_filter.lower():
                continue
            logged_in = [
                m for m in queue.members if DEVICE_STATES[m.status] not in ("UNAVAILABLE", "INVALID")
            ]
            available = [
                m for m in logged_in if DEVICE_STATES[m.status] in ("NOT_INUSE", "UNKNOWN") and not m.paused
            ]
            longest = max((int(now - e.start) for e in queue.entries), default=0)
            headers: list[Header] = [
                ("Event", "QueueSummary"),
                ("Queue", queue.name),
                ("LoggedIn", len(logged_in)),
                ("Available", len(available)),
                ("Callers", len(queue.entries)),
                ("HoldTime", queue.holdtime),
                ("TalkTime", queue.talktime),
                ("LongestHoldTime", longest),
            ]
            items.append(encode([*headers, *action_id_header(action_id)]))
        return event_list(action_id, "Queue summary will follow", items, "QueueSummaryComplete")

    def pause(self, action_id: str, queue_name: str, interface: str, paused_text: str, reason: str) -> Answer:
        """manager_pause_queue_member() / set_member_paused(): in one queue or in all."""
        if not interface or not paused_text:
            return error(action_id, "Need 'Interface' and 'Paused' parameters."), None
        paused = paused_text.lower() in ("yes", "true", "y", "t", "1", "on")
        found = [
            (q, m)
            for q in self.queues.values()
            if not queue_name or q.name.lower() == queue_name.lower()
            if (m := q.member(interface)) is not None
        ]
        if not found:
            return error(action_id, "Interface not found"), None
        text = "Interface paused successfully" if paused else "Interface unpaused successfully"
        return response("Success", action_id, ("Message", text)), lambda: self._pause_all(
            found, paused, reason
        )

    def _pause_all(self, found: list[tuple[Queue, Member]], paused: bool, reason: str) -> None:
        for queue, member in found:
            self.set_paused(queue, member, paused, reason)

    def set_paused(self, queue: Queue, member: Member, paused: bool, reason: str = "") -> None:
        """set_queue_member_pause(): the pause device, the queue's avail device, the event; a
        reason given to an unpause is in its event only."""
        member.paused = paused
        if paused:
            member.lastpause = int(time.time())
        member.reason = reason if paused else ""
        self._pbx.set_device_state(
            f"Queue:{queue.name}_pause_{member.interface}", "INUSE" if paused else "NOT_INUSE"
        )
        self._update_avail(queue, member)
        member.reason = reason
        self._pbx.emit(AGENT, _member_event("QueueMemberPause", queue, member))
        if not paused:
            member.reason = ""

    def add(self, action_id: str, frame: Callable[[str], str]) -> Answer:
        """manager_add_queue_member() / add_to_queue(): a dynamic member."""
        name, interface = frame("Queue"), frame("Interface")
        if not name:
            return error(action_id, "'Queue' not specified."), None
        if not interface:
            return error(action_id, "'Interface' not specified."), None
        queue = self.queues.get(name)
        if queue is None:
            return error(action_id, "Unable to add interface to queue: No such queue"), None
        if queue.member(interface) is not None:
            return error(action_id, "Unable to add interface: Already there"), None
        state_interface = frame("StateInterface") or interface
        member = Member(interface, frame("MemberName") or interface, state_interface, dynamic=True)
        member.penalty = non_negative(frame("Penalty"))
        member.paused = frame("Paused").lower() in ("yes", "true", "y", "t", "1", "on")
        member.reason = frame("Reason") if member.paused else ""
        member.status = _CODE[self._pbx.device_state(state_interface)]
        if member.status == 0 and state_interface.upper().startswith("PJSIP/"):
            member.status = _CODE["UNAVAILABLE"]  # an endpoint with no contact

        def added() -> None:
            queue.members.append(member)
            self._pbx.set_device_state(
                f"Queue:{queue.name}_pause_{interface}", "INUSE" if member.paused else "NOT_INUSE"
            )
            self._pbx.emit(AGENT, _member_event("QueueMemberAdded", queue, member))

        return response("Success", action_id, ("Message", "Added interface to queue")), added

    def remove(self, action_id: str, name: str, interface: str) -> Answer:
        if not name or not interface:
            return error(action_id, "Need 'Queue' and 'Interface' parameters."), None
        queue = self.queues.get(name)
        if queue is None:
            return error(action_id, "Unable to remove interface from queue: No such queue"), None
        member = queue.member(interface)
        if member is None:
            return error(action_id, "Unable to remove interface: Not there"), None
        if not member.dynamic:
            return error(action_id, "Member not dynamic"), None

        def removed() -> None:
            queue.members.remove(member)
            self._pbx.emit(AGENT, _member_event("QueueMemberRemoved", queue, member))

        return response("Success", action_id, ("Message", "Removed interface from queue")), removed

    def penalty(self, action_id: str, name: str, interface: str, penalty_text: str) -> Answer:
        if not interface or not penalty_text:
            return error(action_id, "Need 'Interface' and 'Penalty' parameters."), None
        penalty = non_negative(penalty_text, -1)
        found = [
            (q, m)
            for q in self.queues.values()
            if not name or q.name.lower() == name.lower()
            if (m := q.member(interface)) is not None
        ]
        if penalty < 0 or not found:
            return error(action_id, "Invalid interface, queuename or penalty"), None

        def set_penalty() -> None:
            for queue, member in found:
                member.penalty = penalty
                self._pbx.emit(AGENT, _member_event("QueueMemberPenalty", queue, member))

        return response("Success", action_id, ("Message", "Interface penalty set successfully")), set_penalty

    # --- a caller in a queue (no transcript: app_queue.c's order of publication) ---

"""A caller's way through a simulated queue: join, ring the members (AgentCalled), answer
(AgentConnect, then the bridged call's channel events), complete or abandon, leave.
Do not break: the events' order and fields are app_queue.c's (queue_channel_to_ami)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from app.sim.calls import RING, RINGING, TRUNK_CONTEXT, UP, Bridge, Channel, Party
from app.sim.events import bridge_event, channel_event, dial_event
from app.sim.queue_model import _AGENT_CLASS, AGENT, Entry, Member, Queue, member_exten
from app.sim.wire import CALL, Header, encode

if TYPE_CHECKING:
    from app.sim.model import Pbx


def _caller_event(event: str, channel: Channel, *blob: Header) -> bytes:
    """queue_channel_to_ami(): the caller's snapshot, then the JSON blob in packed order."""
    return encode([("Event", event), _AGENT_CLASS, *channel.headers(), *blob])


def _agent_event(event: str, caller: Channel, agent: Channel, *blob: Header) -> bytes:
    """queue_multi_channel_to_ami(): caller, agent as Dest*, then the blob."""
    return encode([("Event", event), _AGENT_CLASS, *caller.headers(), *agent.headers("Dest"), *blob])


class QueueCalls:
    """The call flow of `Queues` (its base): needs `_pbx` and `queues` of the subclass."""

    _pbx: Pbx
    queues: dict[str, Queue]

    def join(self, name: str, number: str, caller_name: str) -> Entry:
        """An outside caller reaches `exten => <queue>,1,Answer()`, `n,Queue(<queue>)`: its
        channel comes up and joins (QueueCallerJoin: Position, Count)."""
        pbx, queue = self._pbx, self.queues[name]
        party = Party(number, caller_name, None)
        channel = pbx.open_channel(party, context=TRUNK_CONTEXT, exten=name, state=RING)
        pbx.emit(CALL, channel_event("Newchannel", channel))
        channel.state, channel.application, channel.app_data = UP, "Queue", name
        pbx.emit(CALL, channel_event("Newstate", channel))
        entry = Entry(channel, time.time(), len(queue.entries) + 1, party=party)
        queue.entries.append(entry)
        count = len(queue.entries)
        pbx.emit(
            AGENT,
            _caller_event("QueueCallerJoin", channel, ("Queue", name), ("Position", count), ("Count", count)),
        )
        return entry

    def ring(self, name: str, entry: Entry) -> list[Member]:
        """ring_entry(): each available member by strategy (ringall: all of them) gets a
        channel, AgentCalled, the Dial, and its phone rings."""
        pbx, queue = self._pbx, self.queues[name]
        members = [m for m in queue.ordered() if m.available and member_exten(m) in pbx.extensions]
        members = members if queue.strategy == "ringall" else members[:1]
        for member in members:
            exten = member_exten(member)
            agent_party = Party(exten, pbx.name_of(exten), exten)
            agent = pbx.open_channel(
                agent_party, context=pbx.context, exten="s", linkedid=entry.channel.linkedid
            )
            pbx.emit(CALL, channel_event("Newchannel", agent))
            agent.connect(entry.channel)
            blob = (("Queue", name), ("Interface", member.interface), ("MemberName", member.name))
            pbx.emit(AGENT, _agent_event("AgentCalled", entry.channel, agent, *blob))
            pbx.emit(CALL, dial_event("DialBegin", entry.channel, agent, ("DialString", member.interface)))
            agent.state = RINGING
            pbx.emit(CALL, channel_event("Newstate", agent))
            pbx.set_phone(agent_party, "RINGING")
            entry.agents.append((member, agent))
        return members

    def connect(self, name: str, entry: Entry) -> None:
        """The first ringing member answers: the others stop ringing, the caller leaves the
        queue (leave_queue() comes before AgentConnect in try_calling()), they are bridged."""
        pbx, queue = self._pbx, self.queues[name]
        (member, agent), others = entry.agents[0], entry.agents[1:]
        agent.state = UP
        pbx.emit(CALL, channel_event("Newstate", agent))
        pbx.set_phone(Party(member_exten(member), "", member_exten(member)), "INUSE")
        pbx.emit(CALL, dial_event("DialEnd", entry.channel, agent, ("DialStatus", "ANSWER")))
        for _other, channel in others:
            pbx.emit(CALL, dial_event("DialEnd", entry.channel, channel, ("DialStatus", "CANCEL")))
            self._hang_up(channel, _other)
        self._leave(queue, entry)
        now = time.time()
        entry.agents, entry.agent, entry.connected_at = [], (member, agent), now
        member.incall = True
        ring_time = int(now - entry.start)
        blob = (("Queue", name), ("Interface", member.interface), ("MemberName", member.name))
        pbx.emit(
            AGENT,
            _agent_event(
                "AgentConnect", entry.channel, agent, *blob, ("HoldTime", ring_time), ("RingTime", ring_time)
            ),
        )
        bridge = entry.bridge = Bridge(f"queue-{entry.channel.uniqueid}")
        pbx.emit(CALL, bridge_event("BridgeCreate", bridge))
        for channel in (entry.channel, agent):
            bridge.channels += 1
            channel.bridge_id = bridge.id
            pbx.emit(CALL, bridge_event("BridgeEnter", bridge, channel))

    def complete(self, name: str, entry: Entry) -> None:
        """The caller hangs up a connected call: the bridge empties, AgentComplete (Reason
        caller), update_queue() counts the call, both channels go."""
        pbx, queue = self._pbx, self.queues[name]
        assert entry.agent is not None and entry.bridge is not None
        member, agent = entry.agent
        bridge, now = entry.bridge, time.time()
        pbx.emit(CALL, channel_event("HangupRequest", entry.channel, ("Cause", 16)))
        for channel in (entry.channel, agent):
            bridge.channels -= 1
            channel.bridge_id = ""
            pbx.emit(CALL, bridge_event("BridgeLeave", bridge, channel))
        pbx.emit(CALL, bridge_event("BridgeDestroy", bridge))
        hold, talk = int(entry.connected_at - entry.start), int(now - entry.connected_at)
        blob = (("Queue", name), ("Interface", member.interface), ("MemberName", member.name))
        extra = (("HoldTime", hold), ("TalkTime", talk), ("Reason", "caller"))
        pbx.emit(AGENT, _agent_event("AgentComplete", entry.channel, agent, *blob, *extra))
        member.incall, member.calls, member.lastcall = False, member.calls + 1, int(now)
        queue.completed += 1
        queue.completed_in_sl += hold <= queue.servicelevel
        queue.holdtime = (queue.holdtime * 3 + hold) // 4  # recalc_holdtime(): a running average
        queue.talktime = (queue.talktime * 3 + talk) // 4
        self._hang_up(entry.channel, None)
        self._hang_up(agent, member)

    def abandon(self, name: str, entry: Entry) -> None:
        """The caller hangs up while waiting (or while members ring): the ringing stops,
        QueueCallerAbandon, then QueueCallerLeave."""
        pbx, queue = self._pbx, self.queues[name]
        pbx.emit(CALL, channel_event("HangupRequest", entry.channel, ("Cause", 16)))
        for member, channel in entry.agents:
            pbx.emit(CALL, dial_event("DialEnd", entry.channel, channel, ("DialStatus", "CANCEL")))
            self._hang_up(channel, member)
        entry.agents = []
        position = queue.entries.index(entry) + 1
        held = int(time.time() - entry.start)
        blob = (("Queue", name), ("Position", position), ("OriginalPosition", entry.original_position))
        pbx.emit(AGENT, _caller_event("QueueCallerAbandon", entry.channel, *blob, ("HoldTime", held)))
        queue.abandoned += 1
        queue.abandoned_in_sl += held <= queue.servicelevel
        self._leave(queue, entry)
        self._hang_up(entry.channel, None)

    def _leave(self, queue: Queue, entry: Entry) -> None:
        position = queue.entries.index(entry) + 1
        queue.entries.remove(entry)
        count = len(queue.entries)
        blob = (("Queue", queue.name), ("Position", position), ("Count", count))
        self._pbx.emit(AGENT, _caller_event("QueueCallerLeave", entry.channel, *blob))

    def _hang_up(self, channel: Channel, member: Member | None) -> None:
        self._pbx.emit(
            CALL, channel_event("Hangup", channel, ("Cause", 16), ("Cause-txt", "Normal Clearing"))
        )
        self._pbx.close_channel(channel)
        if member is not None:
            self._pbx.set_phone(Party(member_exten(member), "", member_exten(member)), "NOT_INUSE")

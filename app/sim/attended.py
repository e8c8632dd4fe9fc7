"""An attended transfer as Asterisk 22's DTMF feature runs it, the one `Atxfer` starts (main/
bridge_basic.c feature_attended_transfer() and its state machine; stasis_bridges.c for the event).
Do not break: the transferee hears music on hold in the first bridge while the transferer, moved
into a second bridge, consults the target; when the transferer hangs up, the target moves into the
first bridge, AttendedTransfer is sent and the second bridge is destroyed.

Asterisk dials the target through a Local channel pair (`Local/102@ctx-…;1/;2`) that optimizes
itself away once the target answers; the simulator leaves the pair out and lets the transferer's
channel dial, so the events name only the phones the panel shows. No transcript covers this."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from app.sim.action_events import attended_transfer_event
from app.sim.calls import Bridge, Channel, Party, SimulatedCall, enter_bridge, hang_up_channel, leave_bridge
from app.sim.events import bridge_event, channel_event
from app.sim.legs import ANSWER_AFTER, after
from app.sim.wire import CALL, wire_text

if TYPE_CHECKING:
    from app.sim.server import Simulator

# Seconds the transferer talks with the target before hanging up, which completes the transfer:
# enough to see both calls on the panel, short enough for a suite. A test completes at once with
# `complete()` (its leg is `Pbx.legs[<target>]`).
CONSULT_FOR = 1.0


class AttendedTransfer:
    """One attended transfer of `call` by its `transferer` channel to extension `exten`: a leg
    of the target's phone (`Pbx.legs`) until it completes or fails."""

    def __init__(self, sim: Simulator, call: SimulatedCall, transferer: Channel, exten: str) -> None:
        bridge = call.bridge
        assert bridge is not None
        self.sim, self.call, self.exten = sim, call, exten
        self.transferer, self.transferee = transferer, call.other(transferer)
        self.transferer_party = call.party_of(transferer)
        self.transferee_party = call.party_of(self.transferee)
        self.orig, self.second = bridge, Bridge(str(uuid.uuid4()))
        self.consultation: SimulatedCall | None = None
        self.state = "calling"  # consulting, done, failed

    def start(self, *, exists: bool) -> None:
        """The feature: the transferee is put on hold; an extension that does not `exists`
        ends it there (grab_transfer() fails); else the transferer moves into a new bridge
        and the target rings (or, busy, the transferer comes straight back: "rebridge")."""
        sim, call = self.sim, self.call
        if call.state == "held":
            call.unhold()
        call.state = "transferring"
        self._emit(channel_event("Hold", self.transferer))  # write_hold(): no music class
        self._emit(channel_event("MusicOnHoldStart", self.transferee, ("Class", "default")))
        sim.set_phone(self.transferee_party, "ONHOLD")
        if not exists:
            self._fail(moved=False)
            return
        self._emit(bridge_event("BridgeCreate", self.second))
        self._move(self.transferer, self.orig, self.second)  # calling_target_enter()
        if sim.busy(self.exten) or self.exten in (self.transferer_party.exten, self.transferee_party.exten):
            self._fail(moved=True)  # the target's Dial fails: STIMULUS_TRANSFER_TARGET_HANGUP
            return
        target = Party(self.exten, wire_text(sim.name_of(self.exten)), self.exten)
        sim.legs[self.exten] = self
        self.consultation = SimulatedCall(
            sim, self.transferer_party, target, channel=self.transferer, bridge=self.second
        )
        after(sim, ANSWER_AFTER, self._target_answers, f"atxfer-answer-{self.exten}")

    def complete(self) -> None:
        """The transferer hangs up while consulting (STIMULUS_TRANSFERER_HANGUP): the first
        bridge is taken off hold, the second merged into it without the transferer
        (complete_enter(): bridge_merge() kicks it), AttendedTransfer, the transferer's
        channel hangs up and the second bridge goes."""
        consultation = self.consultation
        if self.state != "consulting" or consultation is None:
            return
        self.state = "done"
        sim, call, transferer, target = self.sim, self.call, self.transferer, consultation.b
        self._emit(channel_event("HangupRequest", transferer, ("Cause", 16)))
        self._unhold()
        self._emit(leave_bridge(self.second, transferer))
        self._move(target, self.second, self.orig)
        self._emit(attended_transfer_event(transferer, self.orig, self.second, self.transferee, target))
        hang_up_channel(sim, transferer)
        self._emit(bridge_event("BridgeDestroy", self.second))
        consultation.state = "ended"
        call.replace(transferer, target, consultation.callee)
        call.state = "up"
        self._release()
        sim.hand_over(call, self.transferer_party, consultation.callee)
        sim.set_phone(self.transferer_party, "NOT_INUSE")

    def channel_closed(self, channel: Channel) -> None:
        """Nothing: a hangup of a party during the consultation is not simulated."""

    def drop(self) -> None:
        self.state = "ended"

    def _target_answers(self) -> None:
        if self.state != "calling" or self.consultation is None:
            return
        self.consultation.answer()  # the target enters the second bridge
        self.state = "consulting"
        after(self.sim, CONSULT_FOR, self.complete, f"atxfer-complete-{self.exten}")

    def _fail(self, *, moved: bool) -> None:
        """The transfer did not happen: the transferer back with the transferee (rebridge_enter()),
        which hears no more music."""
        self.state = "failed"
        if moved:
            self._move(self.transferer, self.second, self.orig)
        self._emit(channel_event("Unhold", self.transferer))
        self._unhold()
        if moved:
            self._emit(bridge_event("BridgeDestroy", self.second))
        self.call.state = "up"
        self._release()

    def _unhold(self) -> None:
        """bridge_unhold(): the transferee's music stops, its phone is in use again."""
        self.sim.set_phone(self.transferee_party, "INUSE")
        self._emit(channel_event("MusicOnHoldStop", self.transferee))

    def _move(self, channel: Channel, source: Bridge, destination: Bridge) -> None:
        """bridge_move(): out of one bridge, into the other."""
        self._emit(leave_bridge(source, channel))
        self._emit(enter_bridge(destination, channel))

    def _release(self) -> None:
        if self.sim.legs.get(self.exten) is self:
            del self.sim.legs[self.exten]

    def _emit(self, data: bytes) -> None:
        self.sim.emit(CALL, data)

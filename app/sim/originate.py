"""An Async Originate as Asterisk 22 runs it (main/manager.c fast_originate(), main/pbx.c
pbx_outgoing_attempt(); transcript 16): the originating phone rings first; when its person
answers, the dialplan (`Exten`: Dial the colleague) or the application (ChanSpy, PickupChan,
Wait) runs on that channel, and an OriginateResponse tells the client how the phone answered.
Do not break: the events and their order up to the OriginateResponse are transcript 16's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.sim.action_events import (
    ANSWERED,
    BUSY,
    FAILURE,
    NO_ANSWER,
    chanspy_event,
    new_callerid,
    originate_response,
    outgoing_dial_event,
)
from app.sim.calls import RINGING, UP, Channel, Party, go_to, hang_up_channel
from app.sim.events import channel_event
from app.sim.legs import ANSWER_AFTER, after, answer_later
from app.sim.wire import CALL, wire_text

if TYPE_CHECKING:
    from app.sim.server import Simulator

_PHONE = re.compile(r"PJSIP/([^/&,-]+)", re.IGNORECASE)
_SECONDS = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)")


@dataclass(frozen=True)
class OriginateRequest:
    """What an Originate asked for, its fields checked by transfers.originate()."""

    action_id: str
    channel: str  # as asked: "PJSIP/101"
    context: str
    exten: str
    application: str  # "" for Context/Exten
    data: str
    caller: tuple[str, str]  # (number, name) of CallerID; "" where not given
    timeout: float  # seconds the phone may ring

    @property
    def phone(self) -> str:
        """The extension whose phone `channel` names ("" when it names none)."""
        match = _PHONE.fullmatch(self.channel)
        return match.group(1) if match else ""


class Originated:
    """The originating phone's channel, from its ring to the end of its application; in
    `Pbx.legs` while it is in no call. `hang_up()` is its person putting the phone down."""

    def __init__(self, sim: Simulator, request: OriginateRequest) -> None:
        self.sim = sim
        self.request = request
        self.phone = request.phone
        self.party = Party(self.phone, wire_text(sim.name_of(self.phone)), self.phone) if self.phone else None
        self.channel: Channel | None = None
        self.state = "ringing"  # up (an application runs), ended
        self.spied: Channel | None = None  # ChanSpy's channel listened to
        self._exit_with_spied = False  # ChanSpy's option E

    def start(self) -> None:
        """Ring the phone: no channel for a phone the PBX does not know or cannot reach (the
        channel driver refuses it, Reason 0); a busy phone says so (Reason 5)."""
        sim, party = self.sim, self.party
        if party is None or not sim.booted or party.exten not in sim.extensions:
            self._respond(FAILURE)
            return
        if sim.device_state(f"Custom:{party.exten}") == "UNAVAILABLE":
            self._respond(FAILURE)
            return
        channel = self.channel = sim.open_channel(party, context=sim.context, exten="s")
        self._emit(channel_event("Newchannel", channel))
        number, name = self.request.caller
        if number or name:  # pbx_outgoing_attempt(): the caller ID, then the connected line
            channel.caller_num = number or channel.caller_num
            channel.caller_name = name or channel.caller_name
            self._emit(new_callerid(channel))
            channel.connected_num, channel.connected_name = number, name
            self._emit(channel_event("NewConnectedLine", channel))
        channel.application, channel.app_data = "AppDial2", "(Outgoing Line)"
        self._emit(outgoing_dial_event("DialBegin", channel, ("DialString", party.exten)))
        if sim.busy(party.exten):
            self._emit(outgoing_dial_event("DialEnd", channel, ("DialStatus", "BUSY")))
            hang_up_channel(sim, channel, 17, "User busy")
            self._respond(BUSY)
            return
        self._emit(outgoing_dial_event("DialState", channel, ("DialStatus", "RINGING")))
        channel.state = RINGING
        self._emit(channel_event("Newstate", channel))
        sim.set_phone(party, "RINGING")
        sim.legs[party.exten] = self
        if self.request.timeout < ANSWER_AFTER:
            after(sim, self.request.timeout, self._unanswered, f"originate-timeout-{party.exten}")
        else:
            after(sim, ANSWER_AFTER, self._answer, f"originate-answer-{party.exten}")

    def hang_up(self) -> None:
        """The person hangs up (a supervisor stops listening)."""
        if self.state == "up" and self.channel is not None:
            self._emit(channel_event("HangupRequest", self.channel, ("Cause", 16)))
            self._end()

    def channel_closed(self, channel: Channel) -> None:
        if channel is self.spied:  # ChanSpy notices on its own thread: after this hangup
            after(self.sim, 0, self._spied_gone, f"chanspy-{self.phone}")

    def drop(self) -> None:
        self.state = "ended"

    # --- the steps ---

    def _answer(self) -> None:
        channel, party, request = self.channel, self.party, self.request
        if self.state != "ringing" or channel is None or party is None:
            return
        channel.state = UP
        self._emit(channel_event("Newstate", channel))
        self._emit(outgoing_dial_event("DialEnd", channel, ("DialStatus", "ANSWER")))
        if request.application:
            channel.application, channel.app_data = request.application, request.data
        else:
            channel.context, channel.exten, channel.priority = request.context, request.exten, 1
        self._respond(ANSWERED)
        self.sim.set_phone(party, "INUSE")
        self.state = "up"
        self._run()

    def _unanswered(self) -> None:
        """The Originate's Timeout ran out while the phone rang (main/dial.c: NO_ANSWER)."""
        channel, party = self.channel, self.party
        if self.state != "ringing" or channel is None or party is None:
            return
        self.state = "ended"
        self._emit(outgoing_dial_event("DialEnd", channel, ("DialStatus", "NOANSWER")))
        hang_up_channel(self.sim, channel, 19, "User alerting, no answer")
        self._leave()
        self._respond(NO_ANSWER)

    def _run(self) -> None:
        """What runs on the answered channel: Dial(PJSIP/<Exten>) for Context/Exten, else the
        application. One the simulator does not know returns at once (the channel hangs up)."""
        sim, channel, party, request = self.sim, self.channel, self.party, self.request
        assert channel is not None and party is not None
        application = request.application.lower()
        if not application:
            self._hand_over()
            go_to(channel, request.context, request.exten)
            number, name = request.caller
            caller = Party(number or party.number, name or party.name, party.exten)
            call = sim.dial_on(channel, caller, request.exten)
            if call is not None:
                answer_later(sim, call)
        elif application == "chanspy":
            self._spy()
        elif application == "pickupchan" and (ringing := _PHONE.match(request.data)) is not None:
            self._hand_over()
            if sim.pick_up(party.exten or "", ringing.group(1), channel) is None:
                hang_up_channel(sim, channel)  # PickupChan found no ringing channel there
                sim.set_phone(party, "NOT_INUSE")
        elif application == "wait" and (seconds := _SECONDS.match(request.data)) is not None:
            after(sim, float(seconds.group(1)), self._end, f"wait-{self.phone}")
        else:
            self._end()

    def _spy(self) -> None:
        """ChanSpy(<prefix>,<options>) (apps/app_chanspy.c): listens to the oldest channel
        whose name starts with the prefix (case ignored), not its own; with none, it waits
        (here: until hung up). Option E: it ends when the spied channel hangs up; without E
        it would look for another one (not simulated: it waits)."""
        channel = self.channel
        assert channel is not None
        prefix, _, options = self.request.data.partition(",")
        self._exit_with_spied = "E" in options
        for name in self.sim.channels:
            found = self.sim.channel(name)
            if found is not None and found is not channel and name.lower().startswith(prefix.lower()):
                self.spied = found
                self._emit(chanspy_event("ChanSpyStart", channel, found))
                return

    def _spied_gone(self) -> None:
        if self.state != "up" or self.spied is None or self.channel is None:
            return
        self._emit(chanspy_event("ChanSpyStop", self.channel, self.spied))
        self.spied = None
        if self._exit_with_spied:
            self._end()

    def _end(self) -> None:
        """The application is over: the channel hangs up, the phone is free."""
        channel = self.channel
        if self.state != "up" or channel is None:
            return
        self.state = "ended"
        if self.spied is not None:
            self._emit(chanspy_event("ChanSpyStop", channel, self.spied))
            self.spied = None
        hang_up_channel(self.sim, channel)
        self._leave()

    def _hand_over(self) -> None:
        """The phone's channel goes into a call: it is a leg in no call no more."""
        self.state = "ended"
        if self.sim.legs.get(self.phone) is self:
            del self.sim.legs[self.phone]

    def _leave(self) -> None:
        self._hand_over()
        if self.party is not None:
            self.sim.set_phone(self.party, "NOT_INUSE")

    def _respond(self, reason: int) -> None:
        """The OriginateResponse: the channel's name and Uniqueid when it answered, else the
        channel asked for and `<unknown>` (fast_originate() has no channel then)."""
        request, channel = self.request, self.channel
        answered = reason == ANSWERED and channel is not None
        application = bool(request.application)
        self._emit(
            originate_response(
                request.action_id,
                success=answered,
                channel=channel.name if answered and channel else request.channel,
                reason=reason,
                uniqueid=channel.uniqueid if answered and channel else "<unknown>",
                caller=request.caller,
                destination=(request.application, request.data)
                if application
                else (request.context, request.exten),
                application=application,
            )
        )

    def _emit(self, data: bytes) -> None:
        self.sim.emit(CALL, data)

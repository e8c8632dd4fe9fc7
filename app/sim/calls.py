"""Simulated calls: one call's channels, bridge and events (transcript 14), phones moving in step.
Do not break: the order of events and device changes inside each step is the transcript's; the
collector's call tracking and the lamps' sequence are tested against it."""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.sim.events import blind_transfer_event, bridge_event, channel_event, dial_event, pickup_event
from app.sim.wire import CALL, Header

if TYPE_CHECKING:
    from app.sim.model import Pbx

_STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}
DOWN, RING, RINGING, UP = 0, 4, 5, 6
TRUNK = "trunk"  # the PJSIP endpoint outside calls come in on
TRUNK_CONTEXT = "from-trunk"
OUTSIDE_NUMBER = re.compile(r"\+?[0-9]{3,20}")


@dataclass(eq=False)
class Channel:
    """A channel snapshot as manager_channels.c prints it (the fields of every channel event)."""

    name: str
    uniqueid: str
    linkedid: str
    caller_num: str
    caller_name: str
    context: str
    exten: str
    state: int = DOWN
    priority: int = 1
    connected_num: str = ""
    connected_name: str = ""
    application: str = ""
    app_data: str = ""
    bridge_id: str = ""
    created: float = field(default_factory=time.monotonic)

    def headers(self, prefix: str = "") -> list[Header]:
        return [
            (f"{prefix}Channel", self.name),
            (f"{prefix}ChannelState", self.state),
            (f"{prefix}ChannelStateDesc", _STATE_DESC[self.state]),
            (f"{prefix}CallerIDNum", self.caller_num or "<unknown>"),
            (f"{prefix}CallerIDName", self.caller_name or "<unknown>"),
            (f"{prefix}ConnectedLineNum", self.connected_num or "<unknown>"),
            (f"{prefix}ConnectedLineName", self.connected_name or "<unknown>"),
            (f"{prefix}Language", "en"),
            (f"{prefix}AccountCode", ""),
            (f"{prefix}Context", self.context),
            (f"{prefix}Exten", self.exten),
            (f"{prefix}Priority", self.priority),
            (f"{prefix}Uniqueid", self.uniqueid),
            (f"{prefix}Linkedid", self.linkedid),
        ]

    def connect(self, other: Channel) -> None:
        self.connected_num, self.connected_name = other.caller_num, other.caller_name


@dataclass(eq=False)
class Bridge:
    """A basic two-party bridge; Asterisk moves it from simple_bridge to native_rtp once both
    channels are in, without an event (transcript 14)."""

    id: str
    technology: str = "simple_bridge"
    channels: int = 0

    def headers(self, prefix: str = "") -> list[Header]:
        """manager_bridges.c ast_manager_build_bridge_state_string_prefix(): `prefix` is
        "Orig" or "Second" in an AttendedTransfer."""
        return [
            (f"{prefix}BridgeUniqueid", self.id),
            (f"{prefix}BridgeType", "basic"),
            (f"{prefix}BridgeTechnology", self.technology),
            (f"{prefix}BridgeCreator", "<unknown>"),
            (f"{prefix}BridgeName", "<unknown>"),
            (f"{prefix}BridgeNumChannels", self.channels),
            (f"{prefix}BridgeVideoSourceMode", "none"),
        ]


def enter_bridge(bridge: Bridge, channel: Channel) -> bytes:
    """`channel` joins `bridge`: the BridgeEnter event (its count includes the newcomer)."""
    bridge.channels += 1
    channel.bridge_id = bridge.id
    return bridge_event("BridgeEnter", bridge, channel)


def leave_bridge(bridge: Bridge, channel: Channel) -> bytes:
    """`channel` leaves `bridge`: the BridgeLeave event (its count without the leaver)."""
    bridge.channels -= 1
    channel.bridge_id = ""
    return bridge_event("BridgeLeave", bridge, channel)


@dataclass(frozen=True)
class Party:
    """One end of a call: a phone (`exten` set) or an outside caller on the trunk."""

    number: str
    name: str
    exten: str | None

    @property
    def endpoint(self) -> str:
        return self.exten or TRUNK


class SimulatedCall:
    """One call through the simulated PBX, from the moment it rings (`Simulator.place_call`)
    to `hang_up` or `give_up`, sending what Asterisk 22 sends for `exten => _10X,1,NoOp()`,
    `n,Dial(PJSIP/${EXTEN},30)` (transcript 14; VarSet and Newexten, dialplan class, are left
    out) and moving the phones' device states in step: callee RINGING, caller INUSE, answered
    INUSE, the party hearing music on hold ONHOLD, NOT_INUSE at the end."""

    def __init__(
        self,
        pbx: Pbx,
        caller: Party,
        callee: Party,
        *,
        channel: Channel | None = None,
        bridge: Bridge | None = None,
    ) -> None:
        """`channel`: the caller's channel, already up (a transferee dialled on to `callee`);
        `bridge`: the one it waits in already, which the callee joins when it answers (an
        attended transfer's consultation bridge)."""
        self.pbx = pbx
        self.caller = caller
        self.callee = callee
        self.held_by = ""
        self._bridge = bridge
        context = pbx.context if caller.exten else TRUNK_CONTEXT
        self.a = channel or pbx.open_channel(caller, context=context, exten=str(callee.exten), state=RING)
        self.b = pbx.open_channel(callee, context=pbx.context, exten="s", linkedid=self.a.linkedid)
        self.state = "ringing"  # up, held, transferring (attended.py), ended
        self._ring(new_caller=channel is None)

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    @property
    def bridge(self) -> Bridge | None:
        """The call's bridge: None until answered, unless it waits in one (`bridge`)."""
        return self._bridge

    def party_of(self, channel: Channel) -> Party:
        return self.caller if channel is self.a else self.callee

    def other(self, channel: Channel) -> Channel:
        """The channel at the other end from `channel`."""
        return self.b if channel is self.a else self.a

    def replace(self, gone: Channel, channel: Channel, party: Party) -> None:
        """`channel` of `party` takes the place of `gone` in this call (an attended transfer
        completed: the target is bridged with the transferee)."""
        if gone is self.a:
            self.a, self.caller = channel, party
        else:
            self.b, self.callee = channel, party

    def _ring(self, *, new_caller: bool = True) -> None:
        """The caller dials: both channels, the dial, the callee ringing."""
        a, b, callee = self.a, self.b, self.callee
        if new_caller:
            self._emit(channel_event("Newchannel", a))
        a.priority, a.application, a.app_data = 2, "Dial", f"PJSIP/{callee.exten},30"
        self._emit(channel_event("Newchannel", b))
        b.connect(a)
        b.exten, b.application, b.app_data = str(callee.exten), "AppDial", "(Outgoing Line)"
        self._emit(channel_event("NewConnectedLine", b))
        self._emit(dial_event("DialBegin", a, b, ("DialString", callee.exten)))
        a.connect(b)
        self._emit(channel_event("NewConnectedLine", a))
        b.state = RINGING
        self._emit(channel_event("Newstate", b))
        self.pbx.set_phone(callee, "RINGING")
        self._emit(dial_event("DialState", a, b, ("DialStatus", "RINGING")))
        self.pbx.set_phone(self.caller, "INUSE")

    def answer(self) -> None:
        """The callee picks up: both channels Up, into a bridge."""
        self._expect("ringing")
        a, b = self.a, self.b
        b.state = UP
        self._emit(channel_event("Newstate", b))
        self.pbx.set_phone(self.callee, "INUSE")
        b.exten = ""
        self._emit(dial_event("DialEnd", a, b, ("DialStatus", "ANSWER")))
        self._bridge_up()

    def _bridge_up(self) -> None:
        """The caller's channel comes up (a channel already up, a transferee's or an
        originated one, says nothing: ast_setstate() is silent without a change) and both
        enter a new bridge, the callee's first."""
        a, b = self.a, self.b
        if a.state != UP:
            a.state = UP
            self._emit(channel_event("Newstate", a))
        bridge = self._bridge
        if bridge is None:
            bridge = self._bridge = Bridge(str(uuid.uuid4()))
            self._emit(bridge_event("BridgeCreate", bridge))
        for channel in (b, a):
            if channel.bridge_id != bridge.id:
                self._emit(enter_bridge(bridge, channel))
        bridge.technology = "native_rtp"
        self.state = "up"

    def hold(self, by: str = "caller") -> None:
        """`by` ("caller" or "callee") puts the other party on hold: Hold is on the holder's
        channel, the other one hears music and its device goes ONHOLD."""
        self._expect("up")
        holder, held, party = self._sides(by)
        self._emit(channel_event("Hold", holder, ("MusicClass", "default")))
        self._emit(channel_event("MusicOnHoldStart", held, ("Class", "default")))
        self.pbx.set_phone(party, "ONHOLD")
        self.state, self.held_by = "held", by

    def unhold(self) -> None:
        self._expect("held")
        holder, held, party = self._sides(self.held_by)
        self._emit(channel_event("Unhold", holder))
        self.pbx.set_phone(party, "INUSE")
        self._emit(channel_event("MusicOnHoldStop", held))
        self.state, self.held_by = "up", ""

    def hang_up(self) -> None:
        """The caller hangs up an answered call (taken off hold first)."""
        if self.state == "held":
            self.unhold()
        self._expect("up")
        a, b, bridge = self.a, self.b, self._bridge
        assert bridge is not None
        self._emit(channel_event("HangupRequest", a, ("Cause", 16)))
        self._leave(bridge, a)
        self._emit(channel_event("SoftHangupRequest", a, ("Cause", 16)))
        self._leave(bridge, b)
        self._emit(bridge_event("BridgeDestroy", bridge))
        self._finish(a, b)

    def give_up(self) -> None:
        """The caller hangs up while it still rings (a missed call). No transcript covers
        this: the events are app_dial's CANCEL path as we read it."""
        self._expect("ringing")
        self._emit(channel_event("HangupRequest", self.a, ("Cause", 16)))
        self._emit(dial_event("DialEnd", self.a, self.b, ("DialStatus", "CANCEL")))
        self._finish(self.b, self.a)  # Dial hangs up the dialed leg, then the caller goes

    def blind_transfer(self, transferer: Channel, context: str, exten: str) -> Channel:
        """BlindTransfer of `transferer`'s bridge to `exten`: the BlindTransfer event, the
        transferer leaves and is hung up, the transferee leaves the bridge (destroyed) and
        goes on in the dialplan at `context`,`exten`; returns the transferee's channel (the
        caller of the next call, `Pbx.dial_on`). bridge_basic.c blind_transfer_bridge() and
        stasis_bridges.c blind_transfer_to_ami() as we read them; no transcript covers it."""
        if self.state == "held":
            self.unhold()
        self._expect("up")
        bridge = self._bridge
        assert bridge is not None
        transferee = self.other(transferer)
        self._emit(blind_transfer_event(transferer, transferee, bridge, context, exten))
        self._emit(leave_bridge(bridge, transferer))
        hang_up_channel(self.pbx, transferer)
        self._emit(leave_bridge(bridge, transferee))
        self._emit(bridge_event("BridgeDestroy", bridge))
        self._end(keep=(transferee,))
        go_to(transferee, context, exten)
        return transferee

    def redirectable(self, *moving: Channel) -> bool:
        """Whether a Redirect can take `moving` (channels of this call) elsewhere: an
        answered call's channels, or the caller of a ringing one (its Dial is cancelled)."""
        if self.state == "ringing":
            return moving == (self.a,)
        return self.state in ("up", "held") and all(self.channel(c.name) is c for c in moving)

    def redirected(self, *moving: Channel) -> None:
        """Redirect of `moving` (manager.c action_redirect(): an async goto that discards the
        bridge): answered, they leave the bridge and a party left alone is hung up (a basic
        two-party bridge dissolves); ringing, the caller's Dial is cancelled and the ringing
        leg hung up. Each moving channel is then free to go on in the dialplan (`go_to`)."""
        if self.state == "held":
            self.unhold()
        if self.state == "ringing":
            self._emit(dial_event("DialEnd", self.a, self.b, ("DialStatus", "CANCEL")))
            hang_up_channel(self.pbx, self.b)
        else:
            self._expect("up")
            bridge = self._bridge
            assert bridge is not None
            alone = [c for c in (self.a, self.b) if c not in moving]
            for channel in (*moving, *alone):
                self._emit(leave_bridge(bridge, channel))
            self._emit(bridge_event("BridgeDestroy", bridge))
            for channel in alone:
                hang_up_channel(self.pbx, channel)
        self._end(keep=moving)

    def picked_up(self, picker: Party, mine: Channel) -> Party:
        """`picker`'s phone, originated into PickupChan(<callee's phone>) and answered
        (`mine`, originate.py), takes the ringing call: the Pickup event (main/pickup.c: the
        picker's channel, the ringing one as Target*), the ringing leg ends, and the caller
        is bridged with the picker. Returns the party that rang. Read from pickup.c and
        app_dial.c, no transcript."""
        self._expect("ringing")
        a, rang = self.a, self.callee
        mine.application, mine.app_data = "PickupChan", f"PJSIP/{rang.exten}"
        self._emit(pickup_event(mine, self.b))
        self._emit(dial_event("DialEnd", a, self.b, ("DialStatus", "ANSWER")))
        hang_up_channel(self.pbx, self.b, 26, "Answered elsewhere")
        self.pbx.set_phone(rang, "NOT_INUSE")
        a.connect(mine)
        self.b, self.callee = mine, picker
        self._bridge_up()
        return rang

    def channel(self, name: str) -> Channel | None:
        return next((c for c in (self.a, self.b) if c.name == name), None)

    def drop(self) -> None:
        """Forget the call without a word (the PBX restarted)."""
        for channel in (self.a, self.b):
            self.pbx.close_channel(channel)
        self.state = "ended"
        self.pbx.end_call(self, quiet=True)

    def _finish(self, first: Channel, second: Channel) -> None:
        for channel in (first, second):
            hang_up_channel(self.pbx, channel)
        self._end()

    def _end(self, keep: tuple[Channel, ...] = ()) -> None:
        """The call is over; the phones of the channels in `keep` stay in use (their
        channels live on in the dialplan), the others are free."""
        self.state = "ended"
        self.pbx.end_call(self, keep={p.exten for p in map(self.party_of, keep) if p.exten})

    def _leave(self, bridge: Bridge, channel: Channel) -> None:
        self._emit(leave_bridge(bridge, channel))

    def _sides(self, by: str) -> tuple[Channel, Channel, Party]:
        """(holder's channel, held channel, held party)."""
        if by == "caller":
            return self.a, self.b, self.callee
        if by == "callee":
            return self.b, self.a, self.caller
        raise ValueError(f"hold by 'caller' or 'callee', not {by!r}")

    def _expect(self, state: str) -> None:
        if self.state != state:
            raise RuntimeError(f"the call {self.caller.number} -> {self.callee.number} is {self.state}")

    def _emit(self, data: bytes) -> None:
        self.pbx.emit(CALL, data)


def hang_up_channel(pbx: Pbx, channel: Channel, cause: int = 16, text: str = "Normal Clearing") -> None:
    """The Hangup event of `channel` (Q.850 `cause` and its text, main/channel.c causes[]),
    and the channel is gone."""
    pbx.emit(CALL, channel_event("Hangup", channel, ("Cause", cause), ("Cause-txt", text)))
    pbx.close_channel(channel)


def go_to(channel: Channel, context: str, exten: str) -> None:
    """`channel` goes on in the dialplan at `context`,`exten`,1, whose extensions run
    `Dial(PJSIP/${EXTEN},30)` (the next call: `Pbx.dial_on`)."""
    channel.context, channel.exten, channel.priority = context, exten, 1
    channel.application, channel.app_data = "Dial", f"PJSIP/{exten},30"


def call_schedule(
    call: SimulatedCall,
    *,
    ring: float,
    talk: float,
    hold: float | None = None,
    hold_by: str = "caller",
    answer: bool = True,
) -> list[tuple[float, Callable[[], None]]]:
    """The steps of a ringing call, each with the seconds to wait before it: it rings `ring`
    seconds, then the caller gives up or the callee answers; they talk `talk` seconds (with
    a hold of `hold` seconds in the middle, when given) and the caller hangs up."""
    if not answer:
        return [(ring, call.give_up)]
    steps: list[tuple[float, Callable[[], None]]] = [(ring, call.answer)]
    if hold is None:
        return [*steps, (talk, call.hang_up)]
    return [
        *steps,
        (talk / 2, functools.partial(call.hold, hold_by)),
        (hold, call.unhold),
        (talk / 2, call.hang_up),
    ]

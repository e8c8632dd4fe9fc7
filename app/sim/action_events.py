"""Builders of the events the call-moving actions cause (transfers.py, originate.py, attended.py):
OriginateResponse, the dial API's DialBegin/DialState/DialEnd, NewCallerid, AttendedTransfer,
ChanSpyStart/ChanSpyStop. Do not break: header names and order are Asterisk 22's, transcript 16
where it shows them (OriginateResponse, the dial API, NewCallerid), else the C source named."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.sim.events import channel_event
from app.sim.wire import Header, action_id_header, encode

if TYPE_CHECKING:
    from app.sim.calls import Bridge, Channel

_CALL_CLASS: Header = ("Privilege", "call,all")

# include/asterisk/frame.h AST_CONTROL_*: the Reason of an OriginateResponse (main/pbx.c
# pbx_dial_reason(): answered, busy, no answer (the phone was ringing), anything else).
ANSWERED, BUSY, NO_ANSWER, FAILURE = 4, 5, 3, 0


def originate_response(
    action_id: str,
    *,
    success: bool,
    channel: str,
    reason: int,
    uniqueid: str,
    caller: tuple[str, str],
    destination: tuple[str, str],
    application: bool,
) -> bytes:
    """main/manager.c fast_originate(): `ActionID` right after `Privilege` (when the client
    sent one); `destination` is (Context, Exten), or (Application, Data) when `application`;
    `caller` is the Originate's (CallerIDNum, CallerIDName), `<unknown>` where not given.
    Transcript 16 shows the Context/Exten form."""
    names = ("Application", "Data") if application else ("Context", "Exten")
    return encode(
        [
            ("Event", "OriginateResponse"),
            _CALL_CLASS,
            *action_id_header(action_id),
            ("Response", "Success" if success else "Failure"),
            ("Channel", channel),
            *zip(names, destination, strict=True),
            ("Reason", reason),
            ("Uniqueid", uniqueid),
            ("CallerIDNum", caller[0] or "<unknown>"),
            ("CallerIDName", caller[1] or "<unknown>"),
        ]
    )


def outgoing_dial_event(event: str, dialed: Channel, *extra: Header) -> bytes:
    """DialBegin/DialState/DialEnd of the dial API an Originate uses (main/dial.c): no
    caller channel, only the dialed one as Dest* (transcript 16)."""
    return encode([("Event", event), _CALL_CLASS, *dialed.headers("Dest"), *extra])


def new_callerid(channel: Channel) -> bytes:
    """NewCallerid after an Originate set the channel's caller ID (transcript 16)."""
    presentation = ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")
    return channel_event("NewCallerid", channel, presentation)


def attended_transfer_event(
    transferer: Channel, orig: Bridge, second: Bridge, transferee: Channel, target: Channel
) -> bytes:
    """main/stasis_bridges.c attended_transfer_to_ami() for a feature (DTMF) transfer that
    merged the consultation bridge into the transferee's: the transferer's channel in both
    bridges (OrigTransferer*, SecondTransferer*: it is one channel, moved between them), the
    bridges (Orig*, Second*), Transferee*, TransferTarget*, IsExternal No (not asked by
    the phone's protocol), DestType Bridge and the bridge that remains."""
    return encode(
        [
            ("Event", "AttendedTransfer"),
            _CALL_CLASS,
            ("Result", "Success"),
            *transferer.headers("OrigTransferer"),
            *orig.headers("Orig"),
            *transferer.headers("SecondTransferer"),
            *second.headers("Second"),
            *transferee.headers("Transferee"),
            *target.headers("TransferTarget"),
            ("IsExternal", "No"),
            ("DestType", "Bridge"),
            ("DestBridgeUniqueid", orig.id),
        ]
    )


def chanspy_event(event: str, spyer: Channel, spyee: Channel) -> bytes:
    """ChanSpyStart/ChanSpyStop (main/manager_channels.c): the spyer's channel, then the
    spyee's, prefixes Spyer and Spyee."""
    return encode([("Event", event), _CALL_CLASS, *spyer.headers("Spyer"), *spyee.headers("Spyee")])

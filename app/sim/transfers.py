"""The simulator's call-moving actions: Originate, Redirect, BlindTransfer, Atxfer, as Asterisk 22's
main/manager.c answers them. Do not break: the reply goes out before the events its action causes,
and the reply texts are manager.c's own, checked in its order (the panel turns them into words).
What follows a reply: originate.py (the originating phone rings first), attended.py, calls.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.sim.attended import AttendedTransfer
from app.sim.calls import Channel, Party, SimulatedCall, go_to
from app.sim.legs import answer_later
from app.sim.originate import Originated, OriginateRequest
from app.sim.wire import Frame, error, response

if TYPE_CHECKING:
    from app.sim.server import Simulator

_INTEGER = re.compile(r"\s*([+-]?[0-9]+)")  # what sscanf("%30d") reads
_CALLERID = re.compile(r'\s*(?:"([^"]*)"|([^<"]*?))\s*<([^>]*)>.*', re.DOTALL)
_NUMBER = re.compile(r"[0-9+*#() .\-]+")
DEFAULT_TIMEOUT_MS = 30000  # action_originate(): `to`

Reply = tuple[bytes, Callable[[], None] | None]


def originate(sim: Simulator, frame: Frame, action_id: str) -> Reply:
    """action_originate(): the checks in its order, then "Originate successfully queued"
    (transcripts 15, 16) and the call follows (originate.py). Every Originate is taken as
    `Async: true` (the panel's): a synchronous one's reply would wait for the phone."""
    channel, exten, context = frame.get("Channel"), frame.get("Exten"), frame.get("Context")
    priority, timeout = frame.get("Priority"), frame.get("Timeout")
    if not channel:
        return error(action_id, "Channel not specified"), None
    if priority and _integer(priority) is None:  # no labels in the simulated dialplan
        return error(action_id, "Invalid priority"), None
    if timeout and _integer(timeout) is None:
        return error(action_id, "Invalid timeout"), None
    if "/" not in channel:
        return error(action_id, "Invalid channel"), None
    if (_integer(priority) or 0) and not _exists(sim, context, exten):
        return error(action_id, "Extension does not exist."), None
    request = OriginateRequest(
        action_id=action_id,
        channel=channel,
        context=context,
        exten=exten,
        application=frame.get("Application"),
        data=frame.get("Data"),
        caller=parse_callerid(frame.get("CallerID")),
        timeout=(_integer(timeout) if timeout else DEFAULT_TIMEOUT_MS) / 1000,
    )
    return response("Success", action_id, ("Message", "Originate successfully queued")), Originated(
        sim, request
    ).start


def redirect(sim: Simulator, frame: Frame, action_id: str) -> Reply:
    """action_redirect(): `Channel` (and `ExtraChannel`) leave their call and go on in the
    dialplan at `Context`,`Exten` (`ExtraContext`,`ExtraExten`); a party left alone in a
    two-party bridge is hung up (calls.py `redirected`). Channels in no call (an originating
    phone, a listening one) are not simulated: "Redirect failed"."""
    name, extra = frame.get("Channel"), frame.get("ExtraChannel")
    context, exten, priority = frame.get("Context"), frame.get("Exten"), frame.get("Priority")
    extra_context = frame.get("ExtraContext")
    checks = (
        (not name, "Channel not specified"),
        (not context, "Context not specified"),
        (not exten, "Exten not specified"),
        (not priority, "Priority not specified"),
        ((_integer(priority) or 0) < 1, "Priority is invalid"),
    )
    if extra and extra_context:
        extra_priority = frame.get("ExtraPriority")
        checks += (
            (not frame.get("ExtraExten"), "ExtraExten not specified"),
            (not extra_priority, "ExtraPriority not specified"),
            ((_integer(extra_priority) or 0) < 1, "ExtraPriority is invalid"),
        )
    if refusal := next((text for failed, text in checks if failed), None):
        return error(action_id, refusal), None
    if not sim.has_channel(name):
        return error(action_id, f"Channel does not exist: {name}"), None
    first = (context, exten)
    if not extra:
        moves = _redirects(sim, [(name, first)])
        if moves is None:
            return error(action_id, "Redirect failed"), None
        return response("Success", action_id, ("Message", "Redirect successful")), moves
    if not sim.has_channel(extra):
        return error(action_id, f"ExtraChannel does not exist: {extra}"), None
    second = (extra_context, frame.get("ExtraExten")) if extra_context else first
    if _redirects(sim, [(name, first)]) is None:
        return error(action_id, "Redirect failed"), None
    both = _redirects(sim, [(name, first), (extra, second)])
    if both is None:  # Asterisk has moved the first channel by then
        return error(action_id, "Secondary redirect failed"), _redirects(sim, [(name, first)])
    return response("Success", action_id, ("Message", "Dual Redirect successful")), both


def blind_transfer(sim: Simulator, frame: Frame, action_id: str) -> Reply:
    """action_blind_transfer(): `Channel` is the transferer; the party bridged with it goes
    to `Context`,`Exten`. Its texts: "No channel specified", "No extension specified",
    "Channel specified does not exist", "Transfer invalid" (not in a bridge), "Transfer
    succeeded"."""
    name, exten = frame.get("Channel"), frame.get("Exten")
    if refused := _unfit(sim, name, exten, action_id):
        return refused, None
    call = sim.call_of(name)
    transferer = call.channel(name) if call is not None else None
    if call is None or transferer is None or call.state not in ("up", "held"):
        return error(action_id, "Transfer invalid"), None
    context = frame.get("Context") or transferer.context

    def move() -> None:
        party = call.party_of(call.other(transferer))
        _dial_on(sim, call.blind_transfer(transferer, context, exten), party, exten)

    return response("Success", action_id, ("Message", "Transfer succeeded")), move


def atxfer(sim: Simulator, frame: Frame, action_id: str) -> Reply:
    """action_atxfer(): "Atxfer successfully queued" once the channel exists; it queues the
    feature code's DTMF and the extension on the channel, so the transfer (attended.py) starts
    only where the channel is in an answered call, to an extension of `Context` (TRANSFER_CONTEXT;
    else the channel's own). Anywhere else the digits go nowhere."""
    name, exten = frame.get("Channel"), frame.get("Exten")
    if refused := _unfit(sim, name, exten, action_id):
        return refused, None
    call = sim.call_of(name)
    transferer = call.channel(name) if call is not None else None

    def start() -> None:
        if call is None or transferer is None or call.state not in ("up", "held"):
            return
        context = frame.get("Context") or transferer.context
        AttendedTransfer(sim, call, transferer, exten).start(exists=_exists(sim, context, exten))

    return response("Success", action_id, ("Message", "Atxfer successfully queued")), start


def parse_callerid(text: str) -> tuple[str, str]:
    """callerid.c ast_callerid_parse() and ast_shrink_phone_number(), for what an Originate's
    CallerID holds: `"Name" <number>`, `Name <number>`, a number alone or a name alone;
    (number, name), "" where not given."""
    if match := _CALLERID.fullmatch(text):
        name = match.group(1) if match.group(1) is not None else match.group(2).strip()
        number = match.group(3)
    elif _NUMBER.fullmatch(text.strip()):
        name, number = "", text.strip()
    else:
        name, number = text.strip().strip('"'), ""
    return re.sub(r"[() .\-]", "", number), name


def _redirects(sim: Simulator, moves: list[tuple[str, tuple[str, str]]]) -> Callable[[], None] | None:
    """The step that redirects each channel (by name) to its (context, exten), or None when
    one of them cannot be (in no call, a ringing callee's leg, a transfer under way)."""
    found: list[tuple[SimulatedCall, Channel, tuple[str, str]]] = []
    for name, target in dict(moves).items():  # the same channel twice moves once
        call = sim.call_of(name)
        channel = call.channel(name) if call is not None else None
        if call is None or channel is None:
            return None
        found.append((call, channel, target))
    for call in {id(c): c for c, _, _ in found}.values():
        if not call.redirectable(*(ch for c, ch, _ in found if c is call)):
            return None

    def move() -> None:
        calls = {id(c): c for c, _, _ in found}.values()
        for call in calls:
            call.redirected(*(ch for c, ch, _ in found if c is call))
        for call, channel, (context, exten) in found:
            go_to(channel, context, exten)
            _dial_on(sim, channel, call.party_of(channel), exten)

    return move


def _dial_on(sim: Simulator, channel: Channel, party: Party, exten: str) -> None:
    """The moved channel dials `exten`; the colleague answers after a moment."""
    call = sim.dial_on(channel, party, exten)
    if call is not None:
        answer_later(sim, call)


def _unfit(sim: Simulator, channel: str, exten: str, action_id: str) -> bytes | None:
    """The first checks of action_blind_transfer() and action_atxfer(), the same texts."""
    if not channel:
        return error(action_id, "No channel specified")
    if not exten:
        return error(action_id, "No extension specified")
    if not sim.has_channel(channel):
        return error(action_id, "Channel specified does not exist")
    return None


def _exists(sim: Simulator, context: str, exten: str) -> bool:
    """ast_exists_extension() in the simulated dialplan: each extension of its context."""
    return context == sim.context and exten in sim.extensions


def _integer(text: str) -> int | None:
    match = _INTEGER.match(text)
    return int(match.group(1)) if match else None

"""The simulator's call-moving actions: Originate, BlindTransfer, Atxfer, as Asterisk 22's
main/manager.c answers them. Do not break: the reply goes out before the events its action
causes, and the reply texts are manager.c's own (the panel turns them into words)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.sim.wire import Frame, error, response

if TYPE_CHECKING:
    from app.sim.calls import SimulatedCall
    from app.sim.server import Simulator

# Seconds a simulated colleague lets a transferred or originated call ring before answering:
# long enough for a test (and a viewer) to see the ring, short enough for a suite.
ANSWER_AFTER = 0.3
_PHONE = re.compile(r"PJSIP/([^/&,-]+)", re.IGNORECASE)

Reply = tuple[bytes, Callable[[], None] | None]


def originate(sim: Simulator, frame: Frame, action_id: str) -> Reply:
    """action_originate(): with `Async: true` the reply is "Originate successfully queued"
    (transcripts 15, 16) and the call follows. Here the originating phone answers at once
    and the call to `Exten` rings (a real phone rings first: the panel sees the same lamps
    a moment later). `Application: PickupChan` with `Data: PJSIP/101` picks up the call
    ringing there; other applications (ChanSpy) are queued and not simulated."""
    channel, exten = frame.get("Channel"), frame.get("Exten")
    if not channel:
        return error(action_id, "Channel not specified"), None
    if "/" not in channel:
        return error(action_id, "Invalid channel"), None
    match = _PHONE.fullmatch(channel)
    caller = match.group(1) if match else ""

    def place() -> None:
        application, data = frame.get("Application").lower(), frame.get("Data")
        if application == "pickupchan" and (target := _PHONE.match(data)) is not None:
            sim.pick_up(caller, target.group(1))
            return
        if application or caller not in sim.extensions or exten == caller:
            return  # Asterisk says "Failure" in an OriginateResponse event (class call)
        try:
            call = sim.place_call(caller, exten)
        except ValueError:
            return  # busy or no such extension: the originated channel fails
        answer_later(sim, call)

    return response("Success", action_id, ("Message", "Originate successfully queued")), place


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
    context = frame.get("Context") or sim.context

    def move() -> None:
        party = call.callee if transferer is call.a else call.caller
        transferee = call.blind_transfer(transferer, context, exten)
        next_call = sim.dial_on(transferee, party, exten)
        if next_call is not None:
            answer_later(sim, next_call)

    return response("Success", action_id, ("Message", "Transfer succeeded")), move


def atxfer(sim: Simulator, frame: Frame, action_id: str) -> Reply:
    """action_atxfer(): "Atxfer successfully queued" once the channel exists; the attended
    transfer itself (a consultation call) is not simulated."""
    if refused := _unfit(sim, frame.get("Channel"), frame.get("Exten"), action_id):
        return refused, None
    return response("Success", action_id, ("Message", "Atxfer successfully queued")), None


def _unfit(sim: Simulator, channel: str, exten: str, action_id: str) -> bytes | None:
    """The first checks of action_blind_transfer() and action_atxfer(), the same texts."""
    if not channel:
        return error(action_id, "No channel specified")
    if not exten:
        return error(action_id, "No extension specified")
    if not sim.has_channel(channel):
        return error(action_id, "Channel specified does not exist")
    return None


def answer_later(sim: Simulator, call: SimulatedCall) -> None:
    """The colleague answers after ANSWER_AFTER seconds, if the call still rings."""

    async def answer() -> None:
        await asyncio.sleep(ANSWER_AFTER)
        if call.state == "ringing":
            call.answer()

    sim._spawn(answer(), name=f"ami-simulator-answer-{call.callee.number}")

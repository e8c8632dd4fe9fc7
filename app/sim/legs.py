"""A phone's leg outside a call (`Pbx.legs`): ringing for an Originate, listening with ChanSpy,
the target of an attended transfer while consulted; and the simulated people's reaction times.
Do not break: a phone with a leg is busy (`Pbx.busy`), and each timed step checks that its leg
is still where it left it (a test, a restart or the other party may have moved it meanwhile)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.sim.calls import Channel, SimulatedCall
    from app.sim.server import Simulator

# Seconds a simulated person takes to pick up a ringing phone (their own, for an Originate, or
# a colleague's, for a transferred or originated call): long enough for a test (and a viewer)
# to see the ring, short enough for a suite.
ANSWER_AFTER = 0.3


class Leg(Protocol):
    def channel_closed(self, channel: Channel) -> None:
        """A channel of the PBX hung up (ChanSpy's `E` option follows its spied channel)."""

    def drop(self) -> None:
        """The PBX restarted: forget the leg without a word."""


def after(sim: Simulator, seconds: float, step: Callable[[], None], name: str) -> None:
    """Run `step` in `seconds` (0: once the events under way have gone out), as a task of
    the simulator (stopped with it)."""

    async def later() -> None:
        await asyncio.sleep(seconds)
        step()

    sim._spawn(later(), name=f"ami-simulator-{name}")


def answer_later(sim: Simulator, call: SimulatedCall) -> None:
    """The colleague answers after ANSWER_AFTER seconds, if the call still rings."""

    def answer() -> None:
        if call.state == "ringing":
            call.answer()

    after(sim, ANSWER_AFTER, answer, f"answer-{call.callee.number}")

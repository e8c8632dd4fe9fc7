"""Random traffic ("churn"): calls inside and from outside, presences, phones going offline,
and where the PBX has queues, callers through them and agents pausing (lunch, break,
after-call work). Do not break: all randomness comes from one seeded generator, drawn in the same order, on a
virtual clock: a seed gives the same traffic however busy the event loop is (tests rely on it)."""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import random
from collections.abc import Callable

from app.sim.calls import SimulatedCall, call_schedule
from app.sim.model import Pbx
from app.sim.names import random_name

log = logging.getLogger(__name__)

# Each step starts something, with these weights; the later steps of a call come from its
# schedule. Ring, talk, hold and offline lengths are nominal seconds; churn shortens them
# when R is high for the number of extensions, so that about R state changes a second happen
# with at most _BUSY_SHARE of the extensions in calls.
_CHURN_KINDS = {"internal": 0.55, "trunk": 0.35, "presence": 0.05, "offline": 0.05}
_MISSED_SHARE = 0.2  # calls nobody answers: the caller gives up while it rings
_HOLD_SHARE = 0.25  # answered calls with a hold in them
_BUSY_SHARE = 0.3
_RING_SECONDS = (2.0, 6.0)
_TALK_MEAN = 25.0
_HOLD_SECONDS = (3.0, 10.0)
_OFFLINE_SECONDS = (5.0, 30.0)
_CHURN_PRESENCE = (
    ("available", "", ""),
    ("away", "lunch", "Back at 2"),
    ("away", "", ""),
    ("dnd", "meeting", "In a meeting"),
    ("xa", "vacation", "On holiday"),
    ("chat", "", ""),
)
# The device changes a churn step makes on average: an answered call between extensions 5
# (callee RINGING, caller INUSE, callee INUSE, both NOT_INUSE) and 2 more with a hold, a missed
# one 4; a call from outside 3 or 2 (the trunk has no lamp, and the extension is the one that
# holds); a presence change counts 1, a phone going offline and back 2.
_INTERNAL_CHANGES = (1 - _MISSED_SHARE) * (5 + 2 * _HOLD_SHARE) + _MISSED_SHARE * 4
_TRUNK_CHANGES = (1 - _MISSED_SHARE) * 3 + _MISSED_SHARE * 2
_CHANGES_PER_STEP = (
    _CHURN_KINDS["internal"] * _INTERNAL_CHANGES
    + _CHURN_KINDS["trunk"] * _TRUNK_CHANGES
    + _CHURN_KINDS["presence"] * 1
    + _CHURN_KINDS["offline"] * 2
)
# Queues (where the PBX has any): a queue step a second per 20 device changes a second (at
# least one in 20 s): a caller joins (3 in 5), or an agent pauses or comes back. Nominal
# seconds as for calls, shortened by the same scale; a caller gives up after its patience.
_QUEUE_STEPS = 0.05
_QUEUE_STEPS_MIN = 0.05
_QUEUE_JOIN_SHARE = 0.6
_PAUSES = (("lunch", (600.0, 1800.0)), ("break", (120.0, 600.0)), ("meeting", (300.0, 900.0)))
_WRAP_UP_SHARE = 0.5  # answered queue calls followed by a pause for after-call work
_WRAP_UP_SECONDS = (15.0, 60.0)
_PATIENCE = (20.0, 120.0)
_RETRY_SECONDS = (2.0, 5.0)  # a caller nobody could take is offered again after this
_QUEUE_TALK_MEAN = 60.0
_CALL_SHARE = _CHURN_KINDS["internal"] + _CHURN_KINDS["trunk"]
_PARTIES_PER_CALL = (2 * _CHURN_KINDS["internal"] + _CHURN_KINDS["trunk"]) / _CALL_SHARE
_NOMINAL_CALL_SECONDS = sum(_RING_SECONDS) / 2 + _TALK_MEAN + _HOLD_SHARE * sum(_HOLD_SECONDS) / 2


class Churn:
    """About `rate` device changes a second on `pbx`, drawn from a generator seeded with
    `seed`. `run` goes on until cancelled; whoever starts it owns the task."""

    def __init__(self, pbx: Pbx, rate: float, seed: int | None = None) -> None:
        self._pbx = pbx
        self.rate = rate
        self._rng = random.Random(seed)
        self._offline: set[str] = set()  # extensions churn took off the network
        self._agenda: list[tuple[float, int, Callable[[], None]]] = []  # later steps, by time
        self._agenda_seq = itertools.count()
        self._clock = 0.0  # virtual time, seconds since `run` started
        # Queue traffic draws from its own generator: a PBX without queues sees exactly the
        # traffic (and a seed the draws) it saw before queues existed.
        self._queue_rng = random.Random(None if seed is None else seed + 1)

    async def run(self) -> None:
        """New calls (now and then a presence change or a phone going off the network) as a
        Poisson process, and the later steps of each call from its schedule, on one virtual
        clock: a seed gives the same traffic however busy the event loop is."""
        loop = asyncio.get_running_loop()
        origin = loop.time()
        self._agenda.clear()
        self._clock = 0.0
        rate = self.rate / _CHANGES_PER_STEP
        if self._pbx.queues.queues and self.rate > 0:
            self._later(self._queue_rng.expovariate(self._queue_rate()), self._queue_step)
        next_start = self._rng.expovariate(rate)
        while True:
            if self._agenda and self._agenda[0][0] <= next_start:
                at, _, action = heapq.heappop(self._agenda)
            else:
                at, action = next_start, self._step
                next_start += self._rng.expovariate(rate)
            await asyncio.sleep(max(0.0, origin + at - loop.time()))
            self._clock = at
            action()

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._agenda, (self._clock + delay, next(self._agenda_seq), action))

    def _step(self) -> None:
        pbx, rng = self._pbx, self._rng
        kind = rng.choices(list(_CHURN_KINDS), list(_CHURN_KINDS.values()))[0]
        free = [e for e in pbx.idle_extensions() if e not in self._offline]
        if kind == "internal" and len(free) >= 2:
            caller, callee = rng.sample(free, 2)
            self._call(caller, callee, None, rng.choice(("caller", "callee")))
        elif kind == "trunk" and free:
            callee = rng.choice(free)
            number, name = self._outside_caller()
            self._call(number, callee, name, "callee")
        elif kind == "presence" and pbx.extensions:
            exten = rng.choice(pbx.extensions)
            pbx.set_presence(exten, *rng.choice(_CHURN_PRESENCE))
        elif kind == "offline" and free:
            self._go_offline(rng.choice(free))

    def _call(self, caller: str, callee: str, name: str | None, hold_by: str) -> None:
        scale = self._scale()
        call = self._pbx.place_call(caller, callee, caller_name=name)
        hold = None
        if self._rng.random() < _HOLD_SHARE:
            hold = self._rng.uniform(*_HOLD_SECONDS) * scale
        steps = call_schedule(
            call,
            ring=self._rng.uniform(*_RING_SECONDS) * scale,
            talk=max(2.0, self._rng.expovariate(1 / _TALK_MEAN)) * scale,
            hold=hold,
            hold_by=hold_by,
            answer=self._rng.random() >= _MISSED_SHARE,
        )
        at = 0.0
        for delay, step in steps:
            at += delay
            self._later(at, functools.partial(_step_unless_ended, call, step))

    def _go_offline(self, exten: str) -> None:
        """A phone drops off the network and comes back a while later."""
        device = f"Custom:{exten}"
        self._offline.add(exten)
        self._pbx.set_device_state(device, "UNAVAILABLE")

        def back() -> None:
            self._offline.discard(exten)
            if self._pbx.device_state(device) == "UNAVAILABLE":
                self._pbx.set_device_state(device, "NOT_INUSE")

        self._later(self._rng.uniform(*_OFFLINE_SECONDS) * self._scale(), back)

    def _outside_caller(self, rng: random.Random | None = None) -> tuple[str, str]:
        """A random outside caller: a German number and a name."""
        rng = rng or self._rng
        number = f"+49{rng.choice(('30', '40', '89', '221', '69', '711'))}"
        number += "".join(rng.choice("0123456789") for _ in range(rng.randint(6, 8)))
        return number, random_name(rng)

    # --- queues: callers through them, agents pausing ---

    def _queue_rate(self) -> float:
        return max(_QUEUE_STEPS_MIN, self.rate * _QUEUE_STEPS)

    def _queue_step(self) -> None:
        rng, queues = self._queue_rng, self._pbx.queues
        self._later(rng.expovariate(self._queue_rate()), self._queue_step)
        name = rng.choice(sorted(queues.queues))
        if rng.random() < _QUEUE_JOIN_SHARE:
            self._queue_caller(name)
            return
        members = [m for m in queues.queues[name].members if not m.incall and (m.paused or m.available)]
        if members:
            member = rng.choice(members)
            if member.paused:
                self._pause(member.interface, None)
            else:
                reason, seconds = rng.choice(_PAUSES)
                self._pause(member.interface, reason, rng.uniform(*seconds) * self._scale())

    def _pause(self, interface: str, reason: str | None, seconds: float = 0.0) -> None:
        """QueuePause without a queue: the member paused (`reason`) or back (None) in every
        queue it serves; a pause ends by itself after `seconds`."""
        queues = self._pbx.queues
        found = [(q, m) for q in queues.queues.values() if (m := q.member(interface)) is not None]
        for queue, member in found:
            if member.paused != (reason is not None):
                queues.set_paused(queue, member, reason is not None, reason or "")
        if reason is not None:

            def back() -> None:
                if any(m.paused and m.reason == reason for _, m in found):
                    self._pause(interface, None)

            self._later(seconds, back)

    def _queue_caller(self, name: str) -> None:
        """A caller from outside joins `name`, is offered to its members until one answers or
        its patience runs out; an answered call ends after a talk, often followed by a
        pause for after-call work."""
        rng, queues = self._queue_rng, self._pbx.queues
        scale = self._scale()
        number, caller_name = self._outside_caller(rng)
        entry = queues.join(name, number, caller_name)
        waiting = queues.queues[name].entries

        def offer() -> None:
            if entry not in waiting or entry.agents:
                return
            if queues.ring(name, entry):
                self._later(rng.uniform(*_RING_SECONDS) * scale, answer)
            else:
                self._later(rng.uniform(*_RETRY_SECONDS) * scale, offer)

        def answer() -> None:
            if entry in waiting and entry.agents:
                queues.connect(name, entry)
                self._later(max(5.0, rng.expovariate(1 / _QUEUE_TALK_MEAN)) * scale, hang_up)

        def hang_up() -> None:
            assert entry.agent is not None
            member = entry.agent[0]
            queues.complete(name, entry)
            if rng.random() < _WRAP_UP_SHARE and not member.paused:
                self._pause(member.interface, "after-call work", rng.uniform(*_WRAP_UP_SECONDS) * scale)

        def give_up() -> None:
            if entry in waiting:
                queues.abandon(name, entry)

        self._later(rng.uniform(1.0, 3.0) * scale, offer)
        self._later(rng.uniform(*_PATIENCE) * scale, give_up)

    def _scale(self) -> float:
        """How much shorter than nominal churn's calls are, so that R changes a second fit
        into the extensions (Little's law: calls at once = call rate x call length)."""
        call_rate = self.rate / _CHANGES_PER_STEP * _CALL_SHARE
        longest = _BUSY_SHARE * max(1, len(self._pbx.extensions)) / (_PARTIES_PER_CALL * call_rate)
        return min(1.0, longest / _NOMINAL_CALL_SECONDS)


def _step_unless_ended(call: SimulatedCall, step: Callable[[], None]) -> None:
    """A scheduled step of a call that may have ended meanwhile (a restart dropped it) or
    been moved on by hand."""
    if call.ended:
        return
    try:
        step()
    except RuntimeError as problem:
        log.debug("churn: %s", problem)


def demo_queues(pbx: Pbx) -> None:
    """The demo's queues.conf: `support` (the first half of the extensions, at most 8) and
    `sales` (the next ones, at most 6, and the first support agent too), static members
    `PJSIP/<exten>` followed through the extension's hint device."""
    extens = list(pbx.extensions)
    half = max(1, min(8, len(extens) // 2))
    support, sales = extens[:half], extens[half : half + 6]

    def members(extens: list[str]) -> list[tuple[str, str, str]]:
        return [(f"PJSIP/{e}", pbx.name_of(e), f"Custom:{e}") for e in extens]

    pbx.queues.add_queue("support", members(support), strategy="ringall", servicelevel=30)
    if sales:
        pbx.queues.add_queue("sales", members([*sales, support[0]]), strategy="leastrecent", servicelevel=60)

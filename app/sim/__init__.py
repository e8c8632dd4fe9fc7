"""A simulated Asterisk 22 PBX speaking AMI byte for byte like the real one (tests/fixtures/ami/),
for tests, benchmarks, the demo and `blf-panel simulate`; production imports it only lazily, where
the demo starts. Where the brief and Asterisk differ, Asterisk's behaviour (main/manager.c,
funcs/func_devstate.c, funcs/func_presencestate.c, main/db.c, res/res_pjsip) wins, because the
point is to find the collector's bugs before a real PBX does.

Layers: wire <- events <- calls, model (`Pbx`) <- churn, session <- server (`Simulator`).
"""

from app.sim.calls import SimulatedCall, call_schedule
from app.sim.model import Pbx, Presence
from app.sim.names import check_name, generated_name, load_names
from app.sim.server import Simulator, run_simulator
from app.sim.wire import BANNER, MAX_FRAME_BYTES

__all__ = [
    "BANNER",
    "MAX_FRAME_BYTES",
    "Pbx",
    "Presence",
    "SimulatedCall",
    "Simulator",
    "call_schedule",
    "check_name",
    "generated_name",
    "load_names",
    "run_simulator",
]

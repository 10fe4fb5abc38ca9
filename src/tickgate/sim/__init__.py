"""The Dhan-compatible simulator: a real WebSocket server speaking Dhan's protocol, with a pure core.

Layout (each module one concept): ``core`` (what Dhan's server holds per socket and its limit and token
rules; pure, shared with the planner's stateful test), ``records`` (what it saw), ``universe`` (which
instruments exist), ``pricing`` (the market model), ``emitter`` (packets out), ``faults``, ``control`` (the
plain-HTTP side) and ``server`` (the thin websockets shell, :class:`Simulator`).
"""

from tickgate.sim.records import Breach, SimulatorStats, SocketRecord
from tickgate.sim.server import (
    DEFAULT_CLIENT_ID,
    DEFAULT_TOKEN,
    Simulator,
    announce,
    run,
)
from tickgate.sim.universe import RegistryUniverse, StaticUniverse, Universe, make_spec, spec_from_instrument

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_TOKEN",
    "Breach",
    "RegistryUniverse",
    "Simulator",
    "SimulatorStats",
    "SocketRecord",
    "StaticUniverse",
    "Universe",
    "announce",
    "make_spec",
    "run",
    "spec_from_instrument",
]

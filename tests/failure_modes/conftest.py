"""Helpers shared by the named failure-mode tests: exact plan/simulator comparisons, socket lookup and
"ticks flow again" checks. Fixtures are reused from the suites that own them (imported per test module,
so the feed, service and API simulators never clash)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.feed import FeedManager
from tickgate.planner import Planner
from tickgate.sim import Simulator

# Generous: the tests must hold on a loaded 2-core machine; every wait returns as soon as its condition does.
WAIT_S = 20.0


def sim_view(sim: Simulator) -> dict[int, dict[InstrumentKey, FeedMode]]:
    return {sid: view for sid, view in sim.view().items() if view}


def sim_count(sim: Simulator) -> int:
    """Instruments the broker side believes are subscribed, over every open socket."""
    return sum(len(v) for v in sim.view().values())


def plan_count(planner: Planner) -> int:
    return sum(len(v) for v in planner.actual().values())


def same_as_plan(planner: Planner, sim: Simulator) -> bool:
    """Everything desired is placed, and socket for socket, key for key and mode for mode, the simulator
    carries exactly that plan."""
    totals = planner.totals()
    if totals.placed != totals.desired:
        return False
    plan = {frozenset(v.items()) for v in planner.actual().values() if v}
    view = {frozenset(v.items()) for v in sim.view().values() if v}
    return plan == view and plan_count(planner) == sim_count(sim)


async def converged(manager: FeedManager, sim: Simulator, timeout: float = WAIT_S) -> None:
    ok = await manager.wait_until(lambda: same_as_plan(manager.planner, sim) and not manager.backlog, timeout)
    assert ok, (
        f"simulator view never matched the plan: simulator {sim_count(sim)} on {len(sim_view(sim))} sockets,"
        f" plan {plan_count(manager.planner)}"
    )


def sim_socket_of(manager: FeedManager, sim: Simulator, connection: int) -> int | None:
    """The simulator's socket id of one client connection (matched by the TCP port)."""
    ws = manager.pool.connections[connection].ws
    if ws is None:
        return None
    host, port = ws.local_address[:2]
    for record in sim.open_sockets():
        if record.remote == f"{host}:{port}":
            return record.id
    return None


def tick_marks(manager: FeedManager, keys: Iterable[InstrumentKey]) -> dict[InstrumentKey, int]:
    """Per key, how many updates the quote store has taken so far (0 if none)."""
    marks = {}
    for key in keys:
        quote = manager.store.get(key)
        marks[key] = 0 if quote is None else quote.updates
    return marks


async def ticks_flow_again(
    manager: FeedManager, marks: dict[InstrumentKey, int], since_ns: int, timeout: float = WAIT_S
) -> None:
    """Every key in ``marks`` gets a fresh packet (more updates than marked, decoded after ``since_ns``)."""

    def missing() -> list[InstrumentKey]:
        out = []
        for key, mark in marks.items():
            quote = manager.store.get(key)
            if quote is None or quote.updates <= mark or quote.updated_ns <= since_ns:
                out.append(key)
        return out

    ok = await manager.wait_until(lambda: not missing(), timeout)
    assert ok, f"{len(missing())} of {len(marks)} instruments never ticked again, e.g. {missing()[:3]}"


def now_ns() -> int:
    return time.monotonic_ns()

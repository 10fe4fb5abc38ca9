"""Another program on the client id, against the simulator: tickgate gives sockets up instead of feeding
a ping-pong of 805s, its plan shrinks by priority (least recently used Tier A first, Tier B kept), and once
the account is quiet it probes the sockets back and every suspended chain resumes."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable

import pytest

from pinned import frozen
from tickgate.clock import IST, Clock
from tickgate.config import FeedLimits
from tickgate.dhan.client import ConnectionState
from tickgate.feed import FeedManager
from tickgate.planner import EventKind, Planner, PlannerEvent, Tier
from tickgate.sim import DEFAULT_CLIENT_ID, Simulator

from .conftest import TODAY, add_groups, big_universe, credentials, fast_settings, plan_sets, view_sets

pytestmark = pytest.mark.timeout(120)


async def full_account(
    make_sim: Callable[..., Simulator],
    running: list[object],
    *,
    clock: Clock | None = None,
    on_events: Callable[[list[PlannerEvent]], None] | None = None,
    **feed: float,
) -> tuple[Simulator, Planner, FeedManager, Callable[[], bool]]:
    """Ten chains of 200 keys on five sockets of 400 (full): Tier B B0-B3, Tier A A0-A5 (A0 the least
    recently used); started and converged. Returns a "the simulator carries the plan" check too."""
    universe, groups = big_universe(10)
    sim = make_sim(universe=universe, **({"clock": clock} if clock is not None else {}))
    await sim.start()
    running.append(sim)
    settings = fast_settings(FeedLimits(instruments_per_socket=400), startup_barrier_s=0.5, **feed)
    planner = Planner(settings.limits)
    add_groups(planner, groups[:4], Tier.B, "B")
    add_groups(planner, groups[4:], Tier.A, "A")
    manager = FeedManager(
        settings,
        planner,
        credentials,
        url=sim.url,
        on_events=on_events,
        market_seconds=clock.monotonic if clock is not None else time.monotonic,
    )
    await manager.start()
    running.append(manager)

    def converged() -> bool:
        plan = plan_sets(planner)
        return bool(plan) and view_sets(sim) == plan

    assert await manager.wait_until(lambda: manager.all_up() and converged(), 15)
    assert planner.suspended() == []
    return sim, planner, manager, converged


async def test_a_foreign_program_costs_two_805s_then_tickgate_yields_and_grows_back(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    clock = frozen(dt.datetime.combine(TODAY, dt.time(10, 0), IST))
    sim, planner, manager, converged = await full_account(
        make_sim, running, clock=clock, budget_window_s=600.0, budget_regrow_after_s=3_000.0
    )

    sim.add_foreign(DEFAULT_CLIENT_ID, 2, seconds=3_600.0, reconnect_s=0.2)
    budget = manager.pool.budget
    assert await manager.wait_until(lambda: budget.size == 3 and converged(), 10), budget.status(0)
    # Three sockets hold 1,200: Tier B's 800 and the two most recently used Tier A chains.
    assert sorted(planner.suspended()) == ["A0", "A1", "A2", "A3"]
    states = [s.state for s in manager.pool.status()]
    assert states.count(ConnectionState.GIVEN_UP) == 2
    assert manager.warning is not None
    assert "holding 3 of 5 sockets" in manager.warning
    assert manager.alert is None  # the service stays ready on fewer sockets

    await asyncio.sleep(3.0)  # five times the 805 back-off: no socket comes back to crowd the program out
    assert sim.stats.foreign_805s == 2
    assert sim.stats.foreign_dropped == 0
    assert [b for b in sim.breaches if b.kind == "sockets_per_account"] == []

    clock.advance(3_600.0)  # the other program is done; an hour since the last 805
    assert await manager.wait_until(lambda: budget.size == 4 and budget.probing is not None, 10)
    clock.advance(600.0)  # the probe lived its window: the next one follows
    assert await manager.wait_until(lambda: budget.size == 5 and converged() and manager.all_up(), 15)
    clock.advance(600.0)
    assert await manager.wait_until(lambda: budget.probing is None and planner.suspended() == [], 10)
    assert await manager.wait_until(converged, 10)
    assert sim.stats.foreign_805s == 2
    assert manager.warning is None
    assert (budget.shrinks, budget.grows) == (2, 2)


async def test_an_804_lowers_that_socket_s_ceiling_and_the_others_carry_on(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    """Dhan answers 804 (too many instruments) on one socket although tickgate kept it within the limit:
    that socket comes back carrying less, what no longer fits is suspended (least recently used Tier A), the
    other sockets are never closed, and a new day restores the full limit."""
    events: list[PlannerEvent] = []
    sim, planner, manager, converged = await full_account(make_sim, running, on_events=events.extend)
    connects = [s.connects for s in manager.pool.status()]
    assert sim.faults.disconnect("oldest", 804)

    def lowered() -> list[int]:
        return [c for c, x in enumerate(planner.ceilings()) if x < 400]

    assert await manager.wait_until(lambda: bool(lowered()) and manager.all_up() and converged(), 15)
    [hit] = lowered()
    assert planner.ceilings()[hit] == 360  # it carried 400: a tenth of the limit less
    assert len(planner.actual()[hit]) <= 360
    assert planner.suspended() == ["A0"]  # 40 keys did not fit: the least recently used chain waits
    others = [s.connects for s in manager.pool.status()]
    assert [n for c, n in enumerate(others) if c != hit] == [n for c, n in enumerate(connects) if c != hit]
    assert manager.warning is not None
    assert "804" in manager.warning
    assert manager.alert is None
    assert any(e.kind is EventKind.CEILING and e.count == 360 for e in events)

    manager.reset_ceilings()  # the next pre-open
    assert planner.ceilings() == [400] * 5
    assert await manager.wait_until(lambda: planner.suspended() == [] and converged(), 10)
    assert manager.warning is None

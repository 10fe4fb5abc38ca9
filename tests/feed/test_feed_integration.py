"""The feed client against the simulator over real loopback WebSockets (no network mocks).

Every test ends by comparing the simulator's record of each socket's subscriptions with the planner's
actual state: what the database/planner says is subscribed is what the connections carry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest

from pinned import flowing
from tickgate.clock import IST
from tickgate.config import FeedLimits
from tickgate.dhan.client import ConnectionState, Credentials
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.feed import FeedManager
from tickgate.planner import Planner, Tier
from tickgate.schedule.calendar import TradingCalendar
from tickgate.schedule.sessions import MARKETS, Market, MarketSessions
from tickgate.sim import DEFAULT_CLIENT_ID, Simulator

from .conftest import CHAIN_SIZE, add_groups, big_universe, credentials, fast_settings, plan_sets, view_sets

pytestmark = pytest.mark.timeout(120)


async def _converged(manager: FeedManager, sim: Simulator, timeout: float = 10.0) -> None:
    def same() -> bool:
        plan = plan_sets(manager.planner)
        return bool(plan) and view_sets(sim) == plan

    ok = await manager.wait_until(same, timeout)
    assert ok, (
        f"simulator view never matched the plan: {len(view_sets(sim))} vs {len(plan_sets(manager.planner))}"
    )


async def tier_b_feed(
    make_sim: Callable[..., Simulator],
    running: list[object],
    chains: int,
    *,
    sim: dict[str, Any] | None = None,
    provider: Callable[[], Credentials] = credentials,
    trading: Callable[[], frozenset[Market]] = lambda: frozenset(MARKETS),
    **feed: float,
) -> tuple[Simulator, FeedManager]:
    """A simulator and a started feed carrying ``chains`` Tier B chains, converged: the common opening."""
    universe, groups = big_universe(chains)
    simulator = make_sim(universe=universe, **(sim or {}))
    await simulator.start()
    running.append(simulator)
    settings = fast_settings(None, **feed)
    planner = Planner(settings.limits)
    add_groups(planner, groups, Tier.B, "B")
    manager = FeedManager(settings, planner, provider, url=simulator.url, trading=trading)
    await manager.start()
    running.append(manager)
    await _converged(manager, simulator)
    return simulator, manager


async def test_25000_instruments_over_five_sockets(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    universe, groups = big_universe(125)  # 125 × 200 = 25,000 keys
    sim = make_sim(universe=universe, rate=5_000.0)
    await sim.start()
    running.append(sim)
    settings = fast_settings()
    planner = Planner(settings.limits)
    add_groups(planner, groups, Tier.B, "B")
    manager = FeedManager(settings, planner, credentials, url=sim.url)
    started = time.perf_counter()
    await manager.start()
    running.append(manager)
    await _converged(manager, sim, timeout=20)
    elapsed = time.perf_counter() - started
    assert sum(len(v) for v in sim.view().values()) == 25_000
    assert sorted(len(v) for v in sim.view().values()) == [5_000] * 5
    assert sim.stats.max_instruments_per_message <= 100
    assert sim.stats.max_instruments_per_socket <= 5_000
    assert sim.stats.max_sockets_per_client[DEFAULT_CLIENT_ID] == 5
    assert sim.breaches == []
    assert elapsed < 20
    # ticks flow: the store fills with values the simulator sent
    await manager.wait_until(lambda: manager.store.packets > 2_000, 10)
    assert manager.metrics.corrupt_frames == 0


async def test_ticks_land_in_the_store_with_the_values_sent(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    universe, groups = big_universe(1)
    sim = make_sim(universe=universe, rate=4_000.0)
    await sim.start()
    running.append(sim)
    settings = fast_settings(startup_barrier_s=0.5)
    planner = Planner(settings.limits)
    planner.add_group("chain", Tier.A, groups[0], FeedMode.FULL, owner="u1", now=0.0)
    manager = FeedManager(settings, planner, credentials, url=sim.url)
    await manager.start()
    running.append(manager)
    await _converged(manager, sim)
    await manager.wait_until(lambda: manager.store.packets > 3_000, 10)
    sim.set_rate(0)  # freeze the market, then let the last frames drain
    await asyncio.sleep(0.3)
    await manager.wait_until(lambda: manager.backlog == 0, 5)
    compared = 0
    for key in groups[0]:
        sent = sim.last_values(key)
        quote = manager.store.get(key)
        if sent is None or quote is None or quote.ltp is None:
            continue
        assert quote.ltp == pytest.approx(sent["ltp"], rel=0, abs=0)
        compared += 1
    assert compared > 50
    some = manager.store.get(groups[0][0])
    assert some is not None
    assert some.prev_close is not None  # PrevClose arrives on subscribe


async def test_dropped_socket_moves_keys_suspends_tier_a_and_recovers(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    universe, groups = big_universe(125)
    sim = make_sim(universe=universe, rate=2_000.0)
    await sim.start()
    running.append(sim)
    settings = fast_settings(backoff_initial_s=1.0, backoff_cap_s=1.0)
    planner = Planner(settings.limits)
    add_groups(planner, groups[:40], Tier.B, "B")  # 8,000 always-on
    add_groups(planner, groups[40:], Tier.A, "A")  # 17,000 on demand: full house
    manager = FeedManager(settings, planner, credentials, url=sim.url)
    await manager.start()
    running.append(manager)
    await _converged(manager, sim, timeout=20)
    assert len(planner.suspended()) == 0

    sim.faults.refuse(30.0)  # keep it down while we look at the degraded plan
    (victim,) = sim.faults.drop("oldest")
    # while it is down: 20,000 live capacity, Tier A suspended beyond it, Tier B intact
    ok = await manager.wait_until(lambda: len(planner.suspended()) > 0, 5)
    assert ok
    suspended_keys = planner.plan_capacity().suspended_keys
    assert suspended_keys == 5_000
    assert all(g.startswith("A") for g in planner.suspended())
    await _converged(manager, sim)
    assert sum(len(v) for v in sim.view().values()) == 20_000
    # reconnect with backoff restores the whole plan
    sim.faults.refuse(0)
    ok = await manager.wait_until(lambda: manager.all_up() and not planner.suspended(), 10)
    assert ok
    await _converged(manager, sim)
    assert sum(len(v) for v in sim.view().values()) == 25_000
    assert sim.breaches == []
    assert sim.socket(victim).close_reason is not None
    reasons = [s.last_disconnect for s in manager.pool.status() if s.reconnects]
    assert sum(s.reconnects for s in manager.pool.status()) == 1, reasons


async def test_805_backs_off_long(make_sim: Callable[..., Simulator], running: list[object]) -> None:
    sim, manager = await tier_b_feed(make_sim, running, 2, startup_barrier_s=0.5, backoff_805_s=1.0)
    before = sim.stats.connections
    sim.faults.disconnect("oldest", code=805)
    await manager.wait_until(lambda: not manager.all_up(), 5)
    down_at = time.monotonic()
    status = next(s for s in manager.pool.status() if s.state is not ConnectionState.UP)
    assert status.last_disconnect is not None
    assert status.last_disconnect.startswith("805")
    assert status.next_attempt_in is not None
    assert status.next_attempt_in >= 1.0
    await manager.wait_until(manager.all_up, 5)
    assert time.monotonic() - down_at >= 0.9
    assert sim.stats.connections == before + 1
    assert manager.metrics.server_disconnects[805] == 1
    await _converged(manager, sim)


async def test_expired_token_stops_retrying_until_rollover(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    token = {"value": credentials().access_token}

    def provider() -> Credentials:
        return Credentials(DEFAULT_CLIENT_ID, token["value"])

    sim, manager = await tier_b_feed(make_sim, running, 1, provider=provider, startup_barrier_s=0.5)
    sim.faults.expire_token()
    assert await manager.wait_until(lambda: manager.alert is not None, 5)
    assert manager.alert is not None
    assert "807" in manager.alert
    assert token["value"] not in manager.alert
    connections = sim.stats.connections
    await asyncio.sleep(1.0)  # fatal: no reconnect storm with a dead token
    assert sim.stats.connections <= connections + len(manager.pool.connections)
    stalled_at = sim.stats.connections
    await asyncio.sleep(0.5)
    assert sim.stats.connections == stalled_at
    # daily rollover: a new token appears, the provider returns it, the feed resumes by itself
    sim.faults.set_token("rolled-over-token")
    token["value"] = "rolled-over-token"
    assert await manager.wait_until(lambda: manager.all_up() and manager.alert is None, 5)
    await _converged(manager, sim)
    assert sum(len(v) for v in sim.view().values()) == CHAIN_SIZE


async def test_corrupt_frames_are_counted_not_fatal(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    sim, manager = await tier_b_feed(
        make_sim, running, 1, sim={"rate": 5_000.0, "corrupt_pct": 5.0}, startup_barrier_s=0.5
    )
    await manager.wait_until(lambda: manager.metrics.corrupt_frames > 5, 10)
    assert manager.metrics.corrupt_frames > 5
    # Skipped, never fatal. (A busy CI machine can miss a ping deadline and drop a socket meanwhile: it
    # comes back, which is what "all up" waits for.)
    assert manager.pool.fatal is None
    assert await manager.wait_until(manager.all_up, 10)
    assert manager.store.packets > 0
    await _converged(manager, sim)


async def test_stalled_socket_is_recycled_by_the_watchdog(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    sim, manager = await tier_b_feed(
        make_sim, running, 5, sim={"rate": 5_000.0}, startup_barrier_s=0.5, stale_after_s=1.0
    )
    sim.faults.stall("oldest")  # still answers pings, sends no data
    assert await manager.wait_until(lambda: manager.metrics.stale_recycles >= 1, 8)
    assert await manager.wait_until(manager.all_up, 5)
    await _converged(manager, sim)


async def test_watchdog_ignores_quiet_market_hours(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    _sim, manager = await tier_b_feed(
        make_sim,
        running,
        1,
        sim={"rate": 0.0},  # nothing trades
        trading=frozenset,
        startup_barrier_s=0.3,
        stale_after_s=0.5,
    )
    await asyncio.sleep(1.5)
    assert manager.metrics.stale_recycles == 0
    assert manager.all_up()


async def test_silent_socket_is_detected_by_ping_timeout(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    sim, manager = await tier_b_feed(
        make_sim, running, 2, startup_barrier_s=0.3, ping_interval_s=0.3, ping_timeout_s=0.6
    )
    sim.faults.silence("oldest")  # no data, no pongs
    assert await manager.wait_until(lambda: sum(s.reconnects for s in manager.pool.status()) >= 1, 8)
    assert await manager.wait_until(manager.all_up, 5)
    await _converged(manager, sim)


async def test_restart_never_opens_a_sixth_socket(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    universe, groups = big_universe(3)
    sim = make_sim(universe=universe)
    await sim.start()
    running.append(sim)
    settings = fast_settings(startup_barrier_s=0.3)
    for _round in range(3):  # stop and start again quickly, as a restart would
        planner = Planner(settings.limits)
        add_groups(planner, groups, Tier.B, "B")
        manager = FeedManager(settings, planner, credentials, url=sim.url)
        await manager.start()
        await _converged(manager, sim)
        assert manager.pool.max_open_sockets <= 5
        await manager.stop()
    assert sim.stats.max_sockets_per_client[DEFAULT_CLIENT_ID] <= 5
    assert [b for b in sim.breaches if b.kind == "sockets_per_account"] == []


async def test_small_limits_are_respected_end_to_end(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    limits = FeedLimits(sockets_per_account=3, instruments_per_socket=300, instruments_per_message=25)
    universe, groups = big_universe(4)  # 800 keys, capacity 900
    sim = make_sim(universe=universe, limits=limits)
    await sim.start()
    running.append(sim)
    settings = fast_settings(limits, startup_barrier_s=0.3)
    planner = Planner(limits)
    add_groups(planner, groups, Tier.A, "A")
    manager = FeedManager(settings, planner, credentials, url=sim.url)
    await manager.start()
    running.append(manager)
    await _converged(manager, sim)
    assert len(manager.pool.connections) == 3
    assert sim.stats.max_instruments_per_message <= 25
    assert sim.stats.max_instruments_per_socket <= 300
    # a user removes and adds chains: only diffs travel, views stay equal
    manager.plan(lambda p: p.remove_group("A1"))
    extra = [InstrumentKey(k.segment, k.security_id) for k in groups[1][:50]]
    manager.plan(lambda p: p.add_group("A9", Tier.A, extra, FeedMode.FULL, owner="u9", now=99.0))
    await _converged(manager, sim)
    assert sim.breaches == []


async def test_an_evening_of_silent_nse_sockets_is_not_a_reconnect_storm(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    """The held-out run of issue 16: Tuesday 17:00 IST, the server answers pings but its NSE instruments send
    nothing (the market closed at 15:30). No socket may be recycled, and it is not even a warning."""
    clock = flowing(dt.datetime(2026, 12, 1, 17, 0, tzinfo=IST))
    sessions = MarketSessions(TradingCalendar.load())
    sim, manager = await tier_b_feed(
        make_sim,
        running,
        5,
        sim={"rate": 5_000.0, "clock": clock, "market_hours": True},
        trading=lambda: sessions.continuous(clock.now()),
        startup_barrier_s=0.3,
        stale_after_s=0.5,
    )
    assert len(sim.open_sockets()) == 5
    await asyncio.sleep(3.0)
    assert sim.stats.packets_quiet > 0  # the simulator drew packets and held them: the market is closed
    assert set(manager.metrics.packets_by_code) <= {6}  # only the previous close each subscribe brings
    assert manager.metrics.stale_recycles == 0
    assert manager.metrics.quiet_alerts == 0
    assert manager.warning is None
    assert manager.all_up()
    assert all(record.close_reason is None for record in sim.history)


async def test_every_socket_silent_while_the_market_trades_is_a_warning_not_a_storm(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    """Wednesday 10:00, NSE trading, and no socket receives anything: a halted market (or the account's data
    stopped). Recycling would not help and Dhan punishes storms: warn, count, keep the sockets."""
    clock = flowing(dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST))
    sessions = MarketSessions(TradingCalendar.load())
    _sim, manager = await tier_b_feed(
        make_sim,
        running,
        5,
        sim={"rate": 0.0, "clock": clock},
        trading=lambda: sessions.continuous(clock.now()),
        startup_barrier_s=0.3,
        stale_after_s=0.5,
    )
    await asyncio.sleep(2.0)
    assert manager.metrics.stale_recycles == 0
    assert manager.metrics.quiet_alerts == 1
    assert manager.warning is not None
    assert "NSE" in manager.warning
    assert manager.alert is None  # not fatal: the service stays ready
    assert manager.all_up()


@pytest.mark.parametrize("mode", ["code6", "indices"])
async def test_previous_close_and_change_under_both_of_dhan_s_behaviours(
    make_sim: Callable[..., Simulator], running: list[object], mode: str
) -> None:
    """Code 6 for every instrument, or for indices only with the previous close in Quote/Full close: either
    way every leg ends up with its previous close, and its change is measured from it."""
    sim, manager = await tier_b_feed(
        make_sim, running, 2, sim={"rate": 6_000.0, "prev_close": mode}, startup_barrier_s=0.3
    )
    legs = sorted(manager.planner.desired())[:20]

    def filled() -> bool:
        quotes = [manager.store.get(k) for k in legs]
        return all(q is not None and q.prev_close and q.ltp for q in quotes)

    assert await manager.wait_until(filled, 10.0), "legs without a previous close"
    for key in legs:
        quote = manager.store.get(key)
        expected = sim.last_values(key)
        assert quote is not None
        assert expected is not None
        assert quote.prev_close == pytest.approx(expected["prev_close"], rel=1e-6)
        assert quote.change == pytest.approx(quote.ltp - quote.prev_close)
    if mode == "indices":
        assert manager.metrics.packets_by_code.get(6, 0) == 0  # option legs: no code 6 at all


async def test_a_stop_while_sockets_connect_leaves_none_open(make_sim: Callable[..., Simulator]) -> None:
    """A stop can land at any moment of a handshake. On Python 3.11 ``asyncio.wait_for`` could hand back a
    connection completed at the instant of the cancel, losing the cancel: that socket stayed open and the
    stop waited on it forever (seen as a hung test teardown in CI). Stops across the handshake's window."""
    universe, groups = big_universe(2)
    sim = make_sim(universe=universe)
    await sim.start()
    try:
        for step in range(24):
            settings = fast_settings(None, startup_barrier_s=0.0)
            planner = Planner(settings.limits)
            add_groups(planner, groups, Tier.B, "B")
            manager = FeedManager(settings, planner, credentials, url=sim.url)
            start = asyncio.create_task(manager.start())
            await asyncio.sleep(step * 0.002)
            async with asyncio.timeout(10):  # a lost cancel hangs here
                await manager.stop()
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
            async with asyncio.timeout(5):
                while sim.open_sockets():
                    await asyncio.sleep(0.01)
    finally:
        await sim.close()


async def _feed_on_sim(
    make_sim: Callable[..., Simulator],
    running: list[object],
    chains: int,
    limits: FeedLimits | None = None,
    **feed: float,
) -> tuple[Simulator, FeedManager]:
    """A simulator and a started feed carrying ``chains`` chains as Tier B, every socket up (both closed by
    the ``running`` fixture)."""
    universe, groups = big_universe(chains)
    sim = make_sim(universe=universe)
    await sim.start()
    running.append(sim)
    settings = fast_settings(limits, startup_barrier_s=0.0, **feed)
    planner = Planner(settings.limits)
    add_groups(planner, groups, Tier.B, "B")
    manager = FeedManager(settings, planner, credentials, url=sim.url)
    await manager.start()
    running.append(manager)
    assert await manager.wait_until(manager.all_up, 10)
    return sim, manager


async def test_a_recycle_and_a_stop_say_goodbye_first(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    """Closing on purpose sends Dhan's disconnect request (code 12) before the close: the simulator records
    each socket so closed as the client's request, with its subscriptions dropped."""
    sim, manager = await _feed_on_sim(make_sim, running, 3)
    sockets = manager.settings.limits.feed_sockets
    first = sim.open_sockets()[0].id
    await manager.pool.recycle(0, "test")
    assert await manager.wait_until(lambda: sim.socket(first).close_reason is not None, 5)
    assert sim.socket(first).close_reason == "client_request"
    await manager.stop()
    assert sim.open_sockets() == []
    assert sim.stats.goodbyes == manager.pool.goodbyes >= sockets  # the recycled one, then the rest
    assert all(r.close_reason == "client_request" for r in sim.history if r.authenticated)


async def test_reserved_sockets_leave_room_for_the_desk_s_other_programs(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    """With two sockets reserved, tickgate opens three and plans 15,000 on them; another program on the same
    client id opens its two, and nobody is dropped with 805."""
    from simulator.helpers import FeedClient

    with pytest.raises(ValueError, match="at least one"):
        FeedLimits(reserved_sockets=5)
    sim, manager = await _feed_on_sim(make_sim, running, 3, FeedLimits(reserved_sockets=2))
    assert manager.planner.total_capacity == 15_000
    others = [await FeedClient.open(sim.feed_url()) for _ in range(2)]
    try:
        await asyncio.sleep(0.5)
        assert len(sim.open_sockets(DEFAULT_CLIENT_ID)) == 5
        assert manager.all_up()
        assert sim.stats.max_sockets_per_client[DEFAULT_CLIENT_ID] == 5
        assert all(not c.disconnects for c in others)
        assert manager.pool.reconnects_by_reason["805"] == 0
    finally:
        for c in others:
            await c.close()


async def test_a_429_cools_the_whole_account_off_once(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    """Dhan's 429 at a handshake means the client id is blocked (or its plan lapsed): every socket waits
    together, for one cool-off, instead of each retrying on its own; then the feed comes back."""
    sim, manager = await _feed_on_sim(make_sim, running, 2, block_cooloff_s=1.5, block_cooloff_max_s=6.0)
    sim.faults.block(1.0)
    sim.faults.drop("all")
    assert await manager.wait_until(lambda: manager.pool.blocks == 1, 5)
    alert = manager.alert
    assert alert is not None
    assert "429" in alert
    await asyncio.sleep(1.0)  # within the cool-off: nobody knocks again
    refused = sim.stats.refused
    assert refused <= manager.settings.limits.sockets_per_account  # at most each socket's first attempt
    assert await manager.wait_until(manager.all_up, 10)
    assert manager.pool.blocks == 1
    assert sim.stats.refused == refused
    assert manager.alert is None


async def test_an_804_is_one_socket_s_problem(
    make_sim: Callable[..., Simulator], running: list[object]
) -> None:
    """804 (too many instruments) is one socket's count: that socket reconnects and is planned again, the
    others never stop, and the account is not fatal."""
    sim, manager = await _feed_on_sim(make_sim, running, 3)
    others = {s.id for s in sim.open_sockets()}
    (kicked,) = sim.faults.disconnect(sorted(others)[0], 804)
    assert await manager.wait_until(lambda: manager.pool.reconnects_by_reason["804"] == 1, 5)
    assert manager.pool.fatal is None
    assert manager.alert is None
    assert await manager.wait_until(manager.all_up, 10)
    assert others - {kicked} <= {s.id for s in sim.open_sockets()}  # the others never went down

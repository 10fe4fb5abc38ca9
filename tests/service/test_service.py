"""The service end to end: Tier B, watchlists, eviction, errors, restart recovery, end of day — with the
simulator's record of every socket compared to the planner after each step."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest

from pinned import flowing, frozen
from tickgate.config import FeedLimits
from tickgate.dhan.client import Credentials
from tickgate.dhan.protocol import FeedMode
from tickgate.instruments import InstrumentRegistry
from tickgate.planner import Tier
from tickgate.service import CapacityExceeded, InvalidInput, NotFound, TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator
from tickgate.store.types import WatchlistState

from .conftest import SMALL_TIER_B, TODAY, ServiceFactory, service_settings

pytestmark = pytest.mark.timeout(180)


async def converged(svc: TickgateService, sim: Simulator, timeout: float = 15.0) -> None:
    def same() -> bool:
        plan = {frozenset(v.items()) for v in svc.planner.actual().values() if v}
        view = {frozenset(v.items()) for v in sim.view().values() if v}
        return bool(plan) and plan == view and not svc.feed.backlog

    assert await svc.feed.wait_until(same, timeout), "simulator view never matched the plan"


async def test_default_tier_b_is_placed(make_service: ServiceFactory, simulator: Simulator) -> None:
    svc = await make_service()
    assert svc.tier_b is not None
    assert 7_000 <= svc.tier_b.total <= 8_200
    await converged(svc, simulator)
    assert sum(len(v) for v in simulator.view().values()) == svc.planner.totals().placed
    assert svc.planner.totals().by_tier[Tier.B] == svc.tier_b.total
    assert simulator.breaches == []


async def test_watchlist_add_touch_list_remove(make_service: ServiceFactory, simulator: Simulator) -> None:
    svc = await make_service()
    user, _key = await svc.store.users.create("asha")
    added = await svc.watchlists.add(user.id, "RELIANCE")
    assert added.status == "added"
    assert added.window is not None
    assert len(added.window.rows) == 25  # stocks: 25 strikes by default
    assert len(added.keys) == 51  # CE+PE per strike + the stock itself
    assert added.evicted == ()
    await converged(svc, simulator)
    placed = {k for v in simulator.view().values() for k in v}
    assert set(added.keys) <= placed
    again = await svc.watchlists.add(user.id, "reliance")
    assert again.status == "touched"
    assert again.entry.id == added.entry.id
    views = await svc.watchlists.list(user.id)
    assert [v.entry.symbol for v in views] == ["RELIANCE"]
    assert views[0].placed
    await svc.watchlists.remove(user.id, added.entry.id)
    await converged(svc, simulator)
    placed = {k for v in simulator.view().values() for k in v}
    assert not set(added.keys) & placed - set(svc.planner.desired())
    assert await svc.watchlists.list(user.id) == []


async def test_clear_errors(make_service: ServiceFactory) -> None:
    svc = await make_service()
    user, _ = await svc.store.users.create("ravi")
    with pytest.raises(NotFound, match="unknown symbol 'NOSUCHCO'"):
        await svc.watchlists.add(user.id, "NOSUCHCO")
    with pytest.raises(NotFound, match="no RELIANCE options expire on 2026-12-02; upcoming expiries"):
        await svc.watchlists.add(user.id, "RELIANCE", expiry=dt.date(2026, 12, 2))
    with pytest.raises((InvalidInput, NotFound)):
        await svc.watchlists.add(user.id, "RELIANCE", expiry=dt.date(2026, 10, 27))
    with pytest.raises(InvalidInput):
        await svc.watchlists.add(user.id, "RELIANCE", strikes=-1)
    with pytest.raises(NotFound, match="no watchlist entry"):
        await svc.watchlists.remove(user.id, 999)
    assert await svc.store.watchlists.rows(user.id) == []


async def test_eviction_and_rejection_at_capacity(
    make_service: ServiceFactory, simulator: Simulator, tmp_path: Path
) -> None:
    tier_b = tmp_path / "tier_b.toml"
    tier_b.write_text(SMALL_TIER_B)
    limits = FeedLimits(sockets_per_account=2, instruments_per_socket=150, instruments_per_message=40)
    svc = await make_service(settings=service_settings(tmp_path, limits=limits, tier_b=tier_b))
    assert svc.tier_b is not None
    assert svc.tier_b.total == 43  # 21 strikes × CE/PE + NIFTY
    a, _ = await svc.store.users.create("a")
    b, _ = await svc.store.users.create("b")
    first = await svc.watchlists.add(a.id, "INFY", strikes=11)  # 23 keys each
    for symbol in ("TCS", "SBIN", "HDFCBANK", "RELIANCE"):
        await svc.watchlists.add(b.id, symbol, strikes=11)
    # capacity 2 × 150 = 300: Tier B 43 + 11 chains of 23 = 296, so the 12th chain must evict the LRU one
    await svc.watchlists.view(a.id, first.entry.id)  # INFY is now the most recently used
    more = []
    for symbol in ("ITC", "LT", "AXISBANK", "MARUTI", "WIPRO", "BHARTIARTL", "KOTAKBANK", "HINDUNILVR"):
        more.append(await svc.watchlists.add(b.id, symbol, strikes=11))
    evicted = [e for r in more for e in r.evicted]
    assert evicted, "filling past capacity must evict"
    assert evicted[0].symbol == "TCS"  # the true LRU: INFY was viewed, so TCS went first
    assert "removed TCS (capacity limit)" in next(r.message for r in more if r.evicted)
    assert all(e.symbol != "INFY" for e in evicted)
    await svc.store.writer.flush(timeout=10)  # eviction marks go through the writer (the add does not wait)
    rows = {w.symbol: w for w in await svc.store.watchlists.rows(b.id)}
    assert rows["TCS"].state is WatchlistState.EVICTED
    assert rows["TCS"].state_reason is not None
    assert "capacity" in rows["TCS"].state_reason
    await converged(svc, simulator)
    assert max(len(v) for v in simulator.view().values()) <= 150
    assert simulator.stats.max_instruments_per_message <= 40
    with pytest.raises(CapacityExceeded) as info:  # bigger than everything Tier A could ever free
        await svc.watchlists.add(a.id, "NIFTY", strikes=201)
    assert info.value.details["tier_b"] == 43
    assert info.value.status == 409
    assert "NIFTY" not in {w.symbol for w in await svc.store.watchlists.rows(a.id)}


async def test_restart_restores_watchlists(make_service: ServiceFactory, simulator: Simulator) -> None:
    svc = await make_service()
    user, _ = await svc.store.users.create("kim")
    one = await svc.watchlists.add(user.id, "TCS", mode=FeedMode.FULL)
    two = await svc.watchlists.add(user.id, "SBIN")
    await converged(svc, simulator)
    before = {g: svc.planner.group_keys(g) for g in (one.entry.group_id, two.entry.group_id)}
    await svc.stop()
    svc2 = await make_service()
    for group, keys in before.items():
        assert svc2.planner.has_group(group)
        assert svc2.planner.group_keys(group) == keys  # same strikes: the cached ATM was reused
    assert svc2.planner.group(one.entry.group_id).mode is FeedMode.FULL
    await converged(svc2, simulator)


async def test_each_users_chain_comes_back_on_its_own_window(
    make_service: ServiceFactory, simulator: Simulator
) -> None:
    """Two users' windows of one chain can sit on different strikes (one added while the price sat between
    two strikes, inside the other's hysteresis). The ATM cache holds one per underlying and expiry; each
    chain's row keeps its own, so a restart gives back both windows, key for key."""
    svc = await make_service()
    ann, _ = await svc.store.users.create("ann")
    bob, _ = await svc.store.users.create("bob")
    first = await svc.watchlists.add(ann.id, "SBIN")
    window = svc.tracker.window(first.entry.group_id)
    assert window is not None
    between = window.atm_strike + 0.55 * window.step  # nearer the next strike, not past the hysteresis
    await converged(svc, simulator)
    under = window.underlying.key

    def sits_between() -> bool:
        # The simulator's price walks on from where it is set (a tenth of a step is a few seconds of its
        # equity volatility): set it again at every look until the service's quote shows it.
        simulator.set_price("SBIN", between)
        q = svc.quotes.get(under)
        return q is not None and q.ltp is not None and abs(q.ltp - between) < 0.1 * window.step

    # The simulator ticks each instrument at random intervals (its liquidity model): the first tick after
    # the move took from 0.04 s to 8 s in five runs here, longer on a loaded CI machine.
    assert await svc.feed.wait_until(sits_between, 60)
    second = await svc.watchlists.add(bob.id, "SBIN", expiry=window.expiry.date)
    assert second.entry.group_id != first.entry.group_id
    before = {r.entry.group_id: svc.planner.group_keys(r.entry.group_id) for r in (first, second)}
    assert before[first.entry.group_id] != before[second.entry.group_id]  # two windows of one chain
    await svc.store.writer.flush()
    await svc.stop()
    svc2 = await make_service()
    assert {g: svc2.planner.group_keys(g) for g in before} == before


async def test_a_pin_survives_a_restart_and_goes_with_its_chain(
    make_service: ServiceFactory, simulator: Simulator
) -> None:
    """An admin pin is kept in the database and applied again by a restart; a chain its owner removes takes
    its pin with it, so adding it again later does not bring the pin back."""
    svc = await make_service()
    user, _ = await svc.store.users.create("pinned")
    kept = await svc.watchlists.add(user.id, "TCS")
    gone = await svc.watchlists.add(user.id, "SBIN")
    for result in (kept, gone):
        info = await svc.pins.set(result.entry.group_id, True, svc.store.meta)
        assert info.pinned
    await svc.watchlists.remove(user.id, gone.entry.id)
    await svc.store.writer.flush()
    await svc.stop()
    svc2 = await make_service()
    assert svc2.planner.group(kept.entry.group_id).pinned
    again = await svc2.watchlists.add(user.id, "SBIN")
    assert not svc2.planner.group(again.entry.group_id).pinned
    assert await svc2.store.meta.get("pinned_groups") == [kept.entry.group_id]
    pins = await svc2.store.audit.page(action="PIN")
    assert {e.group_id for e in pins.entries} >= {kept.entry.group_id, gone.entry.group_id}


async def test_eod_clears_tier_a_of_the_session_only(
    make_service: ServiceFactory, simulator: Simulator
) -> None:
    svc = await make_service()
    user, _ = await svc.store.users.create("eod")
    await svc.watchlists.add(user.id, "INFY")
    await svc.watchlists.add(user.id, "CRUDEOIL", exchange="MCX")
    tier_b_before = svc.planner.totals().by_tier[Tier.B]
    from tickgate.schedule.eod import next_session_close

    close = next_session_close(
        svc.calendar, "NSE_BSE", svc.clock.now()
    )  # whatever day the suite is pinned to
    assert close is not None
    summary = await svc.run_eod("NSE_BSE", ("NSE", "BSE"), close)
    assert summary["groups_cleared"] == 1
    assert summary["watchlist_rows_deleted"] == 1
    assert [w.symbol for w in await svc.store.watchlists.rows(user.id)] == ["CRUDEOIL"]
    assert svc.planner.totals().by_tier[Tier.B] == tier_b_before
    again = await svc.run_eod("NSE_BSE", ("NSE", "BSE"), close)
    assert again == {"session": "NSE_BSE", "skipped": True}
    await svc.store.writer.flush()
    page = await svc.store.audit.page(action="EOD_CLEANUP")
    assert any(e.actor == "scheduler" for e in page.entries)
    await converged(svc, simulator)


async def test_eod_missed_while_down_runs_once_on_restart(make_service: ServiceFactory) -> None:
    from tickgate.schedule.calendar import IST

    wednesday = dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST)  # a trading day's session, whatever the pin
    svc = await make_service(clock=frozen(wednesday))
    user, _ = await svc.store.users.create("late")
    await svc.watchlists.add(user.id, "INFY")
    await svc.watchlists.add(user.id, "CRUDEOIL", exchange="MCX")
    await svc.stop()
    evening = wednesday.replace(hour=16)  # down through the 15:30 close
    svc2 = await make_service(clock=frozen(evening))
    assert [w.symbol for w in await svc2.store.watchlists.rows(user.id)] == ["CRUDEOIL"]
    assert not any(g.group.endswith(":INFY:" + g.group.split(":")[-1]) for g in svc2.planner.groups())
    assert any(run["catch_up"] and run["session"] == "NSE_BSE" for run in svc2.eod_runs)
    await svc2.stop()
    svc3 = await make_service(clock=frozen(evening))  # a second restart does not clear again
    assert svc3.eod_runs == []
    assert [w.symbol for w in await svc3.store.watchlists.rows(user.id)] == ["CRUDEOIL"]


async def test_a_fast_virtual_clock_runs_the_day_s_end_of_day(make_service: ServiceFactory) -> None:
    """The scheduler sleeps on the service's clock: at 300× the 15:30 close, 50 virtual minutes after the
    start, comes ten real seconds later, and clears the NSE Tier A (MCX and Tier B stay)."""
    from tickgate.clock import VirtualClock
    from tickgate.schedule.calendar import IST

    close = dt.datetime(2026, 11, 25, 15, 30, tzinfo=IST)
    svc = await make_service(clock=VirtualClock(close - dt.timedelta(minutes=50), 300.0), scheduler=True)
    user, _ = await svc.store.users.create("fast")
    infy = await svc.watchlists.add(user.id, "INFY")
    crude = await svc.watchlists.add(user.id, "CRUDEOIL", exchange="MCX")
    assert svc.clock.now() < close, "the machine was too slow to add before the virtual close"
    assert svc.eod is not None
    assert svc.eod.next_runs["eod-nse-bse"] == close

    def scheduled() -> list[tuple[str, str]]:  # a fresh database also catches up on the last closes
        return [(r["session"], r["close"]) for r in svc.eod_runs if not r["catch_up"]]

    assert await svc.feed.wait_until(lambda: scheduled() != [], 30)
    assert scheduled() == [("NSE_BSE", close.isoformat())]
    assert [w.symbol for w in await svc.store.watchlists.rows(user.id)] == ["CRUDEOIL"]
    assert not svc.planner.has_group(infy.entry.group_id)
    assert svc.planner.has_group(crude.entry.group_id)
    assert svc.clock.now() > close


async def test_pre_open_rolls_tier_b_and_prunes_expired_atm_rows(
    make_service: ServiceFactory, master: Path, tmp_path: Path
) -> None:
    """The daily roll (on today's master) drops what expired: Tier B's old contracts and the ATM cache rows
    of expired windows, which nothing reads again."""
    from tickgate.store.types import AtmEntry

    settings = service_settings(tmp_path).model_copy(update={"instruments": str(master)})
    svc = await make_service(settings=settings)
    day = svc.today()
    expired = AtmEntry("NIFTY", day - dt.timedelta(days=8), 26000.0, (26000.0,), None, svc.clock.utcnow())
    live = AtmEntry("NIFTY", day + dt.timedelta(days=8), 26050.0, (26050.0,), None, svc.clock.utcnow())
    svc.store.writer.submit_atm(expired)
    svc.store.writer.submit_atm(live)
    await svc.store.writer.flush()
    tier_b = svc.tier_b
    assert tier_b is not None
    await svc.pre_open(
        day + dt.timedelta(days=1) if day.weekday() < 4 else day + dt.timedelta(days=7 - day.weekday())
    )
    assert await svc.store.atm.get("NIFTY", expired.expiry) is None
    assert await svc.store.atm.get("NIFTY", live.expiry) is not None
    assert svc.tier_b is not None
    assert svc.tier_b.today > tier_b.today


async def test_after_the_close_every_leg_is_priced_from_the_rest_quote(
    master: Path, registry: InstrumentRegistry, tmp_path: Path
) -> None:
    """Started at 17:00 on a trading day: NSE's instruments send nothing, yet every subscribed leg gets a
    price and a previous close from the REST market quote (users' chains first), within Dhan's limits."""
    from tickgate.clock import IST
    from tickgate.sim import RegistryUniverse

    evening = dt.datetime.combine(TODAY, dt.time(17, 0), tzinfo=IST)
    sim = Simulator(
        universe=RegistryUniverse(registry, TODAY), master=master, today=TODAY, rate=3_000.0,
        clock=flowing(evening), market_hours=True,
    )  # fmt: skip
    await sim.start()
    svc = TickgateService(
        service_settings(tmp_path),
        credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
        feed_url=sim.url,
        rest_url=sim.rest_url,
        registry=registry,
        clock=flowing(evening),
        scheduler=False,
    )
    try:
        await svc.start()
        user, _ = await svc.store.users.create("evening")
        added = await svc.watchlists.add(user.id, "TCS")
        # TCS had not traded since the start: one REST quote centred its first window, not a guess.
        assert added.window is not None
        assert added.window.ltp_source == "live"
        tcs = svc.registry.underlying("TCS", None)
        assert tcs is not None
        assert added.window.ltp == svc.quotes.get(tcs.key).ltp  # type: ignore[union-attr]
        keys = list(svc.planner.desired(include_suspended=True))
        assert svc.backfill is not None

        def priced() -> bool:
            quotes = svc.quotes.get_many(keys)
            return all(q is not None and q.ltp and q.prev_close for q in quotes)

        deadline = time.monotonic() + 45
        while not priced():
            assert time.monotonic() < deadline, (svc.backfill.stats, svc.backfill.pending)
            await asyncio.sleep(0.2)
        leg = svc.quotes.get(added.keys[0])
        assert leg is not None
        assert leg.source == "rest"
        assert leg.change is not None
        rest = sim.state(subscriptions=False, history=False)["rest"]
        assert rest["rate_limited"] == 0
        assert rest["max_per_second"] == 1
        assert svc.feed.metrics.stale_recycles == 0
    finally:
        await svc.stop()
        await sim.close()


async def test_a_restart_after_the_close_shows_the_day_s_last_prices(make_service: ServiceFactory) -> None:
    """The NSE close saves each instrument's last quote; a restart in the evening (no feed data, no REST
    side) shows them as ``saved``; the next morning the same rows are the previous close."""
    from tickgate.clock import IST
    from tickgate.schedule.eod import next_session_close

    svc = await make_service()
    keys = [k for k in svc.planner.desired() if k.segment.name != "MCX_COMM"][:50]

    def live() -> bool:
        return all((q := svc.quotes.get(k)) is not None and q.ltp is not None for k in keys)

    deadline = time.monotonic() + 20
    while not live():
        assert time.monotonic() < deadline, "no live prices"
        await asyncio.sleep(0.1)
    close = next_session_close(svc.calendar, "NSE_BSE", svc.clock.now())
    assert close is not None
    summary = await svc.run_eod("NSE_BSE", ("NSE", "BSE"), close)
    assert summary["last_quotes_saved"] >= len(keys)
    last = {k: svc.quotes.get(k).ltp for k in keys}  # type: ignore[union-attr]
    await svc.stop()

    evening = close.astimezone(IST).replace(hour=20, minute=0)
    svc2 = await make_service(clock=frozen(evening))
    for key in keys:
        quote = svc2.quotes.get(key)
        assert quote is not None
        if quote.source == "saved":  # (the simulator, on its own clock, may still be sending)
            assert quote.ltp == pytest.approx(last[key], rel=1e-6)
    assert sum(1 for k in keys if svc2.quotes.get(k).source in ("saved", "feed")) == len(keys)  # type: ignore[union-attr]
    await svc2.stop()  # after the close: it saves the last prices it held (the simulator may have moved them)
    last = {k: svc2.quotes.get(k).ltp for k in keys}  # type: ignore[union-attr]

    next_morning = evening + dt.timedelta(days=1 if evening.weekday() < 4 else 7 - evening.weekday())
    svc3 = await make_service(clock=frozen(next_morning.replace(hour=9, minute=0)))
    rows = {q.key: q for q in await svc3.store.last_quotes.load(svc3.today())}
    for key in keys:
        assert rows[key].prev_close == pytest.approx(last[key], rel=1e-6)  # yesterday's close

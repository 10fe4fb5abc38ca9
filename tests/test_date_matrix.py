"""The date-sensitive paths on the dates that break products: weekends, holidays, expiry days, month and
year ends, the US daylight-saving switches that move MCX's close.

For each date, at 10:00 IST and on a master generated for that day: the calendar, the registry's expiry
queries, Tier B resolution and its roll to the next trading day, the EOD schedule and its catch-up, ATM
windows, and the simulator's pricing and expiries. The whole suite also runs on a pinned date
(``TICKGATE_CLOCK_START``); this module walks all of them in one run.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pytest

from tickgate.chains import AtmEngine, TierBUniverse
from tickgate.clock import IST, ManualClock
from tickgate.config import ChainSettings
from tickgate.instruments import InstrumentRegistry, generate_master
from tickgate.schedule.calendar import EXCHANGES, TradingCalendar, mcx_close_time, us_dst_in_effect
from tickgate.schedule.eod import missed_sessions, next_pre_open, next_session_close, session_close
from tickgate.sim import Simulator, StaticUniverse
from tickgate.sim.pricing import Kind, expiry_timestamp

MATRIX: dict[str, dt.date] = {
    "saturday": dt.date(2026, 12, 5),
    "sunday (the day issue 14 was filed)": dt.date(2026, 12, 6),
    "NSE and MCX holiday (Gandhi Jayanti)": dt.date(2026, 10, 2),
    "NSE holiday, MCX evening session (Guru Nanak Jayanti, a Tuesday)": dt.date(2026, 11, 24),
    "expiry moved to Monday by that holiday": dt.date(2026, 11, 23),
    "NIFTY expiry Tuesday": dt.date(2026, 12, 8),
    "the day after an expiry": dt.date(2026, 12, 9),
    "last expiry of a month": dt.date(2026, 12, 29),
    "a month end": dt.date(2026, 11, 30),
    "year end": dt.date(2026, 12, 31),
    "new year's day": dt.date(2027, 1, 1),
    "friday before US DST starts (MCX 23:55)": dt.date(2026, 3, 6),
    "monday after US DST starts (MCX 23:30)": dt.date(2026, 3, 9),
    "friday before US DST ends (MCX 23:30)": dt.date(2026, 10, 30),
    "monday after US DST ends (MCX 23:55)": dt.date(2026, 11, 2),
}
CASES = [pytest.param(day, id=f"{day.isoformat()} {name}") for name, day in MATRIX.items()]
SMALL = {"rows_target": 3_000, "fno_stocks": 5}


@pytest.fixture(scope="module")
def calendar() -> TradingCalendar:
    return TradingCalendar.load()


@pytest.fixture(scope="module")
def masters(tmp_path_factory: pytest.TempPathFactory) -> dict[dt.date, InstrumentRegistry]:
    """One small master per date, laid out from that date (as Dhan's file of that morning would be)."""
    root = tmp_path_factory.mktemp("date-matrix")
    out: dict[dt.date, InstrumentRegistry] = {}
    for day in MATRIX.values():
        path = Path(root) / f"{day.isoformat()}.csv"
        generate_master(path, fmt="detailed", seed=3, today=day, **SMALL)  # type: ignore[arg-type]
        out[day] = InstrumentRegistry.load(path, today=day)
    return out


def settings() -> ChainSettings:
    return ChainSettings.model_validate({"index_strikes": 101, "stock_strikes": 25, "tier_b": None})


def trading(calendar: TradingCalendar, day: dt.date) -> bool:
    return calendar.is_trading_day("NSE", day)


def previous_trading_day(calendar: TradingCalendar, day: dt.date) -> dt.date:
    while not trading(calendar, day):
        day -= dt.timedelta(days=1)
    return day


def expected_nifty_weekly(calendar: TradingCalendar, day: dt.date) -> dt.date:
    """The first NIFTY weekly not expired on ``day``: Tuesday, moved back to the previous trading day by
    a holiday (Dhan's master says so; this is the exchange's rule, used only to check the file)."""
    tuesday = day + dt.timedelta(days=(1 - day.weekday()) % 7)
    while True:
        expiry = previous_trading_day(calendar, tuesday)
        if expiry >= day:
            return expiry
        tuesday += dt.timedelta(weeks=1)


# ------------------------------------------------------------------------------------------- calendar


@pytest.mark.parametrize("day", CASES)
def test_calendar(calendar: TradingCalendar, day: dt.date) -> None:
    nse = calendar.is_trading_day("NSE", day)
    assert nse == (day.weekday() < 5 and calendar.holiday("NSE", day) is None)
    mcx_close = calendar.session_close("MCX", day)
    if mcx_close is not None and mcx_close.time() != dt.time(17, 0):  # not a morning-only day
        assert mcx_close.time() == (dt.time(23, 30) if us_dst_in_effect(day) else dt.time(23, 55))
    at_ten = dt.datetime.combine(day, dt.time(10), IST)
    assert calendar.is_open("NSE", at_ten) == nse
    if day == dt.date(2026, 11, 24):  # NSE shut, MCX's evening session trades
        assert not nse
        assert calendar.session_open("MCX", day) == dt.datetime.combine(day, dt.time(17), IST)
        assert mcx_close == dt.datetime.combine(day, dt.time(23, 55), IST)


# ------------------------------------------------------------------------------------ registry expiries


@pytest.mark.parametrize("day", CASES)
def test_registry_expiries(
    calendar: TradingCalendar, masters: dict[dt.date, InstrumentRegistry], day: dt.date
) -> None:
    registry = masters[day]
    nifty = registry.option_expiries("NIFTY", day)
    dates = [e.date for e in nifty]
    assert dates == sorted(set(dates))
    assert dates[0] >= day
    assert dates[0] == expected_nifty_weekly(calendar, day)
    assert all(trading(calendar, d) for d in dates if d.year == 2026), "an expiry on a closed day"
    assert dates[0] == nifty[0].date
    monthly = [e.date for e in nifty if e.kind == "monthly"]
    for d in monthly:  # the month's last expiry: no later Tuesday expiry in the same month
        assert not any(o.month == d.month and o.year == d.year and o > d for o in dates)
    # the next day's view drops what expired today and nothing else
    after = registry.option_expiries("NIFTY", day + dt.timedelta(days=1))
    assert [e.date for e in after] == [d for d in dates if d > day]
    for symbol in ("CRUDEOIL", "BANKNIFTY", "RELIANCE"):
        assert all(e.date >= day for e in registry.option_expiries(symbol, day))
        assert all(f.expiry is not None and f.expiry >= day for f in registry.futures(symbol, day))


# ------------------------------------------------------------------------------ Tier B and its roll


@pytest.mark.parametrize("day", CASES)
def test_tier_b_resolution_and_roll(masters: dict[dt.date, InstrumentRegistry], day: dt.date) -> None:
    registry = masters[day]
    universe = TierBUniverse.load(settings=settings())
    engine = AtmEngine(registry, settings())
    plan = universe.resolve(registry, day, engine=engine)
    expiries = {g.group: g.expiry.date for g in plan.groups if g.expiry is not None}
    assert expiries, "Tier B resolved nothing"
    assert all(d >= day for d in expiries.values())
    nifty = sorted({d for g, d in expiries.items() if ":NIFTY:" in f":{g}:" or g.startswith("B:NIFTY")})
    tomorrow = day + dt.timedelta(days=1)
    rolled = universe.resolve(registry, tomorrow, engine=engine)
    rolled_dates = {g.expiry.date for g in rolled.groups if g.expiry is not None}
    assert all(d >= tomorrow for d in rolled_dates), "the roll kept an expired contract"
    expired_today = {d for d in expiries.values() if d == day}
    assert not expired_today & rolled_dates
    assert plan.total > 0
    assert rolled.total > 0
    assert nifty == sorted(nifty)


# -------------------------------------------------------------------------------------- EOD schedule


@pytest.mark.parametrize("day", CASES)
def test_eod_schedule_and_catch_up(calendar: TradingCalendar, day: dt.date) -> None:
    at_ten = dt.datetime.combine(day, dt.time(10), IST)
    nse_close = next_session_close(calendar, "NSE_BSE", at_ten)
    assert nse_close is not None
    assert nse_close.time() == dt.time(15, 30)
    assert nse_close.date() >= day
    assert trading(calendar, nse_close.date())
    if trading(calendar, day):
        assert nse_close.date() == day
    assert all(not trading(calendar, d) for d in _days(day, nse_close.date()))
    mcx_close = next_session_close(calendar, "MCX", at_ten)
    assert mcx_close is not None
    assert mcx_close == session_close(calendar, "MCX", mcx_close.date())
    if mcx_close.time() != dt.time(17, 0):
        assert mcx_close.time() == mcx_close_time(mcx_close.date())
    pre_open = next_pre_open(calendar, at_ten)
    assert pre_open is not None
    assert pre_open.time() == dt.time(8, 30)
    assert pre_open.date() > day
    assert any(calendar.is_trading_day(ex, pre_open.date()) for ex in EXCHANGES)
    # catch-up after a week down: once per session, for the last close before now, never a future one
    week_ago = at_ten - dt.timedelta(days=7)
    due = missed_sessions(calendar, at_ten, {"NSE_BSE": week_ago, "MCX": week_ago})
    for session, close in due.items():
        assert close <= at_ten
        assert close > week_ago
        assert next_session_close(calendar, session, close - dt.timedelta(seconds=1)) == close


def _days(start: dt.date, stop: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((stop - start).days)]


# ---------------------------------------------------------------------------------------- ATM windows


@pytest.mark.parametrize("day", CASES)
def test_atm_windows(masters: dict[dt.date, InstrumentRegistry], day: dt.date) -> None:
    registry = masters[day]
    engine = AtmEngine(registry, settings())
    expiry = registry.option_expiries("NIFTY", day)[0]
    listing = engine.listing("NIFTY", expiry.date, today=day)
    middle = listing.strikes[len(listing.strikes) // 2]
    for price, count in ((middle + 0.3 * listing.strikes[1] - 0.3 * listing.strikes[0], 21), (middle, 101)):
        window = engine.window("NIFTY", expiry.date, count, ltp=price, today=day)
        assert window.expiry.date == expiry.date
        assert abs(window.atm_strike - price) <= (listing.strikes[1] - listing.strikes[0])
        assert len(window.keys()) == len(set(window.keys()))
        assert window.returned == min(count, window.listed)
    far = engine.window("NIFTY", expiry.date, 21, ltp=listing.strikes[-1] * 10, today=day)
    assert far.atm_strike == listing.strikes[-1]  # clamped at the listing's edge


# --------------------------------------------------------------------------- simulator pricing, expiries


@pytest.mark.parametrize("day", CASES)
async def test_simulator_pricing_and_expiries(day: dt.date) -> None:
    at_ten = dt.datetime.combine(day, dt.time(10), IST)
    clock = ManualClock(at_ten)
    universe = StaticUniverse.sample(day)
    sim = Simulator(universe=universe, clock=clock, rate=0)
    specs = [s for s in map(universe.lookup, universe.keys()) if s is not None]
    options = [s for s in specs if s.kind in (Kind.CALL, Kind.PUT)]
    assert options
    assert all(s.expiry_ts is not None and s.expiry_ts > clock.timestamp() for s in options)
    expiry = min(s.expiry_ts for s in options if s.expiry_ts is not None)
    assert dt.datetime.fromtimestamp(expiry, IST).date() > day  # the sample's weekly is always ahead
    for spec in specs:  # as the simulator does on a subscribe: the underlying first, at its reference
        if not sim.model.has_underlying(spec.underlying):
            price = universe.reference_price(spec.underlying)
            assert price is not None
            sim.model.add_underlying(spec.underlying, price, spec.asset)
    slots = sim.model.add_many(specs)
    prices = sim.model.prices(slots)
    assert np.all(np.isfinite(prices))
    assert np.all(prices >= 0)
    by_key = dict(zip([s.key for s in specs], prices, strict=True))
    calls = sorted((s.strike, by_key[s.key]) for s in options if s.kind is Kind.CALL)
    puts = sorted((s.strike, by_key[s.key]) for s in options if s.kind is Kind.PUT)
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(calls))
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(puts))
    # the packets' LTT is the simulator's clock (IST wall clock encoded as UTC), not the host's
    assert sim.clock.today() == day
    assert sim.state()["clock"]["now"].startswith(day.isoformat())
    # MCX contracts stop at that day's MCX close (23:30 or 23:55 by US DST), not a fixed hour
    mcx_stop = dt.datetime.fromtimestamp(expiry_timestamp(day, exchange="MCX"), IST)
    assert mcx_stop.time() == mcx_close_time(day)

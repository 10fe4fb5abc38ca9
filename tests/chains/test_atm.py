"""ATM engine: nearest *listed* strike, centred windows, truncation, LTP sources, errors, cache.

Strikes come from the real BANKNIFTY extract (2025) wherever the shape of a real listing matters: its
July grid is 500 apart below 38500 and 100 apart above; September has a 41000 → 41300 gap that a
``round(ltp / step) * step`` engine would answer with the unlisted 41100.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from tickgate.chains import (
    AtmEngine,
    ChainError,
    ExpiryExpiredError,
    ExpiryNotListedError,
    NoOptionsError,
    ResolvedLtp,
    TtlCache,
    UnknownSymbolError,
    nearest_index,
    resolve_ltp,
)
from tickgate.chains.atm import window_bounds
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.instruments import InstrumentRegistry
from tickgate.service.errors import as_service_error

from .conftest import SAMPLE_TODAY, TODAY, chain_settings

JUL = dt.date(2025, 7, 31)
SEP = dt.date(2025, 9, 25)
DEC = dt.date(2025, 12, 24)  # a quarterly: only 31 strikes, 1500 apart
BANKNIFTY_INDEX = InstrumentKey(ExchangeSegment.IDX_I, 25)


@dataclass(frozen=True)
class Quote:
    ltp: float | None
    prev_close: float | None


def quotes(table: dict[InstrumentKey, Quote]):  # type: ignore[no-untyped-def]
    return table.get


# ------------------------------------------------------------------------------------- real strikes


def test_atm_is_the_nearest_listed_strike_on_real_strikes(engine: AtmEngine, banknifty: InstrumentRegistry):
    listed = [r.strike for r in banknifty.strikes("BANKNIFTY", JUL)]
    assert 56400.0 in listed
    assert 56500.0 in listed
    w = engine.window("BANKNIFTY", JUL, 25, ltp=56437.5)
    assert w.atm_strike == 56400.0
    assert w.ltp == 56437.5
    assert w.ltp_source == "given"
    assert w.step == 100.0
    assert w.returned == w.requested == 25
    assert not w.truncated
    assert w.note is None
    assert w.strikes == tuple(listed[listed.index(56400.0) - 12 : listed.index(56400.0) + 13])
    assert w.strikes[12] == w.atm_strike
    # a different side of the midpoint picks the upper strike
    assert engine.window("BANKNIFTY", JUL, 25, ltp=56462.0).atm_strike == 56500.0


def test_non_uniform_gap_picks_a_listed_strike_not_the_rounded_one(engine: AtmEngine):
    w = engine.window("BANKNIFTY", SEP, 11, ltp=41140.0)
    listed = w.listing.strikes
    assert 41100.0 not in listed  # what round(ltp / step) * step would answer
    assert w.step == 100.0
    assert w.atm_strike == 41000.0
    assert engine.window("BANKNIFTY", SEP, 11, ltp=41160.0).atm_strike == 41300.0
    # 500-wide strikes below 38500 in July: 36740 is nearer to 36500 than to 37000
    assert engine.window("BANKNIFTY", JUL, 5, ltp=36740.0).atm_strike == 36500.0
    assert engine.window("BANKNIFTY", JUL, 5, ltp=36760.0).atm_strike == 37000.0


def test_exact_ties_go_to_the_lower_strike(engine: AtmEngine):
    assert engine.window("BANKNIFTY", JUL, 5, ltp=56450.0).atm_strike == 56400.0
    assert engine.window("BANKNIFTY", SEP, 5, ltp=41150.0).atm_strike == 41000.0  # 41000 | 41300
    assert nearest_index([1.0, 2.0, 3.0], 2.5) == 1
    assert nearest_index([0.25, 0.5, 0.75], 0.625) == 1  # currency-sized strikes


def test_nearest_index_beyond_the_listing():
    assert nearest_index([10.0, 20.0], 1.0) == 0
    assert nearest_index([10.0, 20.0], 99.0) == 1
    assert nearest_index([10.0], 12.0) == 0
    with pytest.raises(ValueError, match="no strikes"):
        nearest_index([], 1.0)


def test_window_keys_are_the_underlying_then_every_ce_and_pe(engine: AtmEngine):
    w = engine.window("BANKNIFTY", JUL, 25, ltp=56437.5)
    keys = w.keys()
    assert keys[0] == w.underlying.key == BANKNIFTY_INDEX
    assert len(keys) == 1 + 2 * 25 == len(set(keys))
    expected = [k for r in w.rows for k in (r.ce, r.pe)]
    assert list(keys[1:]) == expected
    assert w.option_keys() == keys[1:]
    assert all(k.segment is ExchangeSegment.NSE_FNO for k in w.option_keys())


# -------------------------------------------------------------------------------------- truncation


def test_truncated_at_the_bottom_of_the_listing(engine: AtmEngine):
    w = engine.window("BANKNIFTY", JUL, 101, ltp=31200.0)
    assert w.listing.strikes[0] == 31000.0
    assert w.atm_strike == 31000.0
    assert w.atm_index == 0
    assert (w.truncated_below, w.truncated_above) == (50, 0)
    assert w.returned == 51
    assert w.requested == 101
    assert w.truncated
    assert w.note is not None
    assert "51 of 101" in w.note
    assert "50 fewer below" in w.note
    assert "31000" in w.note


def test_truncated_at_the_top_of_the_listing(engine: AtmEngine):
    w = engine.window("BANKNIFTY", JUL, 25, ltp=79_950.0)
    assert w.atm_strike == 80000.0 == w.listing.strikes[-1]
    assert (w.truncated_below, w.truncated_above) == (0, 12)
    assert w.returned == 13
    assert w.note is not None
    assert "12 fewer above" in w.note
    assert "80000" in w.note


def test_truncated_on_both_sides_of_a_short_listing(engine: AtmEngine):
    w = engine.window("BANKNIFTY", DEC, 101, ltp=57000.0)
    assert w.listed == 31
    assert w.returned == 31
    assert w.truncated_below + w.truncated_above == 70
    assert w.step == 1500.0
    assert w.expiry.kind == "quarterly"
    assert w.note is not None
    assert "fewer below" in w.note
    assert "fewer above" in w.note


def test_window_bounds_centre_and_even_counts():
    assert window_bounds(50, 101, 371) == (0, 101, 0, 0)
    assert window_bounds(10, 4, 100) == (9, 13, 0, 0)  # an even count leans up: 1 below, 2 above
    assert window_bounds(0, 1, 1) == (0, 1, 0, 0)
    assert window_bounds(2, 11, 4) == (0, 4, 3, 4)
    with pytest.raises(ValueError, match="at least 1"):
        window_bounds(0, 0, 10)


# ------------------------------------------------------------------------------------------ LTP source


def test_ltp_source_fallback_order(engine: AtmEngine):
    live = {BANKNIFTY_INDEX: Quote(56_910.0, 56_020.0)}
    w = engine.window("BANKNIFTY", JUL, 25, ltp=50_000.0, quotes=quotes(live))
    assert (w.ltp, w.ltp_source, w.atm_strike) == (56_910.0, "live", 56_900.0)  # live beats a given ltp

    no_trade_yet = {BANKNIFTY_INDEX: Quote(0.0, 56_020.0)}  # the feed reports 0 before the first trade
    w = engine.window("BANKNIFTY", JUL, 25, ltp=50_000.0, quotes=quotes(no_trade_yet))
    assert (w.ltp, w.ltp_source, w.atm_strike) == (56_020.0, "prev_close", 56_000.0)

    w = engine.window("BANKNIFTY", JUL, 25, ltp=50_030.0, quotes=quotes({}))
    assert (w.ltp_source, w.atm_strike) == ("given", 50_000.0)

    w = engine.window("BANKNIFTY", JUL, 25, quotes=quotes({BANKNIFTY_INDEX: Quote(None, float("nan"))}))
    strikes = w.listing.strikes
    assert w.ltp_source == "reference"
    assert w.ltp == strikes[(len(strikes) - 1) // 2] == w.atm_strike


def test_engine_default_quote_lookup(banknifty: InstrumentRegistry, settings):  # type: ignore[no-untyped-def]
    eng = AtmEngine(banknifty, settings, quotes=quotes({BANKNIFTY_INDEX: Quote(57_333.0, None)}))
    w = eng.window("BANKNIFTY", JUL, 25)
    assert (w.ltp_source, w.atm_strike) == ("live", 57_300.0)


def test_resolve_ltp_rejects_a_bad_given_price():
    with pytest.raises(ValueError, match="positive finite"):
        resolve_ltp(BANKNIFTY_INDEX, 1.0, ltp=-5.0)
    assert resolve_ltp(BANKNIFTY_INDEX, 7.0) == ResolvedLtp(7.0, "reference")


def test_bad_arguments(engine: AtmEngine):
    with pytest.raises(ValueError, match="at least 1 strike"):
        engine.window("BANKNIFTY", JUL, 0, ltp=56_000.0)
    with pytest.raises(ValueError, match="positive finite"):
        engine.window("BANKNIFTY", JUL, 5, ltp=float("nan"))
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        engine.window("BANKNIFTY", "31-07-2025", 5)
    assert engine.window("banknifty", "2025-07-31", 5, ltp=56_000.0).expiry.date == JUL


# -------------------------------------------------------------------------------------------- errors


def test_unknown_symbol(engine: AtmEngine):
    with pytest.raises(UnknownSymbolError, match="NOSUCH") as exc:
        engine.window("NOSUCH", JUL)
    assert as_service_error(exc.value).status == 404
    assert isinstance(exc.value, ChainError)


def test_expired_expiry(banknifty: InstrumentRegistry, settings):  # type: ignore[no-untyped-def]
    eng = AtmEngine(banknifty, settings)
    assert eng.window("BANKNIFTY", JUL, 5, today=JUL, ltp=56_000.0).returned == 5  # expiry day still trades
    with pytest.raises(ExpiryExpiredError, match="2025-07-31 have expired") as exc:
        eng.window("BANKNIFTY", JUL, 5, today=JUL + dt.timedelta(days=1))
    assert as_service_error(exc.value).status == 400  # the caller asked for a past expiry
    assert "2025-08-28" in str(exc.value)  # says what is still listed


def test_expiry_not_listed(engine: AtmEngine):
    with pytest.raises(ExpiryNotListedError, match="no BANKNIFTY options expire on 2025-08-01") as exc:
        engine.window("BANKNIFTY", dt.date(2025, 8, 1))
    assert exc.value.listed[:3] == (JUL, dt.date(2025, 8, 28), SEP)
    assert as_service_error(exc.value).status == 404


def test_no_options_listed(registry: InstrumentRegistry):
    eng = AtmEngine(registry, chain_settings())
    with pytest.raises(NoOptionsError, match="NICKEL"):  # an MCX commodity with futures only
        eng.window("NICKEL", TODAY)
    with pytest.raises(NoOptionsError, match="NIFTY AUTO"):  # an index without derivatives
        eng.window("NIFTY AUTO", TODAY)
    with pytest.raises(NoOptionsError, match="another exchange"):  # NIFTY options trade on NSE
        eng.window("NIFTY", TODAY, exchange="BSE")


# ---------------------------------------------------------------------------------- generated master


def test_default_strike_counts_by_kind(registry: InstrumentRegistry):
    eng = AtmEngine(registry, chain_settings(commodity_strikes=31))
    nifty = eng.window("NIFTY", TODAY, today=TODAY)
    assert (nifty.requested, nifty.returned, nifty.listing.kind) == (101, 101, "index")
    assert nifty.underlying.key == InstrumentKey(ExchangeSegment.IDX_I, 13)
    expiry = registry.option_expiries("RELIANCE", TODAY)[0].date
    stock = eng.window("RELIANCE", expiry, today=TODAY)
    assert (stock.requested, stock.listing.kind, len(stock.keys())) == (25, "stock", 51)
    assert stock.underlying.instrument == "EQUITY"
    assert stock.underlying.exchange == "NSE"
    crude = eng.window("CRUDEOIL", dt.date(2026, 7, 16), today=TODAY)
    assert (crude.requested, crude.listing.kind) == (31, "commodity")


def test_mcx_underlying_is_the_future_the_option_settles_into(registry: InstrumentRegistry):
    eng = AtmEngine(registry, chain_settings())
    july = eng.window("CRUDEOIL", dt.date(2026, 7, 16), today=TODAY)
    august = eng.window("CRUDEOIL", dt.date(2026, 8, 18), today=TODAY)
    assert july.underlying.trading_symbol == "CRUDEOIL-17Jul2026-FUT"
    assert august.underlying.trading_symbol == "CRUDEOIL-19Aug2026-FUT"
    assert july.keys()[0] == july.underlying.key


def test_sensex_on_bse(registry: InstrumentRegistry):
    eng = AtmEngine(registry, chain_settings())
    w = eng.window("SENSEX", dt.date(2026, 7, 16), 11, ltp=85_040.0, exchange="bse", today=TODAY)
    assert w.exchange == "BSE"
    assert w.atm_strike == 85_000.0
    assert w.underlying.key == InstrumentKey(ExchangeSegment.IDX_I, 51)
    assert all(k.segment is ExchangeSegment.BSE_FNO for k in w.option_keys())


# --------------------------------------------------------------------------------------------- cache


def test_window_cache_is_keyed_by_atm_and_expires(banknifty: InstrumentRegistry):
    eng = AtmEngine(banknifty, chain_settings(cache_ttl_s=10.0))
    a = eng.window("BANKNIFTY", JUL, 25, ltp=56_410.0, now=100.0)
    b = eng.window("BANKNIFTY", JUL, 25, ltp=56_430.0, now=105.0)  # same ATM: cached rows, new LTP
    assert b.rows is a.rows
    assert b.ltp == 56_430.0
    assert b.atm_strike == a.atm_strike
    assert eng._windows.hits == 1
    c = eng.window("BANKNIFTY", JUL, 25, ltp=56_530.0, now=106.0)  # another ATM: another entry
    assert c.atm_strike == 56_500.0
    d = eng.window("BANKNIFTY", JUL, 25, ltp=56_410.0, now=111.0)  # TTL passed: rebuilt
    assert d.rows == a.rows
    assert d.rows is not a.rows
    e = eng.window("BANKNIFTY", JUL, 25, ltp=56_410.0)  # no now: no cache at all
    assert e.rows is not d.rows


def test_ttl_cache():
    cache: TtlCache[str, int] = TtlCache(ttl=5.0, max_entries=2)
    cache.put("a", 1, now=0.0)
    assert cache.get("a", 4.9) == 1
    assert cache.get("a", 5.0) is None
    assert len(cache) == 0
    cache.put("a", 1, 10.0)
    cache.put("b", 2, 11.0)
    cache.put("c", 3, 12.0)  # over max_entries: the oldest goes
    assert cache.get("a", 12.0) is None
    assert cache.get("c", 12.0) == 3
    assert cache.purge(16.5) == 1
    assert len(cache) == 1
    off: TtlCache[str, int] = TtlCache(ttl=0.0)
    off.put("a", 1, 0.0)
    assert off.get("a", 0.0) is None
    with pytest.raises(ValueError, match="max_entries"):
        TtlCache(1.0, 0)


def test_sample_today_is_before_every_sample_expiry(banknifty: InstrumentRegistry):
    assert banknifty.option_expiries("BANKNIFTY", SAMPLE_TODAY)[0].date == JUL

"""The simulator's market day: instruments trade only in their exchange's session on the clock, and with a
liquidity profile far strikes trade rarely."""

from __future__ import annotations

import asyncio
import datetime as dt

from pinned import frozen
from tickgate.clock import IST
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey, PrevClose, Quote
from tickgate.sim import Simulator, StaticUniverse

from .helpers import FAST, NIFTY, NIFTY_FUT, REAL_LIMITS, RELIANCE, FeedClient, chain_keys

CRUDE_FUT = InstrumentKey(ExchangeSegment.MCX_COMM, 430000)
TUESDAY = dt.date(2026, 12, 1)


def _sim(universe: StaticUniverse, hhmm: tuple[int, int], **kw: object) -> Simulator:
    clock = frozen(dt.datetime.combine(TUESDAY, dt.time(*hhmm), tzinfo=IST))
    options: dict[str, object] = {"rate": 4_000, **FAST, **kw}
    return Simulator(universe=universe, limits=REAL_LIMITS, clock=clock, **options)  # type: ignore[arg-type]


async def _stream(
    universe: StaticUniverse, hhmm: tuple[int, int], **kw: object
) -> tuple[Simulator, FeedClient]:
    sim = _sim(universe, hhmm, **kw)
    await sim.start()
    client = await FeedClient.open(sim.feed_url())
    await client.subscribe(FeedMode.QUOTE, [NIFTY_FUT, RELIANCE, CRUDE_FUT, NIFTY])
    await asyncio.sleep(0.6)
    return sim, client


async def test_after_the_nse_close_only_mcx_trades(universe: StaticUniverse) -> None:
    sim, client = await _stream(universe, (17, 0))
    try:
        assert len(client.of(Quote, CRUDE_FUT)) > 10
        for key in (NIFTY_FUT, RELIANCE):
            assert client.of(Quote, key) == []  # silent: the market closed at 15:30
            assert len(client.of(PrevClose, key)) == 1  # the previous close still comes on subscribe
        assert sim.stats.packets_quiet > 0
        assert sim.state(subscriptions=False, history=False)["trading"] == ["MCX"]  # currency closed at 17:00
    finally:
        await client.close()
        await sim.close()


async def test_a_snapshot_on_subscribe_after_hours_is_a_switch(universe: StaticUniverse) -> None:
    """With the switch, a subscribe after the NSE close answers one Quote of the last values for each NSE
    instrument (MCX still trades and streams as usual); without it, the NSE legs stay silent (above)."""
    sim, client = await _stream(universe, (17, 0), snapshot_after_hours=True)
    try:
        for key in (NIFTY_FUT, RELIANCE):
            (snapshot,) = client.of(Quote, key)
            assert snapshot.ltp == sim.model.snapshot(key)["ltp"]  # type: ignore[index]
        assert len(client.of(Quote, CRUDE_FUT)) > 10
        assert sim.state(subscriptions=False, history=False)["config"]["snapshot_after_hours"] is True
        assert sim.stats.snapshots_after_hours == 3  # NIFTY_FUT, RELIANCE and the NIFTY index
    finally:
        await client.close()
        await sim.close()


async def test_in_session_both_trade_and_pre_open_is_silent(universe: StaticUniverse) -> None:
    sim, client = await _stream(universe, (10, 0))
    try:
        assert client.of(Quote, NIFTY_FUT)
        assert client.of(Quote, CRUDE_FUT)
    finally:
        await client.close()
        await sim.close()
    sim, client = await _stream(universe, (9, 5))
    try:
        assert client.of(Quote, NIFTY_FUT) == []  # pre-open: orders, no trades
        assert client.of(Quote, CRUDE_FUT)
    finally:
        await client.close()
        await sim.close()


async def test_always_open_without_market_hours(universe: StaticUniverse) -> None:
    sim, client = await _stream(universe, (2, 0), market_hours=False)
    try:
        assert client.of(Quote, NIFTY_FUT)
        assert sim.stats.packets_quiet == 0
    finally:
        await client.close()
        await sim.close()


async def test_far_strikes_trade_rarely_with_a_liquidity_profile(universe: StaticUniverse) -> None:
    sim = _sim(universe, (11, 0), rate=8_000, liquidity_width=0.01)
    await sim.start()
    client = await FeedClient.open(sim.feed_url())
    try:
        keys = chain_keys(universe, [26_000.0, 24_000.0])
        near, far = keys[26_000.0][0], keys[24_000.0][0]
        await client.subscribe(FeedMode.QUOTE, [near, far])
        await sim.wait_for(lambda: sim.model.has_underlying("NIFTY"), message="NIFTY priced")
        sim.set_price("NIFTY", 26_000.0)
        before = len(client.of(Quote, near)), len(client.of(Quote, far))
        await asyncio.sleep(1.0)
        near_n = len(client.of(Quote, near)) - before[0]
        far_n = len(client.of(Quote, far)) - before[1]
        assert near_n > 50
        assert far_n < near_n / 5  # 8% out of the money: a chance of about 1% per draw
    finally:
        await client.close()
        await sim.close()


async def test_previous_close_as_code_6_for_every_instrument(universe: StaticUniverse) -> None:
    sim, client = await _stream(universe, (10, 0))
    try:
        for key in (NIFTY, NIFTY_FUT, RELIANCE):
            assert len(client.of(PrevClose, key)) == 1
        quotes = client.of(Quote, NIFTY_FUT)
        assert quotes
        assert {q.close for q in quotes} == {0.0}  # the day's close is not known during the day
    finally:
        await client.close()
        await sim.close()


async def test_previous_close_in_quotes_with_code_6_for_indices_only(universe: StaticUniverse) -> None:
    sim, client = await _stream(universe, (10, 0), prev_close="indices")
    try:
        assert len(client.of(PrevClose, NIFTY)) == 1
        assert client.of(PrevClose, NIFTY_FUT) == []
        assert client.of(PrevClose, RELIANCE) == []
        expected = sim.last_values(NIFTY_FUT)
        assert expected is not None
        quotes = client.of(Quote, NIFTY_FUT)
        assert quotes
        assert {q.close for q in quotes} == {expected["prev_close"]}
    finally:
        await client.close()
        await sim.close()

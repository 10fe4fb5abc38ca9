"""REST backfill: the queue's order, Dhan's answer parsed, and a real backfiller against the simulator's
market quote (1,000 instruments a request, one request a second, 429 honoured, feed prices kept)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from tickgate.config import FeedLimits
from tickgate.dhan.batch import decode_batch
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey, ResponseCode, empty_packets
from tickgate.feed.backfill import (
    PRIORITY_OTHER,
    PRIORITY_TIER_B,
    PRIORITY_USER,
    Backfiller,
    BackfillQueue,
    parse_quotes,
    request_body,
)
from tickgate.feed.quotes import QuoteStore, RestQuote
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator

from .conftest import big_universe, credentials

FNO = ExchangeSegment.NSE_FNO


def k(i: int) -> InstrumentKey:
    return InstrumentKey(FNO, i)


def test_queue_orders_users_then_tier_b_then_the_rest_once_a_day() -> None:
    q = BackfillQueue()
    assert q.want([k(1), k(2)], PRIORITY_OTHER) == 2
    assert q.want([k(3), k(1)], PRIORITY_TIER_B) == 1  # k(1) moves up, is not added twice
    assert q.want([k(4)], PRIORITY_USER) == 1
    assert q.take(3) == [k(4), k(1), k(3)]  # within a priority: first wanted, first asked
    q.done([k(4), k(3), k(1)])
    assert q.want([k(4)], PRIORITY_USER) == 0  # filled today already
    q.retry([k(9)])
    assert q.take(10) == [k(9), k(2)]
    q.new_day()
    assert q.want([k(4)], PRIORITY_USER) == 1


def test_the_start_up_cohort_counts_down_as_it_is_answered() -> None:
    q = BackfillQueue()
    q.want([k(i) for i in range(2_500)], PRIORITY_TIER_B)
    assert q.mark_cohort() == 2_500
    q.want([k(9_000)], PRIORITY_USER)  # an add after start: asked first, not part of the start-up
    first = q.take(1_000)
    assert first[0] == k(9_000)
    q.done(first)
    assert q.cohort_left == 1_501
    rest = q.take(5_000)
    assert rest == [k(i) for i in range(999, 2_500)]
    q.done(rest)
    assert (q.cohort_left, len(q)) == (0, 0)


def test_request_body_and_dhan_answer() -> None:
    assert request_body([k(1), InstrumentKey(ExchangeSegment.IDX_I, 13), k(2)]) == {
        "NSE_FNO": [1, 2],
        "IDX_I": [13],
    }
    answer = {
        "data": {
            "NSE_FNO": {
                "49081": {
                    "last_price": 368.15,
                    "ohlc": {"open": 0, "close": 350.5, "high": 0, "low": 0},
                    "volume": 0,
                    "oi": 1200,
                    "average_price": 0,
                    "last_quantity": 0,
                }
            },
            "IDX_I": {"13": {"last_price": 26012.35}},
        },
        "status": "success",
    }
    quotes = {q.key: q for q in parse_quotes(json.dumps(answer).encode())}
    leg = quotes[k(49081)]
    assert (leg.ltp, leg.prev_close, leg.open, leg.oi, leg.volume) == (368.15, 350.5, None, 1200, 0)
    assert quotes[InstrumentKey(ExchangeSegment.IDX_I, 13)].ltp == 26012.35


def test_a_malformed_value_loses_that_value_and_a_malformed_answer_fails_clearly() -> None:
    body = {
        "data": {"NSE_FNO": {"7": {"last_price": "n/a", "ohlc": {"close": 12.5}, "oi": -1, "volume": 40}}}
    }
    (leg,) = parse_quotes(json.dumps(body).encode())
    assert (leg.key, leg.ltp, leg.prev_close, leg.oi, leg.volume) == (k(7), None, 12.5, None, 40)
    with pytest.raises(ValueError, match="malformed"):
        parse_quotes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(ValueError, match="malformed"):
        parse_quotes(b'{"data": {"NSE_FNO": [1, 2]}}')
    with pytest.raises(ValueError, match="malformed at NSE_FNO 8"):  # each quote is read as it is taken
        parse_quotes(b'{"data": {"NSE_FNO": {"7": {"oi": 5}, "8": [1, 2]}}}')
    with pytest.raises(ValueError, match="without a data object"):
        parse_quotes(b'{"status": "failure"}')


def _ticker(key: InstrumentKey, ltp: float) -> bytes:
    packet = empty_packets(ResponseCode.TICKER, 1)
    packet["segment"], packet["security_id"], packet["ltp"], packet["ltt"] = (
        int(key.segment),
        key.security_id,
        ltp,
        1,
    )
    return packet.tobytes()


def test_a_feed_price_is_never_overwritten_by_a_snapshot() -> None:
    store = QuoteStore()
    store.apply(decode_batch([_ticker(k(1), 101.5)]), now_ns=1)
    priced = store.fill([RestQuote(k(1), 99.0, prev_close=95.0), RestQuote(k(2), 12.0, prev_close=11.0)], 2)
    assert priced == 1
    one, two = store.get(k(1)), store.get(k(2))
    assert one is not None
    assert two is not None
    assert (one.ltp, one.prev_close, one.source) == (101.5, 95.0, "feed")
    assert (two.ltp, two.prev_close, two.source) == (12.0, 11.0, "rest")
    assert two.change == 1.0
    assert two.quoted_at is not None


async def _sim(make_sim: Callable[..., Simulator], chains: int) -> tuple[Simulator, list[InstrumentKey]]:
    universe, groups = big_universe(chains)
    sim = make_sim(universe=universe, rate=0.0)
    await sim.start()
    return sim, [key for group in groups for key in group]


async def test_backfill_fills_every_leg_within_dhan_s_limits(make_sim: Callable[..., Simulator]) -> None:
    sim, keys = await _sim(make_sim, 12)  # 2,400 legs: three requests
    store = QuoteStore()
    backfill = Backfiller(sim.rest_url, credentials, store, FeedLimits())
    backfill.start()
    try:
        began = time.monotonic()
        backfill.want(keys[:200], PRIORITY_USER)
        backfill.want(keys, PRIORITY_TIER_B)

        def done() -> bool:
            return all((q := store.get(key)) is not None and q.ltp and q.prev_close for key in keys)

        while not done():
            assert time.monotonic() - began < 10, f"{backfill.stats} pending {backfill.pending}"
            await asyncio.sleep(0.05)
        rest = sim.state(subscriptions=False, history=False)["rest"]
        assert rest["answered"] == 3
        assert rest["max_per_second"] == 1
        assert rest["rate_limited"] == 0
        assert backfill.stats.priced == len(keys)
        sample = store.get(keys[1_234])
        expected = sim.last_values(keys[1_234])
        assert sample is not None
        assert expected is not None
        assert sample.source == "rest"
        assert sample.prev_close == expected["prev_close"]
    finally:
        await backfill.stop()
        await sim.close()


async def test_a_429_is_honoured_and_the_keys_come_back(make_sim: Callable[..., Simulator]) -> None:
    """Another program on the account spent this second's request: the backfill waits and retries."""
    sim, keys = await _sim(make_sim, 1)
    store = QuoteStore()
    backfill = Backfiller(sim.rest_url, credentials, store, FeedLimits())
    try:
        async with httpx.AsyncClient(base_url=sim.rest_url) as other:  # another program on the account
            r = await other.post(
                "/v2/marketfeed/ltp",
                json={"NSE_FNO": [keys[0].security_id]},
                headers={"access-token": DEFAULT_TOKEN, "client-id": DEFAULT_CLIENT_ID},
            )
            assert r.status_code == 200
        backfill.start()  # nothing of this process asked before: its first request goes at once, a 429
        backfill.want(keys, PRIORITY_USER)
        began = time.monotonic()
        while not all((q := store.get(key)) is not None and q.ltp for key in keys):
            assert time.monotonic() - began < 10, backfill.stats
            await asyncio.sleep(0.05)
        assert backfill.stats.rate_limited == 1
        assert sim.state(subscriptions=False, history=False)["rest"]["max_per_second"] == 1
        assert np.isfinite(store.get(keys[-1]).prev_close)  # type: ignore[union-attr,arg-type]
        await backfill.stop()
        backfill = Backfiller(sim.rest_url, credentials, store, FeedLimits())  # a restart in this process
        backfill.start()  # waits out its predecessor's last answer
        assert len(await backfill.quote_now(keys[:1], timeout=5)) == 1
        assert sim.state(subscriptions=False, history=False)["rest"]["rate_limited"] == 1
    finally:
        await backfill.stop()
        await sim.close()


async def test_quote_now_answers_ahead_of_the_queue(make_sim: Callable[..., Simulator]) -> None:
    sim, keys = await _sim(make_sim, 1)
    store = QuoteStore()
    backfill = Backfiller(sim.rest_url, credentials, store, FeedLimits())
    backfill.start()
    try:
        quotes = await backfill.quote_now([InstrumentKey(ExchangeSegment.IDX_I, 13)])
        assert [q.key for q in quotes] == [InstrumentKey(ExchangeSegment.IDX_I, 13)]
        assert quotes[0].ltp
        bad = Backfiller(sim.rest_url, lambda: credentials().__class__("1", "nope"), store, FeedLimits())
        bad.start()
        assert await bad.quote_now(keys[:1]) == []  # refused: the caller goes on without
        assert bad.stats.failures == 1
        assert "nope" not in (bad.stats.last_error or "")
        await bad.stop()
    finally:
        await backfill.stop()
        await sim.close()

"""Authentication, subscriptions as the server records them, and what is streamed back."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from tickgate.dhan.protocol import (
    IST_OFFSET_SECONDS,
    FeedMode,
    Full,
    InstrumentKey,
    OpenInterest,
    PrevClose,
    Quote,
    Ticker,
    decode_frame,
)
from tickgate.sim import Simulator

from .helpers import HDFCBANK, NIFTY, NIFTY_FUT, RELIANCE, TCS, UNKNOWN, FeedClient, chain_keys

# ------------------------------------------------------------------------------------------------ auth


async def test_good_credentials_are_admitted(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await sim.wait_for(lambda: len(sim.open_sockets()) == 1, message="admission")
    record = sim.open_sockets()[0]
    assert record.authenticated
    assert record.client_id == "1100000001"
    await asyncio.sleep(0.3)  # several ping intervals: still open, pongs answered
    assert not client.closed.is_set()
    assert record.pings_sent >= 2
    assert record.pongs_received >= 1
    assert client.disconnects == []


@pytest.mark.parametrize(
    ("token", "client_id", "extra", "code"),
    [
        ("wrong-token", None, {}, 809),
        ("", None, {}, 808),
        (None, "9999999999", {}, 810),
        (None, None, {"version": "1"}, 808),
        (None, None, {"authType": "1"}, 808),
    ],
    ids=[
        "bad-token-809",
        "missing-token-808",
        "bad-client-id-810",
        "wrong-version-808",
        "wrong-auth-type-808",
    ],
)
async def test_bad_credentials_get_disconnect_packet_then_close(
    sim: Simulator, open_client, *, token: str | None, client_id: str | None, extra: dict[str, str], code: int
) -> None:
    client: FeedClient = await open_client(sim.feed_url(token=token, client_id=client_id, **extra))
    await client.wait_closed()
    assert client.disconnects == [code]
    assert client.close_exc is None or client.close_exc.rcvd is not None  # a proper close frame followed
    assert sim.open_sockets() == []
    record = sim.history[-1]
    assert record.close_reason == f"auth:{code}"
    assert not record.authenticated
    assert sim.stats.auth_failures[code] == 1


# --------------------------------------------------------------------------------------- subscriptions


async def test_subscribe_and_unsubscribe_are_recorded_in_view(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.TICKER, [NIFTY, RELIANCE])
    await client.subscribe(FeedMode.FULL, [NIFTY_FUT])
    await sim.wait_for(lambda: sum(map(len, sim.view().values())) == 3)
    [(socket_id, subs)] = sim.view().items()
    assert subs == {NIFTY: FeedMode.TICKER, RELIANCE: FeedMode.TICKER, NIFTY_FUT: FeedMode.FULL}

    await client.subscribe(FeedMode.QUOTE, [RELIANCE])  # re-subscribe: the mode changes
    await client.unsubscribe(FeedMode.TICKER, [NIFTY])
    await client.unsubscribe(FeedMode.TICKER, [NIFTY_FUT])  # subscribed as full: removed, mismatch counted
    await sim.wait_for(lambda: sim.view()[socket_id] == {RELIANCE: FeedMode.QUOTE})
    record = sim.open_sockets()[0]
    assert record.subscribe_messages == 3
    assert record.unsubscribe_messages == 2
    assert record.mode_mismatches == 1
    assert record.max_subscriptions == 3
    assert sim.view_json() == {str(socket_id): {"NSE_EQ:2885": "QUOTE"}}
    ops = [(e["op"], e["mode"], e["keys"]) for e in sim.journal_json()]
    assert ops[-2:] == [("unsubscribe", "TICKER", ["IDX_I:13"]), ("unsubscribe", "TICKER", ["NSE_FNO:40000"])]
    json.dumps(sim.state())  # the whole state is JSON-able


async def test_prev_close_once_per_newly_subscribed_instrument(sim: Simulator, open_client) -> None:
    sim.set_rate(0)
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.TICKER, [NIFTY, RELIANCE])
    await client.wait(lambda: len(client.of(PrevClose)) == 2, what="prev close")
    await client.subscribe(FeedMode.QUOTE, [RELIANCE, TCS])  # only TCS is new
    await client.wait(lambda: len(client.of(PrevClose)) == 3)
    await asyncio.sleep(0.05)
    closes = {(p.segment, p.security_id): p for p in client.of(PrevClose)}
    assert set(closes) == {NIFTY, RELIANCE, TCS}
    assert len(client.of(PrevClose)) == 3
    assert 24_000 < closes[NIFTY].prev_close < 28_000
    assert closes[NIFTY].prev_oi == 0
    assert client.of(Ticker) == []
    assert client.of(Quote) == []


async def test_unknown_security_ids_are_ignored_and_counted(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    other = InstrumentKey(NIFTY.segment, 424_242)
    await client.subscribe(FeedMode.QUOTE, [UNKNOWN, RELIANCE, other])
    await sim.wait_for(lambda: sim.stats.unknown_instruments == 2)
    assert list(sim.view().values()) == [{RELIANCE: FeedMode.QUOTE}]
    assert sim.open_sockets()[0].unknown_instruments == 2
    assert sim.open_sockets()[0].instruments_received == 3
    await client.wait(lambda: len(client.of(Quote)) > 20)
    assert {(p.segment, p.security_id) for p in client.packets} == {RELIANCE}


async def test_ticks_only_for_subscribed_instruments_in_their_mode(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.TICKER, [NIFTY])
    await client.subscribe(FeedMode.QUOTE, [RELIANCE, NIFTY_FUT])
    await client.subscribe(FeedMode.FULL, [HDFCBANK])
    await client.wait(lambda: all(len(client.of(t)) > 30 for t in (Ticker, Quote, Full)), what="all modes")
    await client.wait(lambda: len(client.of(OpenInterest)) > 5, what="OI with quote")
    kinds = {}
    for packet in client.packets:
        kinds.setdefault((packet.segment, packet.security_id), set()).add(type(packet))  # type: ignore[union-attr]
    assert kinds == {
        NIFTY: {PrevClose, Ticker},
        RELIANCE: {PrevClose, Quote},
        NIFTY_FUT: {PrevClose, Quote, OpenInterest},  # OI only for derivatives
        HDFCBANK: {PrevClose, Full},
    }

    # After an unsubscribe is processed, a marker frame goes out; nothing for NIFTY may follow it.
    await client.unsubscribe(FeedMode.TICKER, [NIFTY])
    await sim.wait_for(lambda: NIFTY not in next(iter(sim.view().values())))
    marker = bytes([0, 8, 0, 0, 0xEE, 0xEE, 0, 0])  # code 0 (heartbeat): decoders skip it
    sim.faults.inject("all", marker)
    await client.wait(lambda: marker in client.frames, what="marker")
    seen = len(client.frames)
    await client.wait(lambda: len(client.frames) > seen + 100)
    after = client.frames[client.frames.index(marker) + 1 :]
    assert all((p.segment, p.security_id) != NIFTY for f in after for p in decode_frame(f))  # type: ignore[union-attr]


async def test_a_mode_change_switches_the_packets_at_once(sim: Simulator, open_client) -> None:
    """Subscribing again in another mode moves the instrument: after the change, only the new mode's
    packets (a derivative leaving quote mode also stops getting OI)."""
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.QUOTE, [RELIANCE, NIFTY_FUT])
    await client.wait(lambda: len(client.of(OpenInterest)) > 5, what="OI with quote")
    await client.subscribe(FeedMode.TICKER, [RELIANCE, NIFTY_FUT])
    await sim.wait_for(lambda: set(next(iter(sim.view().values())).values()) == {FeedMode.TICKER})
    marker = bytes([0, 8, 0, 0, 0xEE, 0xEE, 0, 0])
    sim.faults.inject("all", marker)
    await client.wait(lambda: marker in client.frames, what="marker")
    seen = len(client.frames)
    await client.wait(lambda: len(client.frames) > seen + 100)
    after = [p for f in client.frames[client.frames.index(marker) + 1 :] for p in decode_frame(f)]
    assert after
    assert {type(p) for p in after} == {Ticker}


async def test_rate_is_respected_and_split_by_subscriptions(sim: Simulator, open_client) -> None:
    sim.set_rate(2_000)
    one: FeedClient = await open_client(sim.feed_url())
    three: FeedClient = await open_client(sim.feed_url())
    await one.subscribe(FeedMode.TICKER, [NIFTY])
    await three.subscribe(FeedMode.TICKER, [RELIANCE, HDFCBANK, TCS])
    await asyncio.sleep(0.2)
    start_one, start_three = len(one.of(Ticker)), len(three.of(Ticker))
    await asyncio.sleep(1.0)
    got_one, got_three = len(one.of(Ticker)) - start_one, len(three.of(Ticker)) - start_three
    assert 1_500 < got_one + got_three < 2_500
    assert 2.0 < got_three / got_one < 4.5  # ≈ 3 : 1, like their subscription counts


async def test_ltt_is_ist_wall_clock(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.TICKER, [NIFTY])
    await client.wait(lambda: len(client.of(Ticker)) > 0)
    assert abs(client.of(Ticker)[0].ltt - IST_OFFSET_SECONDS - sim.clock.timestamp()) < 3


async def test_stacked_frames_carry_many_packets(universe, open_client) -> None:
    async with Simulator(universe=universe, rate=5_000, stack=20, tick_interval=0.005) as sim:
        client: FeedClient = await open_client(sim.feed_url())
        await client.subscribe(FeedMode.QUOTE, [NIFTY, RELIANCE, HDFCBANK])
        await client.wait(lambda: len(client.of(Quote)) > 1_000)
        sim.set_rate(0)
        await asyncio.sleep(0.05)
        frames = [f for f in client.frames if f[0] == 4]
        sizes = {len(f) // 50 for f in frames}
        assert max(sizes) == 20
        assert all(len(f) % 50 == 0 for f in frames)
        assert sum(len(f) // 50 for f in frames) == len(client.of(Quote))
        assert client.stats.corrupt_frames == 0
        await client.close()


# ------------------------------------------------------------------------------------------- pricing


async def test_prices_are_plausible_and_option_chain_is_consistent(
    sim: Simulator, universe, open_client
) -> None:
    strikes = [25_500 + 50 * i for i in range(21)]  # 25,500 … 26,500 around the 26,000 spot
    chain = chain_keys(universe, strikes)
    client: FeedClient = await open_client(sim.feed_url())
    keys = [NIFTY, NIFTY_FUT] + [k for pair in chain.values() for k in pair]
    await client.subscribe(FeedMode.TICKER, keys)
    await client.wait(lambda: len({(p.segment, p.security_id) for p in client.of(Ticker)}) == len(keys), 5.0)
    sim.set_rate(0)  # freeze, then compare the last values of one instant
    await asyncio.sleep(0.05)

    def last(key: InstrumentKey) -> float:
        values = sim.last_values(key)
        assert values is not None
        return float(values["ltp"])

    spot = last(NIFTY)
    assert 25_000 < spot < 27_000
    future = last(NIFTY_FUT)
    assert 1.0 < future / spot < 1.02  # a small positive basis
    calls = [last(chain[k][0]) for k in map(float, strikes)]
    puts = [last(chain[k][1]) for k in map(float, strikes)]
    assert all(a > b for a, b in itertools.pairwise(calls)), calls  # CE falls as the strike rises
    assert all(a < b for a, b in itertools.pairwise(puts)), puts  # PE rises
    for strike, call, put in zip(strikes, calls, puts, strict=True):
        assert call >= max(spot - strike, 0) - 1
        assert put >= max(strike - spot, 0) - 30
        assert abs((call - put) - (spot - strike)) < 60  # put-call parity within carry over a week
    # The last packet received per instrument is what the simulator says it sent.
    received = {(p.segment, p.security_id): p.ltp for p in client.of(Ticker)}
    assert all(received[k] == last(k) for k in keys)

    # Move the index: the whole chain follows.
    atm_call, atm_put = chain[26_000.0]
    before_call, before_put = last(atm_call), last(atm_put)
    sim.set_price("NIFTY", spot * 1.02)
    sim.set_rate(3_000)
    await client.wait(lambda: abs(last(NIFTY) - spot * 1.02) < 30, what="index moved")
    # +2% is ~520 points: the ATM call gains most of it, the ATM put loses most of its value (a put worth
    # less than 100 near expiry cannot lose 100: how much it can lose depends on the day, so say so).
    put_drop = min(100.0, before_put / 2)
    await client.wait(
        lambda: last(atm_call) > before_call + 300 and last(atm_put) < before_put - put_drop, 5.0
    )


async def test_full_packet_depth_brackets_ltp(sim: Simulator, open_client) -> None:
    client: FeedClient = await open_client(sim.feed_url())
    await client.subscribe(FeedMode.FULL, [NIFTY_FUT, RELIANCE])
    await client.wait(lambda: len(client.of(Full)) > 50)
    for packet in client.of(Full):
        bids = [level.bid_price for level in packet.depth]
        asks = [level.ask_price for level in packet.depth]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks)
        assert bids[0] < packet.ltp < asks[0]
        assert packet.low <= packet.ltp <= packet.high
        assert packet.volume > 0
        assert packet.ltq > 0
    fut = client.of(Full, NIFTY_FUT)
    assert fut[-1].volume >= fut[0].volume  # volume only grows
    assert all(p.oi_day_low <= p.oi <= p.oi_day_high for p in fut)

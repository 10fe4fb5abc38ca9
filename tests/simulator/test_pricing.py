"""The price model and the frame builder, without sockets."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from websockets.frames import Frame, Opcode

from tickgate.dhan.protocol import (
    ExchangeSegment,
    InstrumentKey,
    ResponseCode,
    decode_frame,
)
from tickgate.sim.emitter import ws_frame, ws_header
from tickgate.sim.pricing import (
    CARRY_RATE,
    AssetClass,
    InstrumentSpec,
    Kind,
    PriceModel,
    black76,
    expiry_timestamp,
    fallback_price,
    normal_cdf,
)

NOW = dt.datetime(2026, 3, 2, 11, 0, tzinfo=dt.UTC).timestamp()
EXPIRY = expiry_timestamp(dt.date(2026, 3, 10))


def option(sid: int, strike: float, kind: Kind) -> InstrumentSpec:
    key = InstrumentKey(ExchangeSegment.NSE_FNO, sid)
    return InstrumentSpec(key, kind, "NIFTY", AssetClass.INDEX, strike=strike, expiry_ts=EXPIRY, lot_size=65)


def test_normal_cdf_matches_erf() -> None:
    xs = np.linspace(-6, 6, 1001)
    exact = np.array([0.5 * (1 + math.erf(x / math.sqrt(2))) for x in xs])
    assert np.max(np.abs(normal_cdf(xs) - exact)) < 2e-7


def test_black76_monotone_in_strike_and_put_call_parity() -> None:
    strikes = np.arange(20_000.0, 32_001.0, 50.0)
    n = len(strikes)
    forward, years, vol = np.full(n, 26_000.0), np.full(n, 7 / 365), np.full(n, 0.14)
    calls = black76(np.full(n, Kind.CALL), forward, strikes, years, vol)
    puts = black76(np.full(n, Kind.PUT), forward, strikes, years, vol)
    assert np.all(np.diff(calls) <= 1e-6)
    assert np.all(np.diff(puts) >= -1e-6)
    discount = math.exp(-CARRY_RATE * 7 / 365)  # premiums are paid today: parity on the discounted forward
    np.testing.assert_allclose(calls - puts, discount * (forward - strikes), atol=1e-6)
    expired = black76(
        np.array([Kind.CALL, Kind.PUT]), np.full(2, 100.0), np.array([90.0, 90.0]), np.zeros(2), vol[:2]
    )
    assert expired.tolist() == [10.0, 0.0]


def test_model_prices_a_chain_off_its_underlying() -> None:
    model = PriceModel(seed=1, clock=lambda: NOW)
    model.add_underlying("NIFTY", 26_000.0, AssetClass.INDEX)
    spot = model.add(
        InstrumentSpec(InstrumentKey(ExchangeSegment.IDX_I, 13), Kind.SPOT, "NIFTY", AssetClass.INDEX)
    )
    future = model.add(
        InstrumentSpec(
            InstrumentKey(ExchangeSegment.NSE_FNO, 1),
            Kind.FUTURE,
            "NIFTY",
            AssetClass.INDEX,
            expiry_ts=EXPIRY,
        )
    )
    calls = [model.add(option(100 + i, 25_000 + 100 * i, Kind.CALL)) for i in range(21)]
    prices = model.prices(np.array([spot, future, *calls]))
    assert prices[0] == 26_000.0
    assert 26_000 < prices[1] < 26_100  # ~8 days of carry
    assert np.all(np.diff(prices[2:]) <= 0)
    assert np.all(np.round(prices / 0.05) * 0.05 == pytest.approx(prices))
    model.set_underlying_price("NIFTY", 27_000.0)
    assert np.all(model.prices(np.array(calls)) > prices[2:])


def test_random_walk_moves_and_mean_reverts() -> None:
    model = PriceModel(seed=2, vol_scale=50.0, mean_reversion=0.05)
    model.add_underlying("X", 100.0, AssetClass.EQUITY)
    path = []
    for _ in range(2_000):
        model.step(1.0)
        path.append(model.underlying_price("X"))
    assert np.std(path) > 0.5  # it moves …
    assert 80 < np.mean(path[500:]) < 125  # … around its reference


def test_packets_repeat_a_drawn_slot_consistently_and_snapshot_agrees() -> None:
    model = PriceModel(seed=3, clock=lambda: NOW)
    model.add_underlying("NIFTY", 26_000.0, AssetClass.INDEX)
    slot = model.add(option(7, 26_000, Kind.CALL))
    packets = model.packets(ResponseCode.FULL, np.array([slot, slot, slot]))
    assert len(set(packets.tobytes()[i * 162 : (i + 1) * 162] for i in range(3))) == 1
    [decoded] = decode_frame(packets[:1].tobytes())
    snap = model.snapshot(option(7, 26_000, Kind.CALL).key)
    assert snap is not None
    sent = (decoded.ltp, decoded.volume, decoded.oi)  # type: ignore[union-attr]
    assert sent == (snap["ltp"], snap["volume"], snap["oi"])
    before = snap["volume"]
    model.packets(ResponseCode.QUOTE, np.array([slot]))
    assert model.snapshot(option(7, 26_000, Kind.CALL).key)["volume"] > before  # type: ignore[index]


def test_fallback_price_is_stable_and_plausible() -> None:
    assert fallback_price("ABC") == fallback_price("ABC")
    assert 50 < fallback_price("ABC") < 3_000
    assert 5_000 < fallback_price("SOME INDEX", index=True) < 300_000


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65_535, 65_536, 100_000])
def test_ws_header_is_websockets_own_framing(length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    expected = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert ws_frame(payload) == expected
    assert len(ws_header(length)) == len(expected) - length

"""The volatility read back from the simulator's option prices (rounded to the tick, as it sends them) is
the one it priced them with, within 1e-3: the analytics and the simulator agree on Black-76, the forward,
the discounting and the time to expiry."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tickgate.analytics.black76 import Reason
from tickgate.analytics.chain import SECONDS_PER_YEAR, Legs, analyse
from tickgate.clock import IST
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.sim.pricing import (
    ANNUAL_VOLATILITY,
    CARRY_RATE,
    AssetClass,
    InstrumentSpec,
    Kind,
    PriceModel,
    expiry_timestamp,
)

NOW = dt.datetime(2026, 3, 2, 11, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("days", "spot"), [(1, 24_000.0), (8, 26_000.0), (30, 22_500.0), (120, 25_000.0)])
def test_iv_from_simulator_prices_is_its_volatility(days: int, spot: float) -> None:
    expiry = expiry_timestamp(dt.datetime.fromtimestamp(NOW, IST).date() + dt.timedelta(days=days))
    model = PriceModel(seed=1, clock=lambda: NOW)
    model.add_underlying("NIFTY", spot, AssetClass.INDEX)
    future = model.add(
        InstrumentSpec(
            InstrumentKey(ExchangeSegment.NSE_FNO, 1),
            Kind.FUTURE,
            "NIFTY",
            AssetClass.INDEX,
            expiry_ts=expiry,
        )
    )
    strikes = np.arange(round(spot * 0.9, -2), spot * 1.1, 100.0)
    slots, rows = [], []
    for i, k in enumerate(strikes):
        for kind in (Kind.CALL, Kind.PUT):
            key = InstrumentKey(ExchangeSegment.NSE_FNO, 1_000 + 2 * i + (kind is Kind.PUT))
            slots.append(
                model.add(InstrumentSpec(key, kind, "NIFTY", AssetClass.INDEX, strike=k, expiry_ts=expiry))
            )
            rows.append((k, kind is Kind.CALL))
    prices = model.prices(np.array([future, *slots]))
    ltp = prices[1:]
    k = np.array([r[0] for r in rows])
    none = np.full(k.size, np.nan)
    legs = Legs(k, np.array([r[1] for r in rows]), none, none, ltp, none, none, none)
    years = (expiry - NOW) / SECONDS_PER_YEAR
    a = analyse(legs, years=years, rate=CARRY_RATE, future=float(prices[0]))
    intrinsic = np.where(legs.is_call, np.maximum(a.forward - k, 0), np.maximum(k - a.forward, 0))
    time_value = ltp - np.exp(-CARRY_RATE * years) * intrinsic
    # A hundred ticks of time value at least: the tick rounding is then small against what carries the
    # volatility (a deep in-the-money leg a few ticks over intrinsic carries almost none).
    priced = (a.reason == Reason.OK) & (time_value >= 5.0)
    assert priced.sum() >= 10
    worst = np.max(np.abs(a.iv[priced] - ANNUAL_VOLATILITY[AssetClass.INDEX]))
    assert worst <= 1e-3, worst

"""The analytics engine computes a chain once per change of its legs, at most once per push interval,
however many readers ask; a leg's new price shows after the interval."""

from __future__ import annotations

import datetime as dt

import numpy as np

from pinned import TODAY, frozen
from tickgate.analytics.black76 import price
from tickgate.analytics.engine import AnalyticsEngine
from tickgate.chains.atm import AtmEngine
from tickgate.clock import IST
from tickgate.config import ChainSettings
from tickgate.feed.quotes import QuoteStore, RestQuote
from tickgate.instruments import InstrumentRegistry
from tickgate.schedule.calendar import contract_close

RATE = 0.065


def test_once_per_change_and_at_most_once_per_interval(registry: InstrumentRegistry) -> None:
    clock = frozen(dt.datetime.combine(TODAY, dt.time(11, 0), IST))
    store = QuoteStore(clock=clock)
    atm = AtmEngine(registry, ChainSettings())
    expiry = registry.option_expiries("NIFTY", TODAY)[0]
    window = atm.window("NIFTY", expiry, 11, ltp=24_000.0, today=TODAY)
    engine = AnalyticsEngine(store, clock, rate=RATE, min_interval_s=0.01, future_of=lambda _w: None)
    years = (contract_close(window.expiry.date, "NSE") - clock.now()).total_seconds() / (365 * 86_400)

    def fill(sigma: float) -> None:
        quotes = []
        for row in window.rows:
            for key, call in ((row.ce, True), (row.pe, False)):
                assert key is not None
                p = price(
                    np.array([24_000.0]), np.array([row.strike]), np.array([years]), np.array([sigma]),
                    rate=RATE, is_call=np.array([call]),
                )  # fmt: skip
                quotes.append(RestQuote(key, float(p[0]), oi=1_000))
        quotes.append(RestQuote(window.underlying.key, 23_990.0))
        store.fill(quotes, 0)

    fill(0.15)
    first = engine.of(window)
    assert engine.computed == 1
    assert abs(first.analytics.atm_iv - 0.15) < 1e-6
    for _ in range(100):
        assert engine.of(window) is first  # nothing changed: no work
    assert engine.computed == 1
    fill(0.20)
    assert engine.of(window) is first  # changed, but within the interval: the last result stands
    clock.advance(0.02)
    second = engine.of(window)
    assert engine.computed == 2
    assert second.version > first.version
    assert abs(second.analytics.atm_iv - 0.20) < 1e-3  # the clock moved 20 ms: T is a hair shorter

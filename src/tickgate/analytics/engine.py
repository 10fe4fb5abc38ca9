"""The analytics of the chains tickgate serves, computed once and shared by every reader.

A thin shell around :func:`tickgate.analytics.chain.analyse`: it reads a chain window's legs from the quote
store (one vectorised read), finds the future of the same expiry, measures the time to the expiry's close
on the service's clock, and keeps the result until a leg changes, recomputing a chain at most once per
``min_interval_s`` (the push rate) however many REST callers and push clients read it. Never per request,
never per client.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tickgate.analytics.black76 import Reason, prepare
from tickgate.analytics.chain import SECONDS_PER_YEAR, ChainAnalytics, Legs, analyse
from tickgate.chains.atm import ChainWindow
from tickgate.clock import Clock
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.feed.quotes import QuoteStore
from tickgate.schedule.calendar import contract_close

_CURRENCY = frozenset({ExchangeSegment.NSE_CURRENCY, ExchangeSegment.BSE_CURRENCY})


@dataclass(frozen=True, slots=True)
class Computed:
    analytics: ChainAnalytics
    keys: tuple[InstrumentKey | None, ...]  # per leg, in ``Legs`` order (calls then puts)
    spot: float | None
    computed_at: float  # market monotonic seconds
    version: int  # bumps at each recompute: what renderers cache on


class AnalyticsEngine:
    """Per chain window: the latest :class:`ChainAnalytics` (see the module docstring)."""

    def __init__(
        self,
        quotes: QuoteStore,
        clock: Clock,
        *,
        rate: float,
        min_interval_s: float,
        future_of: Callable[[ChainWindow], InstrumentKey | None],
    ) -> None:
        self._quotes = quotes
        self._clock = clock
        self.rate = rate
        self.min_interval_s = min_interval_s
        self._future_of = future_of
        prepare()
        # window -> (the legs' update stamp, when last looked at, the result)
        self._cache: dict[tuple[str, str, dt.date, tuple[float, ...]], tuple[float, float, Computed]] = {}
        self._versions = 0
        self.computed = 0  # recomputations, over the process's life (metrics)
        self.reused = 0

    def of(self, window: ChainWindow) -> Computed:
        """The window's analytics: cached until one of its legs (or the future) changes, and then
        recomputed at most once per ``min_interval_s``. Within an interval a repeat costs a dict lookup:
        a hundred push clients on one chain read it a hundred times a tick."""
        strikes = tuple(float(r.strike) for r in window.rows)
        cache_key = (window.symbol, window.exchange, window.expiry.date, strikes)
        now = self._clock.monotonic()
        hit = self._cache.get(cache_key)
        if hit is not None and now - hit[1] < self.min_interval_s:
            self.reused += 1
            return hit[2]
        keys: tuple[InstrumentKey | None, ...] = tuple(r.ce for r in window.rows) + tuple(
            r.pe for r in window.rows
        )
        future = self._future_of(window)
        present = [k for k in keys if k is not None]
        cols = self._quotes.option_columns([*present, window.underlying.key, *([future] if future else [])])
        stamp = float(cols["updates"].sum())
        if hit is not None and hit[0] == stamp:  # nothing changed: look again after another interval
            self._cache[cache_key] = (stamp, now, hit[2])
            self.reused += 1
            return hit[2]
        computed = self._compute(window, keys, present, cols, has_future=future is not None, now=now)
        self._cache[cache_key] = (stamp, now, computed)
        if len(self._cache) > 1_024:  # windows nobody reads any more: the oldest go
            for old in list(self._cache)[:256]:
                del self._cache[old]
        return computed

    def _compute(
        self,
        window: ChainWindow,
        keys: tuple[InstrumentKey | None, ...],
        present: list[InstrumentKey],
        cols: dict[str, np.ndarray],
        *,
        has_future: bool,
        now: float,
    ) -> Computed:
        n = len(keys)
        where = np.array([k is not None for k in keys])
        m = len(present)

        def leg(name: str) -> np.ndarray:
            values = np.full(n, np.nan)
            values[where] = cols[name][:m]
            return values

        half = len(window.rows)
        strikes = np.array([float(r.strike) for r in window.rows] * 2)
        legs = Legs(
            strike=strikes,
            is_call=np.arange(n) < half,
            bid=leg("bid"),
            ask=leg("ask"),
            ltp=leg("ltp"),
            oi=leg("oi"),
            prev_oi=leg("prev_oi"),
            volume=leg("volume"),
        )
        spot = cols["ltp"][m]
        future = float(cols["ltp"][m + 1]) if has_future else None
        currency = any(k is not None and k.segment in _CURRENCY for k in keys)
        close = contract_close(window.expiry.date, window.exchange, currency=currency)
        years = (close - self._clock.now()).total_seconds() / SECONDS_PER_YEAR
        analytics = analyse(
            legs,
            years=years,
            rate=self.rate,
            future=future if future is not None and math.isfinite(future) else None,
        )
        if not where.all():  # a strike listed on one side only: its missing leg says so
            analytics.reason[~where] = Reason.NO_PRICE
        self._versions += 1
        self.computed += 1
        return Computed(
            analytics,
            keys,
            None if not math.isfinite(spot) else float(spot),
            now,
            self._versions,
        )

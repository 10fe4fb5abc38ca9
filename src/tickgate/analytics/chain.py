"""One option chain's analytics: per leg IV, Greeks and OI change; per chain ATM IV, PCR, max pain, the
25-delta risk reversal and OI change totals. Pure: arrays and numbers in, a :class:`ChainAnalytics` out.

Choices (``docs/decisions/0006-option-analytics.md``):

* **Price of a leg:** the mid when both bid and ask are live and not crossed; else the last trade. A crossed
  quote (bid above ask) gives NaN with :attr:`Reason.CROSSED`: neither side can be trusted.
* **Forward:** the future of the same expiry when one is listed and priced; else put-call parity on the
  strike where call and put are closest in price (nearest the money): ``F = K + (C - P)·e^{rT}``.
* **Time to expiry:** calendar seconds to the expiry's close (15:30 IST for NSE and BSE, the contract's
  close for MCX) over 365 days of seconds (ACT/365 fixed). Calendar, not trading, time: it is what the
  market's quoted IVs use, and theta per calendar day then means what a desk expects over a weekend.
* **Delta** in the 25-delta risk reversal is Black-76's (discounted) delta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tickgate.analytics.black76 import Array, Greeks, Reason, greeks, implied_vol

SECONDS_PER_YEAR = 365.0 * 86_400.0


@dataclass(frozen=True, slots=True)
class Legs:
    """A chain's legs, one row each (NaN where unknown)."""

    strike: Array
    is_call: NDArray[np.bool_]
    bid: Array
    ask: Array
    ltp: Array
    oi: Array
    prev_oi: Array  # yesterday's OI (code 6 or the REST backfill); NaN when unknown
    volume: Array


@dataclass(frozen=True, slots=True)
class ChainAnalytics:
    forward: float
    forward_source: str  # "future" | "parity" | "none"
    years: float  # time to expiry
    iv: Array
    reason: NDArray[np.uint8]
    greeks: Greeks
    oi_change: Array
    atm_strike: float
    atm_iv: float
    pcr_oi: float
    pcr_volume: float
    max_pain: float
    max_pain_strikes: int  # how many strikes max pain was computed over (those whose OI is known)
    risk_reversal_25d: float
    oi_change_calls: float
    oi_change_puts: float


def premium_of(legs: Legs) -> tuple[Array, NDArray[np.bool_]]:
    """Each leg's price (mid, else last) and whether its quote is crossed."""
    live = (legs.bid > 0) & (legs.ask > 0)
    crossed = live & (legs.bid > legs.ask)
    mid = 0.5 * (legs.bid + legs.ask)
    return np.where(live & ~crossed, mid, legs.ltp), crossed


def forward_of(
    strike: Array,
    is_call: NDArray[np.bool_],
    premium: Array,
    *,
    years: float,
    rate: float,
    future: float | None,
) -> tuple[float, str]:
    """The forward of the expiry: the future's price, else put-call parity nearest the money."""
    if future is not None and future > 0:
        return float(future), "future"
    priced = premium > 0
    calls, puts = priced & is_call, priced & ~is_call
    # The strikes priced on both sides (a chain lists each strike once a side), ascending: the first of the
    # smallest gaps is the lowest such strike, whatever order the legs came in.
    both, at_call, at_put = np.intersect1d(strike[calls], strike[puts], return_indices=True)
    if not both.size or not years > 0:
        return float("nan"), "none"
    call, put = premium[calls][at_call], premium[puts][at_put]
    i = int(np.argmin(np.abs(call - put)))
    return float(both[i] + (call[i] - put[i]) * np.exp(rate * years)), "parity"


def analyse(legs: Legs, *, years: float, rate: float, future: float | None = None) -> ChainAnalytics:
    """Everything for one chain at one instant (see the module docstring)."""
    n = legs.strike.shape[0]
    premium, crossed = premium_of(legs)
    forward, source = forward_of(legs.strike, legs.is_call, premium, years=years, rate=rate, future=future)
    t = np.full(n, years)
    fwd = np.full(n, forward)
    iv, reason = implied_vol(premium, fwd, legs.strike, t, rate=rate, is_call=legs.is_call)
    if not np.isfinite(forward):
        reason[:] = Reason.NO_UNDERLYING
        iv[:] = np.nan
    reason[crossed] = Reason.CROSSED
    iv[crossed] = np.nan
    g = greeks(fwd, legs.strike, t, iv, rate=rate, is_call=legs.is_call)
    with np.errstate(invalid="ignore"):
        oi_change = legs.oi - legs.prev_oi
    atm_strike, atm_iv = _atm(legs, iv, forward)
    calls, puts = legs.is_call, ~legs.is_call
    pain, covered = max_pain(legs.strike, legs.is_call, legs.oi)
    return ChainAnalytics(
        forward=forward,
        forward_source=source,
        years=years,
        iv=iv,
        reason=reason,
        greeks=g,
        oi_change=oi_change,
        atm_strike=atm_strike,
        atm_iv=atm_iv,
        pcr_oi=_ratio(np.nansum(legs.oi[puts]), np.nansum(legs.oi[calls])),
        pcr_volume=_ratio(np.nansum(legs.volume[puts]), np.nansum(legs.volume[calls])),
        max_pain=pain,
        max_pain_strikes=covered,
        risk_reversal_25d=_risk_reversal(iv, g.delta, legs.is_call),
        oi_change_calls=_sum_known(oi_change[calls]),
        oi_change_puts=_sum_known(oi_change[puts]),
    )


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _sum_known(values: Array) -> float:
    known = values[np.isfinite(values)]
    return float(known.sum()) if known.size else float("nan")


def _atm(legs: Legs, iv: Array, forward: float) -> tuple[float, float]:
    """The strike nearest the forward and its IV (the mean of call and put where both are defined)."""
    if not np.isfinite(forward) or legs.strike.size == 0:
        return float("nan"), float("nan")
    strikes = np.unique(legs.strike)
    k = float(strikes[np.argmin(np.abs(strikes - forward))])
    at = (legs.strike == k) & np.isfinite(iv)
    return k, float(iv[at].mean()) if at.any() else float("nan")


def max_pain(strike: Array, is_call: NDArray[np.bool_], oi: Array) -> tuple[float, int]:
    """The settlement price, among the strikes whose OI is known, at which option buyers get the least:
    ``argmin_S Σ calls OI·max(S-K, 0) + Σ puts OI·max(K-S, 0)``. Returns it and how many strikes it covers."""
    known = np.isfinite(oi)
    if not known.any():
        return float("nan"), 0
    k, c, q = strike[known], is_call[known], oi[known]
    candidates = np.unique(k)
    payout = np.where(
        c[None, :],
        q[None, :] * np.maximum(candidates[:, None] - k[None, :], 0.0),
        q[None, :] * np.maximum(k[None, :] - candidates[:, None], 0.0),
    ).sum(axis=1)
    return float(candidates[np.argmin(payout)]), int(candidates.size)


def _risk_reversal(iv: Array, delta: Array, is_call: NDArray[np.bool_]) -> float:
    """IV of the 25-delta call minus that of the 25-delta put, each interpolated linearly in delta."""
    call = _iv_at_delta(iv[is_call], delta[is_call], 0.25)
    put = _iv_at_delta(iv[~is_call], delta[~is_call], -0.25)
    return call - put


def _iv_at_delta(iv: Array, delta: Array, target: float) -> float:
    ok = np.isfinite(iv) & np.isfinite(delta)
    if ok.sum() < 2:
        return float("nan")
    d, v = delta[ok], iv[ok]
    order = np.argsort(d)
    d, v = d[order], v[order]
    if not d[0] <= target <= d[-1]:
        return float("nan")
    return float(np.interp(target, d, v))

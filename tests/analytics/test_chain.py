"""One chain's analytics from its legs: the forward by parity, IVs back to the volatility the prices were
made with, ATM, PCR, max pain (against a brute force), the risk reversal's sign, and bad quotes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickgate.analytics.black76 import Reason, price
from tickgate.analytics.chain import Legs, analyse, forward_of, max_pain

RATE = 0.065
FORWARD = 24_113.0
YEARS = 9 / 365


def chain(vol: float | np.ndarray = 0.14, spread: float = 0.0, oi_seed: int = 0) -> Legs:
    strikes = np.arange(23_000.0, 25_250.0, 50.0)
    k = np.concatenate([strikes, strikes])
    call = np.concatenate([np.ones(strikes.size, bool), np.zeros(strikes.size, bool)])
    sigma = np.broadcast_to(vol, k.shape) if np.ndim(vol) == 0 else np.asarray(vol)
    fair = price(np.full(k.size, FORWARD), k, np.full(k.size, YEARS), sigma, rate=RATE, is_call=call)
    rng = np.random.default_rng(oi_seed)
    oi = rng.integers(1_000, 50_000, k.size).astype(float)
    return Legs(
        strike=k,
        is_call=call,
        bid=fair - spread,
        ask=fair + spread,
        ltp=fair,
        oi=oi,
        prev_oi=oi - rng.integers(-500, 500, k.size),
        volume=rng.integers(0, 9_000, k.size).astype(float),
    )


def test_a_flat_smile_comes_back_flat_on_the_parity_forward() -> None:
    legs = chain()
    a = analyse(legs, years=YEARS, rate=RATE)
    assert a.forward_source == "parity"
    assert a.forward == pytest.approx(FORWARD, abs=1e-6)
    ok = a.reason == Reason.OK
    assert ok.sum() > 0.9 * ok.size
    assert np.allclose(a.iv[ok], 0.14, atol=1e-6)
    assert a.atm_strike == 24_100.0
    assert a.atm_iv == pytest.approx(0.14, abs=1e-6)
    assert a.risk_reversal_25d == pytest.approx(0.0, abs=1e-6)
    puts, calls = ~legs.is_call, legs.is_call
    assert a.pcr_oi == pytest.approx(legs.oi[puts].sum() / legs.oi[calls].sum())
    assert a.pcr_volume == pytest.approx(legs.volume[puts].sum() / legs.volume[calls].sum())
    assert a.oi_change_calls == pytest.approx((legs.oi - legs.prev_oi)[calls].sum())


def test_the_future_is_the_forward_when_listed() -> None:
    a = analyse(chain(), years=YEARS, rate=RATE, future=FORWARD + 3.0)
    assert (a.forward_source, a.forward) == ("future", FORWARD + 3.0)


def test_a_put_skew_shows_in_the_risk_reversal() -> None:
    legs = chain()
    skew = 0.14 - 0.4 * np.log(legs.strike / FORWARD)  # puts (low strikes) dearer, as on NIFTY
    a = analyse(chain(skew), years=YEARS, rate=RATE)
    assert a.risk_reversal_25d < -0.005
    ok = a.reason == Reason.OK
    assert np.allclose(a.iv[ok], skew[ok], atol=1e-6)


def test_the_mid_is_used_when_both_sides_are_live() -> None:
    a = analyse(chain(spread=0.5), years=YEARS, rate=RATE)
    ok = a.reason == Reason.OK
    assert np.allclose(a.iv[ok], 0.14, atol=1e-6)  # the mid is the fair price here


def test_bad_quotes_give_nan_with_reasons() -> None:
    legs = chain()
    crossed = Legs(**{**{f: getattr(legs, f) for f in Legs.__slots__}, "bid": legs.ask + 1.0})
    a = analyse(crossed, years=YEARS, rate=RATE, future=FORWARD)
    assert (a.reason == Reason.CROSSED).all()
    assert np.isnan(a.iv).all()
    assert np.isnan(a.greeks.delta).all()
    nothing = Legs(**{**{f: getattr(legs, f) for f in Legs.__slots__}, "ltp": np.zeros(legs.strike.size)})
    nothing = Legs(**{**{f: getattr(nothing, f) for f in Legs.__slots__}, "bid": np.zeros(legs.strike.size)})
    b = analyse(nothing, years=YEARS, rate=RATE)
    assert b.forward_source == "none"
    assert (b.reason == Reason.NO_UNDERLYING).all()
    expired = analyse(legs, years=0.0, rate=RATE, future=FORWARD)
    assert (expired.reason == Reason.EXPIRED).all()
    assert np.isnan(expired.atm_iv)


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.booleans(), st.one_of(st.none(), st.integers(0, 10_000))),
        min_size=1,
        max_size=30,
    )
)
def test_max_pain_is_the_cheapest_settlement_for_option_writers(
    rows: list[tuple[int, bool, int | None]],
) -> None:
    strike = np.array([100.0 + 10 * r[0] for r in rows])
    call = np.array([r[1] for r in rows])
    oi = np.array([np.nan if r[2] is None else float(r[2]) for r in rows])
    pain, covered = max_pain(strike, call, oi)
    known = ~np.isnan(oi)
    candidates = sorted(set(strike[known]))
    assert covered == len(candidates)
    if not candidates:
        assert np.isnan(pain)
        return

    def payout(s: float) -> float:
        return sum(
            q * (max(s - k, 0.0) if c else max(k - s, 0.0))
            for k, c, q in zip(strike[known], call[known], oi[known], strict=True)
        )

    best = min(payout(s) for s in candidates)
    assert pain in candidates
    assert payout(pain) == pytest.approx(best)


@given(
    strikes=st.lists(st.integers(1, 40), min_size=1, max_size=30, unique=True),
    prices=st.lists(st.one_of(st.floats(0.05, 500.0), st.just(0.0), st.just(float("nan"))), min_size=60),
    calls_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_parity_forward_is_taken_at_the_strike_where_call_and_put_are_closest(
    strikes: list[int], prices: list[float], calls_first: bool, seed: int
) -> None:
    """Against the plain reading of the rule, in any order of legs, with legs unpriced on either side."""
    k = np.array([s * 50.0 for s in strikes] * 2)
    is_call = np.arange(k.size) < len(strikes)
    if not calls_first:
        is_call = ~is_call
    premium = np.array(prices[: k.size])
    order = np.random.default_rng(seed).permutation(k.size)
    k, is_call, premium = k[order], is_call[order], premium[order]
    calls = {float(s): p for s, p, c in zip(k, premium, is_call, strict=True) if c and p > 0}
    puts = {float(s): p for s, p, c in zip(k, premium, is_call, strict=True) if not c and p > 0}
    pairs = sorted((abs(calls[s] - puts[s]), s) for s in calls.keys() & puts.keys())
    forward, source = forward_of(k, is_call, premium, years=YEARS, rate=RATE, future=None)
    if not pairs:
        assert (source, np.isnan(forward)) == ("none", True)
    else:
        s = pairs[0][1]
        assert source == "parity"
        assert forward == pytest.approx(s + (calls[s] - puts[s]) * np.exp(RATE * YEARS), rel=1e-12)

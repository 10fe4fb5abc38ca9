"""Black-76 on arrays against the reference, Jäckel's "Let's be rational" (``vollib``): implied volatility
to 1e-6 and the Greeks to 1e-6 relative on a grid of over 10,000 cases; bad inputs give NaN and a reason,
never an exception and never a number."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from vollib.black import black as ref_price
from vollib.black.greeks import analytical as ref_greeks
from vollib.black.implied_volatility import implied_volatility as ref_iv

from tickgate.analytics.black76 import Reason, _solve, _table_start, greeks, implied_vol, price

RATE = 0.065
FORWARD = 24_000.0
MIN_TIME_VALUE = 1e-4  # a hundredth of a paisa: below it a "price" is rounding, not a quote


def grid() -> tuple[np.ndarray, ...]:
    """Moneyness 0.6-1.4, one day to a year, 5%-120% volatility, calls and puts: 21,600 cases."""
    rows = [
        (FORWARD * m, t / 365, s, c)
        for m in np.linspace(0.6, 1.4, 30)
        for t in (1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90, 120, 180, 250, 365)
        for s in np.linspace(0.05, 1.2, 24)
        for c in (True, False)
    ]
    k, t, s, c = (np.array(col) for col in zip(*rows, strict=True))
    return np.full(len(rows), FORWARD), k, t, s, c.astype(bool)


@pytest.fixture(scope="module")
def cases() -> dict[str, np.ndarray]:
    f, k, t, s, c = grid()
    flags = np.where(c, "c", "p")
    premium = np.array(
        [ref_price(fl, fi, ki, ti, RATE, si) for fl, fi, ki, ti, si in zip(flags, f, k, t, s, strict=True)]
    )
    reference = []
    for fl, fi, ki, ti, pi in zip(flags, f, k, t, premium, strict=True):
        try:
            reference.append(ref_iv(pi, fi, ki, RATE, ti, fl))
        except Exception:  # the reference refuses (below intrinsic after rounding, say): undefined
            reference.append(np.nan)
    return {"f": f, "k": k, "t": t, "s": s, "c": c, "flags": flags, "p": premium, "iv": np.array(reference)}


def test_implied_volatility_matches_lets_be_rational(cases: dict[str, np.ndarray]) -> None:
    f, k, t, c, p = cases["f"], cases["k"], cases["t"], cases["c"], cases["p"]
    iv, reason = implied_vol(p, f, k, t, rate=RATE, is_call=c)
    time_value = p * np.exp(RATE * t) - np.where(c, np.maximum(f - k, 0), np.maximum(k - f, 0))
    defined = np.isfinite(cases["iv"]) & (time_value >= MIN_TIME_VALUE)
    assert defined.sum() >= 10_000
    assert not np.isnan(iv[defined]).any(), "NaN where the reference has a volatility"
    worst = np.max(np.abs(iv[defined] - cases["iv"][defined]))
    assert worst <= 1e-6, worst
    # Where it is not defined, NaN with a reason, never a number
    assert np.all(np.isnan(iv[reason != Reason.OK]))


def test_greeks_match_the_reference(cases: dict[str, np.ndarray]) -> None:
    f, k, t, s, c = cases["f"], cases["k"], cases["t"], cases["s"], cases["c"]
    take = np.arange(0, f.size, 2)  # every other case: 10,800 legs, each Greek
    g = greeks(f[take], k[take], t[take], s[take], rate=RATE, is_call=c[take])
    for name, ours in zip(("delta", "gamma", "theta", "vega"), g, strict=True):
        fn = getattr(ref_greeks, name)
        ref = np.array(
            [fn(fl, fi, ki, ti, RATE, si) for fl, fi, ki, ti, si in zip(
                cases["flags"][take], f[take], k[take], t[take], s[take], strict=True
            )]
        )  # fmt: skip
        scale = np.maximum(np.abs(ref), 1e-9)  # relative, with a floor where the Greek is zero
        worst = np.max(np.abs(ours - ref) / scale)
        assert worst <= 1e-6, (name, worst)


def test_prices_match_the_reference(cases: dict[str, np.ndarray]) -> None:
    f, k, t, s, c = cases["f"], cases["k"], cases["t"], cases["s"], cases["c"]
    ours = price(f, k, t, s, rate=RATE, is_call=c)
    assert np.max(np.abs(ours - cases["p"]) / np.maximum(cases["p"], 1e-6)) <= 1e-9


def test_bad_inputs_give_nan_and_a_reason_never_an_exception() -> None:
    f = np.array([24_000.0, 24_000, 24_000, 24_000, 24_000, np.nan, 0.0, 24_000, 24_000, 24_000])
    k = np.array([24_000.0, 24_000, 22_000, 24_000, 24_000, 24_000, 24_000, 24_000, 26_000, 2_000])
    t = np.array([0.05, 0.05, 0.05, 0.0, -0.01, 0.05, 0.05, 0.05, 0.05, 0.05])
    at_intrinsic = 22_000.0 * np.exp(-RATE * 0.05)
    p = np.array([0.0, -5.0, 1_000.0, 300.0, 300.0, 300.0, 300.0, 30_000.0, np.nan, at_intrinsic])
    c = np.array([True, True, True, True, True, True, True, True, False, True])
    iv, reason = implied_vol(p, f, k, t, rate=RATE, is_call=c)
    assert np.isnan(iv).all()
    assert list(reason) == [
        Reason.NO_PRICE,
        Reason.NO_PRICE,
        Reason.BELOW_INTRINSIC,  # a 22,000 call on a 24,000 forward for 1,000
        Reason.EXPIRED,
        Reason.EXPIRED,
        Reason.NO_UNDERLYING,
        Reason.NO_UNDERLYING,
        Reason.ABOVE_MAX,  # a call dearer than its forward
        Reason.NO_PRICE,
        Reason.NO_TIME_VALUE,  # 22,000 deep: a time value lost in rounding
    ]


@given(
    m=st.floats(0.8, 1.25),
    days=st.floats(0.5, 365),
    sigma=st.floats(0.03, 2.0),
    call=st.booleans(),
)
def test_a_volatility_survives_the_round_trip(m: float, days: float, sigma: float, call: bool) -> None:
    f, k, t = np.array([FORWARD]), np.array([FORWARD * m]), np.array([days / 365])
    c = np.array([call])
    p = price(f, k, t, np.array([sigma]), rate=RATE, is_call=c)
    iv, reason = implied_vol(p, f, k, t, rate=RATE, is_call=c)
    if reason[0] == Reason.OK:
        assert iv[0] == pytest.approx(sigma, abs=1e-6)
    else:  # only where the time value is too small to carry a volatility
        assert reason[0] in (Reason.NO_TIME_VALUE, Reason.NO_PRICE)
        tv = p[0] * np.exp(RATE * t[0]) - max((f[0] - k[0]) if call else (k[0] - f[0]), 0.0)
        assert tv < 1e-3


def test_the_solver_starts_near_the_answer_so_one_step_lands() -> None:
    """The tabulated start is what makes a book of legs take one Halley step, not three: across the ``σ√T``
    and moneyness a listing has, it lands within 1e-2 of the answer everywhere and within 1e-4 for most,
    and a badly placed table node would show here as a start far off."""
    rng = np.random.default_rng(18)
    a = rng.uniform(0.0, 1.5, 50_000)
    s = np.exp(rng.uniform(np.log(1e-4), np.log(4.0), 50_000))
    x = -a  # the out-of-the-money call's side; the put's is its mirror
    beta = price(np.exp(x / 2), np.exp(-x / 2), np.ones_like(a), s, rate=0.0, is_call=np.ones(a.size, bool))
    priced = beta > 1e-300
    start = _table_start(a[priced], np.log(beta[priced]))
    error = np.abs(start / s[priced] - 1)
    assert np.max(error) < 2e-2
    assert np.median(error) < 1e-4
    assert np.allclose(_solve(x[priced], beta[priced], np.ones(int(priced.sum()))), s[priced], rtol=1e-9)

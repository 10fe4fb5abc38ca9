"""Black-76 on arrays: prices, Greeks and implied volatility for a whole book of legs in one pass.

Pure functions over numpy arrays (no I/O, no clock: the caller passes the time to expiry). Black-76 prices
an option on the *forward* of its expiry, which is what Indian index and stock options settle against
in effect (the future of the same expiry, or the forward implied by put-call parity).

Why our own and not a library: the reference, Jäckel's "Let's be rational" (``vollib``), is a scalar
Python loop, about a thousand times too slow for 25,000 legs at the push rate; the one compiled Black-76
array library on PyPI (``opengreeks``) does not import on Python 3.11. Both were measured
(``bench/analytics.py``; ``docs/decisions/0006-option-analytics.md``). The implied volatility here is a
Halley iteration on the logarithm of the *normalised out-of-the-money* price (Jäckel's
normalisation: ``x = ln(F/K)``, ``s = σ√T``, price over ``√(FK)``), vectorised, from a tabulated start
close enough that most legs converge in one step, and with every leg stopped as soon as it has converged;
it agrees with Jäckel's to 1e-6 in volatility on the accuracy grid of the suite.

Bad inputs never raise and never give a number: every output is NaN where :data:`Reason` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from functools import cache
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

Array = NDArray[np.float64]

_SQRT_2PI = np.sqrt(2.0 * np.pi)
_MAX_ITERATIONS = 60
_S_MAX = 12.0  # σ√T above this prices every option at its bound: no volatility is recoverable there


class Reason(IntEnum):
    """Why a leg's analytics are NaN (0: they are not)."""

    OK = 0
    NO_PRICE = 1  # no price, or zero or negative
    CROSSED = 2  # bid above ask: neither side can be trusted
    BELOW_INTRINSIC = 3  # cheaper than exercising it: no volatility gives that price
    EXPIRED = 4  # at or past its expiry's close
    NO_UNDERLYING = 5  # no forward (no future, no pair to imply it from)
    ABOVE_MAX = 6  # dearer than the forward (call) or the strike (put): no volatility gives that price
    NO_CONVERGENCE = 7  # the solver did not settle (not seen on the accuracy grid)
    NO_TIME_VALUE = 8  # deep in the money: its time value is lost in the price's rounding


class Greeks(NamedTuple):
    delta: Array  # per unit of the forward
    gamma: Array  # per unit of the forward, per unit
    theta: Array  # per calendar day (price change over one day, /365)
    vega: Array  # per volatility point (price change for +0.01 of σ)


def _pdf(z: Array) -> Array:
    return np.asarray(np.exp(-0.5 * z * z) / _SQRT_2PI, dtype=np.float64)


def price(
    forward: Array, strike: Array, t: Array, sigma: Array, *, rate: float, is_call: NDArray[np.bool_]
) -> Array:
    """Black-76 prices (discounted at ``rate``, continuously compounded, over ``t`` years)."""
    root = sigma * np.sqrt(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(forward / strike) + 0.5 * root * root) / root
    d2 = d1 - root
    df = np.exp(-rate * t)
    call = forward * ndtr(d1) - strike * ndtr(d2)
    put = strike * ndtr(-d2) - forward * ndtr(-d1)
    return np.asarray(df * np.where(is_call, call, put), dtype=np.float64)


def greeks(
    forward: Array, strike: Array, t: Array, sigma: Array, *, rate: float, is_call: NDArray[np.bool_]
) -> Greeks:
    """Delta, gamma, theta per day and vega per volatility point (the conventions of ``vollib``).

    Written for few passes over the arrays: a put's delta and value come from the call's by parity."""
    sqrt_t = np.sqrt(t)
    root = sigma * sqrt_t
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = np.log(forward / strike) / root + 0.5 * root
        d2 = d1 - root
        df = np.exp(-rate * t)
        n1, n2 = ndtr(d1), ndtr(d2)
        weighted = df * _pdf(d1)
        put = ~is_call
        delta = df * (n1 - put)
        gamma = weighted / (forward * root)
        value = forward * n1 - strike * n2 - put * (forward - strike)
        theta = (rate * df * value - forward * weighted * sigma / (2.0 * sqrt_t)) / 365.0
        vega = forward * weighted * sqrt_t * 0.01
    return Greeks(delta, gamma, theta, vega)


def _normalised_otm(x: Array, s: Array, theta: Array) -> tuple[Array, Array]:
    """Jäckel's normalised Black price ``b(x, s)`` of the out-of-the-money side ``theta`` (+1 call, -1 put)
    and its derivative in ``s``."""
    h = x / s
    half = 0.5 * s
    ex = np.exp(0.5 * x)
    b = theta * (ex * ndtr(theta * (h + half)) - ndtr(theta * (h - half)) / ex)
    return b, ex * _pdf(h + half)


def implied_vol(
    premium: Array, forward: Array, strike: Array, t: Array, *, rate: float, is_call: NDArray[np.bool_]
) -> tuple[Array, NDArray[np.uint8]]:
    """Implied volatilities of ``premium`` (discounted option prices), and why each NaN is one.

    Every input is checked first (see :class:`Reason`); the rest are solved together."""
    premium = np.asarray(premium, dtype=np.float64)
    n = premium.shape[0]
    out = np.full(n, np.nan)
    reason = np.zeros(n, dtype=np.uint8)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        undiscounted = premium * np.exp(rate * t)
        intrinsic = np.where(is_call, np.maximum(forward - strike, 0.0), np.maximum(strike - forward, 0.0))
        ceiling = np.where(is_call, forward, strike)
    reason[~(undiscounted <= ceiling)] = Reason.ABOVE_MAX
    reason[undiscounted < intrinsic * (1 - 1e-12)] = Reason.BELOW_INTRINSIC
    reason[~(t > 0)] = Reason.EXPIRED
    reason[~(forward > 0) | ~(strike > 0)] = Reason.NO_UNDERLYING
    reason[~(premium > 0)] = Reason.NO_PRICE
    todo = np.flatnonzero(reason == Reason.OK)
    if todo.size == 0:
        return out, reason
    f, k, tt = forward[todo], strike[todo], t[todo]
    x = np.log(f / k)
    # The out-of-the-money option with the same strike costs the time value (put-call parity).
    time_value = undiscounted[todo] - intrinsic[todo]
    theta = np.where(x > 0, -1.0, 1.0)
    beta = time_value / np.sqrt(f * k)
    # A time value below a billionth of the forward is rounding, not a price (a real quote moves by ticks
    # of 0.05): no volatility can be read from it.
    lost = ~(time_value > 1e-9 * f)
    s = _solve(x, np.where(lost, np.nan, beta), theta)
    sigma = s / np.sqrt(tt)
    bad = ~np.isfinite(sigma)
    out[todo] = np.where(bad, np.nan, sigma)
    reason[todo[bad]] = Reason.NO_CONVERGENCE
    reason[todo[lost]] = Reason.NO_TIME_VALUE
    return out, reason


# The start of the solver: ``ln s`` tabulated over ``(ln(1 + |x|/s₀), ln s₀)``, where ``s₀`` is the cheap
# start below. Near the money ``b/s`` depends on ``|x|/s`` alone, so that ratio (compressed, as deep out of
# the money it runs to about 37) is the coordinate that keeps the table smooth; ``ln s₀`` spans every
# ``σ√T`` a listed option has. Bilinear interpolation then starts most legs within 1e-4 of the answer, so
# that one Halley step lands and the next confirms, where the cheap start alone took three or four.
_TABLE_V_MAX = 40.0
_TABLE_ROWS = 300
_TABLE_LOG_S = (float(np.log(1e-5)), float(np.log(10.0)))
_TABLE_COLUMNS = 400


def _cheap_start(a: Array, log_beta: Array) -> Array:
    """Right at the money (``b ≈ s/√(2π)``) and asymptotically right far from it (``ln b ≈ -x²/(2s²)``)."""
    return np.asarray(
        np.maximum(np.exp(log_beta) * _SQRT_2PI, a / np.sqrt(np.maximum(-2.0 * log_beta, 1e-300))),
        dtype=np.float64,
    )


@cache
def _start_table() -> Array:
    """``ln s`` at each node, solved from the cheap start once per process (a few tens of milliseconds).

    At a node, ``s₀`` and ``v = |x|/s₀`` fix ``|x|`` and the price: ``s₀`` is the larger of two increasing
    functions of ``b``, so ``b`` is the smaller of their inverses."""
    v = np.expm1(np.linspace(0.0, np.log1p(_TABLE_V_MAX), _TABLE_ROWS))
    log_s0 = np.linspace(*_TABLE_LOG_S, _TABLE_COLUMNS)
    rows, columns = np.meshgrid(v, np.exp(log_s0), indexing="ij")
    a = rows * columns
    beta = np.minimum(columns / _SQRT_2PI, np.exp(-0.5 * rows * rows))
    beta[beta >= np.exp(-0.5 * a)] = np.nan  # dearer than its bound: no volatility gives that price
    with np.errstate(divide="ignore", invalid="ignore"):
        s = _iterate(-a.ravel(), beta.ravel(), np.ones(a.size), start=_cheap_start).reshape(a.shape)
    # Nodes priced above their bound have no volatility: the largest ``s`` the solver tries stands in.
    return np.log(np.where(np.isfinite(s), s, _S_MAX)).ravel()


def prepare() -> None:
    """Build the solver's start table now, so that the first chain's analytics do not pay for it on the
    event loop."""
    _start_table()


def _table_start(a: Array, log_beta: Array) -> Array:
    s0 = _cheap_start(a, log_beta)
    table = _start_table()
    fi = np.clip(np.log1p(a / s0) * ((_TABLE_ROWS - 1) / np.log1p(_TABLE_V_MAX)), 0.0, _TABLE_ROWS - 1.000001)
    low, high = _TABLE_LOG_S
    fj = np.clip((np.log(s0) - low) * ((_TABLE_COLUMNS - 1) / (high - low)), 0.0, _TABLE_COLUMNS - 1.000001)
    i = fi.astype(np.intp)
    j = fj.astype(np.intp)
    wi = fi - i
    wj = fj - j
    node = i * _TABLE_COLUMNS + j
    near = table[node]
    near = near + (table[node + 1] - near) * wj
    far = table[node + _TABLE_COLUMNS]
    far = far + (table[node + _TABLE_COLUMNS + 1] - far) * wj
    return np.asarray(np.exp(near + (far - near) * wi), dtype=np.float64)


def _solve(x: Array, beta: Array, theta: Array) -> Array:
    """σ√T with ``b(x, s) = beta``, from the tabulated start."""
    return _iterate(x, beta, theta, start=_table_start)


def _iterate(x: Array, beta: Array, theta: Array, *, start: Callable[[Array, Array], Array]) -> Array:
    """Halley's method on ``ln b(s)`` (smooth, nearly linear in ``s`` for small prices) from ``start``. A leg
    stops once its step is below 1e-4 of ``s`` (Halley's method is cubic: that step leaves an error of the
    order of 1e-12). A step that leaves ``s > 0`` halves or doubles ``s`` instead, and never counts as the
    last."""
    s = np.full(x.shape, np.nan)
    active = np.flatnonzero(beta > 0)
    log_beta = np.log(beta)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        s[active] = np.clip(start(np.abs(x[active]), log_beta[active]), 1e-8, _S_MAX * 0.5)
        for _ in range(_MAX_ITERATIONS):
            if active.size == 0:
                break
            sa, xa, ta = s[active], x[active], theta[active]
            h = xa / sa
            d1 = h + 0.5 * sa
            d2 = h - 0.5 * sa
            ex = np.exp(0.5 * xa)
            b = ta * (ex * ndtr(ta * d1) - ndtr(ta * d2) / ex)
            db = ex * _pdf(d1)
            f = np.log(b) - log_beta[active]
            f1 = db / b
            f2 = db * d1 * d2 / (sa * b) - f1 * f1
            step = f / f1 / (1.0 - f * f2 / (2.0 * f1 * f1))
            nxt = sa - step
            lost = ~(nxt > 0) | ~np.isfinite(nxt) | (nxt > _S_MAX)
            nxt = np.where(lost, np.where(f < 0, np.minimum(sa * 2.0, _S_MAX), sa * 0.5), nxt)
            s[active] = nxt
            done = ~lost & (np.abs(step) <= 1e-4 * nxt)
            active = active[~done]
    if active.size:
        s[active] = np.nan
    return np.asarray(s, dtype=np.float64)

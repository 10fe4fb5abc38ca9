"""Option analytics benchmark: IV + Greeks for 25,000 legs in one pass, against the candidates, same run.

Legs like a full account's: NIFTY-like forwards, strikes ±25 % around them, one day to a year, smiles from
8 % to 80 %, calls and puts, priced by Black-76. Each candidate computes IV and delta, gamma, theta, vega:

* tickgate's own (``tickgate.analytics.black76``): numpy over the whole book, one core;
* ``vollib`` (Jäckel's "Let's be rational", the accuracy reference): a scalar Python loop, timed on a slice
  and scaled to 25,000;
* ``opengreeks`` (Rust core, Black-76 arrays): timed when it imports (its 0.2 wheel needs Python 3.12).

Run: ``python bench/analytics.py``. Target (issue 18): IV + Greeks for 25,000 legs ≤ 10 ms on one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, machine, print_table, save_results
from tickgate.analytics.black76 import Reason, greeks, implied_vol, price

RATE = 0.065
TARGET_MS = 10.0


def book(n: int, seed: int = 18) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = rng.uniform(20_000, 60_000, n)
    k = np.round(f * rng.uniform(0.75, 1.25, n), -1)
    t = rng.uniform(1, 365, n) / 365
    s = rng.uniform(0.08, 0.8, n)
    c = rng.random(n) < 0.5
    return {"f": f, "k": k, "t": t, "s": s, "c": c, "p": price(f, k, t, s, rate=RATE, is_call=c)}


def ours(b: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    iv, reason = implied_vol(b["p"], b["f"], b["k"], b["t"], rate=RATE, is_call=b["c"])
    g = greeks(b["f"], b["k"], b["t"], iv, rate=RATE, is_call=b["c"])
    return iv, g.delta + reason


def vollib_loop(b: dict[str, np.ndarray], n: int) -> None:
    from vollib.black.greeks import analytical as g
    from vollib.black.implied_volatility import implied_volatility

    for i in range(n):
        flag = "c" if b["c"][i] else "p"
        f, k, t, p = float(b["f"][i]), float(b["k"][i]), float(b["t"][i]), float(b["p"][i])
        try:
            iv = implied_volatility(p, f, k, RATE, t, flag)
        except Exception:  # below intrinsic after rounding: the reference refuses
            continue
        g.delta(flag, f, k, t, RATE, iv)
        g.gamma(flag, f, k, t, RATE, iv)
        g.theta(flag, f, k, t, RATE, iv)
        g.vega(flag, f, k, t, RATE, iv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--legs", type=int, default=25_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--vollib-legs", type=int, default=2_000, help="legs the scalar reference is timed on"
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    b = book(args.legs)
    iv, _ = ours(b)
    ok = np.isfinite(iv)
    assert np.max(np.abs(iv[ok] - b["s"][ok])) < 1e-6, "tickgate's IV is off on the bench's own book"

    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        ours(b)
        times.append(time.perf_counter() - start)
    ours_ms = float(np.median(times)) * 1000
    ours_best = min(times) * 1000

    start = time.perf_counter()
    vollib_loop(b, args.vollib_legs)
    vollib_ms = (time.perf_counter() - start) * 1000 * args.legs / args.vollib_legs

    try:
        import opengreeks.black76 as og  # noqa: F401

        og_note = "imports; not timed by this version of the bench"
    except Exception as exc:  # the 0.2 wheel needs Python 3.12's C API
        og_note = f"does not import here ({type(exc).__name__}: {str(exc)[:60]})"

    met = ours_ms <= TARGET_MS
    rows = [
        (
            "tickgate.analytics (numpy, one core)",
            f"{ours_ms:.2f} ms",
            f"best {ours_best:.2f} ms",
            f"<= {TARGET_MS:.0f} ms",
            "met" if met else "MISSED",
        ),
        (
            f"vollib / Let's be rational (scalar, {args.vollib_legs:,} legs scaled)",
            f"{vollib_ms:,.0f} ms",
            f"{vollib_ms / ours_ms:,.0f}x slower",
            "",
            "",
        ),
        ("opengreeks 0.2 (Rust, arrays)", og_note, "", "", ""),
    ]
    unsolved = int((~ok).sum())
    print_table(
        f"IV + delta, gamma, theta, vega for {args.legs:,} legs (median of {args.runs}); {machine()}",
        ["candidate", "time", "vs", "target", "met"],
        rows,
    )
    names, counts = np.unique(_reasons(b), return_counts=True)
    print(f"legs without an IV: {unsolved:,}; reasons: {dict(zip(names, counts, strict=True))}")
    save_results(
        "analytics",
        [
            Figure(
                f"IV + Greeks, {args.legs:,} legs, one core",
                f"{ours_ms:.2f} ms",
                f"<= {TARGET_MS:.0f} ms",
                met,
                f"vollib {vollib_ms:,.0f} ms (scaled from {args.vollib_legs:,})",
            )
        ],
        notes=[f"opengreeks: {og_note}"],
    )


def _reasons(b: dict[str, np.ndarray]) -> list[str]:
    _iv, reason = implied_vol(b["p"], b["f"], b["k"], b["t"], rate=RATE, is_call=b["c"])
    return [Reason(r).name for r in reason]


if __name__ == "__main__":
    main()

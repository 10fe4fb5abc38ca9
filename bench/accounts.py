"""Several accounts benchmark (issue 19): the planner at 100,000 keys on 4 accounts, and the feed on 3
accounts (15 sockets) against the simulator in its own process.

Planner (pure, one thread, under the running service's GC policy: what exists before is frozen, as the
service freezes its registry and plan once started, see tickgate.service.runtime): a full plan of
100,000 keys from empty (Tier B scaled to 4 accounts, each index one family, then Tier A chains of 50);
one account lost at capacity (its 5 sockets in one re-plan: chains move while the others have room, then
Tier A is suspended, least recently used first); 10,000 random operations at capacity (add p99).
Same-run baseline: the same fill of 25,000 on one account, so the per-key cost of pooling is visible.

Feed: cold start to 75,000 subscribed on 15 sockets (registry load included), then offered rates
(stacked 10 packets a frame, and 1 a frame): decoded packets/s, worst event-loop stall, tick→store p99.
Same-run baseline: the same cold start and rates on one account (25,000 on 5 sockets).
Run: ``python bench/accounts.py``. Targets: full plan ≤ 200 ms; account loss ≤ 100 ms; add p99 ≤ 0.5 ms;
cold start 75,000 ≤ 4 s; ≥ 400,000 packets/s on 15 sockets with no loop stall ≥ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest
import planner as planner_bench
from _common import Figure, machine, print_table, save_results
from tickgate.config import FeedLimits
from tickgate.dhan.protocol import FeedMode
from tickgate.planner import Tier
from tickgate.service.runtime import RuntimePolicy

MS = 1e6
ACCOUNTS = 4
RATES = [(1, 150_000), (10, 400_000), (10, 500_000)]


def planner_figures(args: argparse.Namespace) -> tuple[dict[str, float], list[list[object]]]:
    limits = FeedLimits()
    ids = planner_bench.Ids(100_000 + args.ops * planner_bench.CHAIN_A + 2_000)
    base = [planner_bench.fill(ids, limits, 1)[1] for _ in range(args.repeat)]
    fills = [planner_bench.fill(ids, limits, ACCOUNTS) for _ in range(args.repeat)]
    p, _, _, _, a_groups = fills[-1]
    fill_ms = statistics.median(f[1] for f in fills) / MS
    base_ms = statistics.median(base) / MS
    del fills

    # An account lost at capacity, then back (a different account each repeat).
    down_ms: list[float] = []
    up_ms: list[float] = []
    suspended = 0
    for rep in range(args.repeat):
        account = rep % ACCOUNTS
        t0 = time.perf_counter_ns()
        result = p.account_down(account, reason=807)
        down_ms.append((time.perf_counter_ns() - t0) / MS)
        suspended = len(result.suspended)
        assert all(ref.tier is Tier.A for ref in result.suspended), "Tier B suspended"
        t0 = time.perf_counter_ns()
        p.connections_up(p.account_connections(account))
        up_ms.append((time.perf_counter_ns() - t0) / MS)
        assert not p.suspended()
        p.drain_events()

    # Random operations at 100,000: adds evict the least recently used.
    rng = random.Random(args.seed)
    live = list(a_groups)
    adds: list[int] = []
    now = 1e6
    for i in range(args.ops):
        now += 1.0
        if rng.random() < 0.6 or len(live) < 10:
            gid = f"A:x{i}"
            keys = ids.take(planner_bench.CHAIN_A)
            t0 = time.perf_counter_ns()
            res = p.add_group(gid, Tier.A, keys, FeedMode.FULL, f"u{i % 40}", now)
            adds.append(time.perf_counter_ns() - t0)
            assert res.accepted
            gone = {r.group for r in res.evicted}
            live = [g for g in live if g not in gone] if gone else live
            live.append(gid)
        else:
            gid = live.pop(rng.randrange(len(live)))
            p.remove_group(gid, now)
        if i % 256 == 0:
            p.drain_events()
    add_p99 = planner_bench.pct(adds, 0.99) / MS
    rows: list[list[object]] = [
        [
            "full plan from empty, 100,000 keys on 4 accounts",
            f"{fill_ms:.1f} ms",
            f"{base_ms:.1f} ms (25,000, 1)",
            "≤ 200 ms",
        ],
        [
            f"an account lost at capacity ({suspended} chains suspended)",
            f"{statistics.median(down_ms):.1f} ms",
            "—",
            "≤ 100 ms",
        ],
        ["the account back (its chains resumed)", f"{statistics.median(up_ms):.1f} ms", "—", "—"],
        [f"add a 50-key chain at 100,000, p99 of {len(adds):,}", f"{add_p99:.3f} ms", "—", "≤ 0.5 ms"],
    ]
    return {
        "fill": fill_ms,
        "base": base_ms,
        "down": statistics.median(down_ms),
        "add_p99": add_p99,
        "adds": len(adds),
    }, rows


async def feed_figures(args: argparse.Namespace) -> dict[str, object]:
    def ns(accounts: int, instruments: int) -> argparse.Namespace:
        return argparse.Namespace(
            instruments=instruments,
            accounts=accounts,
            rates=None,
            stacks=None,
            plan=RATES,
            window=args.window,
            warmup=args.warmup,
        )

    one = ns(1, 25_000)
    three = ns(3, 75_000)
    base_rows, base_cold, _ = await ingest.measure(one)
    rows, cold, registry_s = await ingest.measure(three)
    ingest.print_rows(one, base_rows)
    ingest.print_rows(three, rows)
    return {
        "rows": rows,
        "cold": cold,
        "registry": registry_s,
        "base_rows": base_rows,
        "base_cold": base_cold,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ops", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--no-feed", action="store_true", help="the planner part only")
    args = ap.parse_args()

    policy = RuntimePolicy()  # as a running service: the heap built so far frozen, survivors of full GCs too
    policy.install()
    try:
        plan, rows = planner_figures(args)
    finally:
        policy.uninstall()
    print(f"Several accounts — {machine()}")
    print_table(
        "Planner, 4 accounts × 5 sockets × 5,000",
        ["phase", "measured", "baseline (same run)", "target"],
        rows,
    )
    figures = [
        Figure(
            "full plan of 100,000 keys (4 accounts, median)",
            f"{plan['fill']:.1f} ms",
            "≤ 200 ms",
            plan["fill"] <= 200,
            baseline=f"25,000 on 1 account {plan['base']:.1f} ms",
        ),
        Figure(
            "losing an account at capacity, re-plan (median)",
            f"{plan['down']:.1f} ms",
            "≤ 100 ms",
            plan["down"] <= 100,
        ),
        Figure(
            f"add p99 at 100,000 ({plan['adds']:,} adds, LRU evictions)",
            f"{plan['add_p99']:.3f} ms",
            "≤ 0.5 ms",
            plan["add_p99"] <= 0.5,
        ),
    ]
    if not args.no_feed:
        feed = asyncio.run(feed_figures(args))
        rows3 = feed["rows"]
        ok = [r for r in rows3 if r[8]]  # type: ignore[attr-defined]
        best = max((r[1] for r in ok), default=0)
        stall = max((r[5] for r in ok), default=float("nan"))
        base_ok = [r for r in feed["base_rows"] if r[8]]  # type: ignore[attr-defined]
        base_best = max((r[1] for r in base_ok), default=0)
        cold = float(feed["cold"])  # type: ignore[arg-type]
        figures += [
            Figure(
                "cold start to 75,000 subscribed on the simulator (3 accounts, registry load included)",
                f"{cold:.2f} s",
                "≤ 4 s",
                cold <= 4,
                baseline=f"25,000 on 1 account {float(feed['base_cold']):.2f} s",  # type: ignore[arg-type]
            ),
            Figure(
                "sustained ingest on 15 sockets (highest offered rate kept up with)",
                f"{best:,.0f} packets/s, worst loop stall {stall:.1f} ms",
                "≥ 400,000 packets/s, stall < 50 ms",
                best >= 400_000 and stall < 50,
                baseline=f"5 sockets {base_best:,.0f} packets/s",
            ),
        ]
    save_results("accounts", figures)


if __name__ == "__main__":
    main()

"""Backfill benchmark: a `tickgate serve` process fills 25,000 instruments from the simulator's REST market
quote (another process, Dhan's limits: 1,000 instruments a request, one request a second) while the desk uses
it; the baseline is the same restart, same run, without the REST side.

1. Fill a server to capacity with watchlist adds (Tier B + ~350 chains), without the REST side; stop it and
   start it again with the REST side (a morning's start, or a restart): the time to all 25,000 restored legs
   backfilled (``/admin/stats`` backfill ``startup_filled_s``, counted from the backfill's start, which is
   before ready), and from ready to the whole queue drained, the adds' chains included, down to the trickle
   recentring keeps feeding it.
2. From ready on, while the backfill runs: option-chain GET latency (closed loop, one client), watchlist-add
   latency at capacity, and push tick→client latency (10 clients, simulator at 20,000 packets/s).
3. The same-run baseline is the same restart and the same sequence without the REST side (run first), so
   both sides include what a restart does anyway (resubscribing, recentring on the first prices).

Run: ``python bench/backfill.py``. Targets (issue 16): 25,000 filled ≤ 30 s; the feed and push latency
(a tick from the simulator to a push client) during the backfill within 20% (or 2 ms) of a restart without
it. The API's latency during the backfill is measured and reported beside the same baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, machine, print_table, save_results, start_simulator
from api import (
    ADMIN_KEY,
    OUT,
    LeanHttp,
    fill_and_time_adds,
    free_port,
    push_fanout,
    start_server,
    stock_chains,
    wait_ready,
)
from tickgate.instruments import InstrumentRegistry, generate_master

TRICKLE = 200  # legs: about two chains' recentring between two requests


async def get_latencies(base: str, path: str, seconds: float) -> list[float]:
    """Closed-loop GETs (one client) for ``seconds``: the latency a screen's poll sees, in ms."""
    out: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=10) as http:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            r = await http.get(path)
            r.raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.02)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


async def backfill_state(http: httpx.AsyncClient) -> dict[str, Any]:
    stats = (await http.get("/api/v2/admin/stats")).json()
    return stats.get("backfill") or {}


async def run(args: argparse.Namespace) -> None:
    OUT.mkdir(exist_ok=True)
    master = OUT / "master-bench.csv"
    if not master.exists():
        generate_master(master, fmt="detailed", seed=0)
    chains = stock_chains(InstrumentRegistry.load(master))
    gc.collect()
    gc.freeze()
    data_dir = Path(tempfile.mkdtemp(prefix="tickgate-bench-backfill-"))
    sim, sim_url, control = start_simulator(master, 2_000)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rest = httpx.get(f"{control}/state", params={"subs": 0, "history": 0}, timeout=10).json()["rest_url"]
    filler = start_server(master, sim_url, data_dir, port)  # no REST side: the fill is not what is timed
    try:
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as http:
            await wait_ready(http)
            lean = LeanHttp("127.0.0.1", port, {"X-API-Key": ADMIN_KEY})
            filling = await fill_and_time_adds(lean, chains, 1)  # until the first eviction: full
            await lean.close()
    finally:
        filler.terminate()
        filler.wait(30)
    chain_path = "/api/v2/option-chain/NIFTY?strikes=101"
    added = filling["adds"]

    async def restart(rest_url: str | None) -> dict[str, Any]:
        """Start the server on the filled database and take the desk's measurements from ready on: the
        same sequence with and without the REST side, so both include the restart's own settling."""
        nonlocal added
        server = start_server(master, sim_url, data_dir, port, rest_url=rest_url)
        out: dict[str, Any] = {}
        try:
            async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as http:
                await wait_ready(http)
                ready = time.perf_counter()
                lean = LeanHttp("127.0.0.1", port, {"X-API-Key": ADMIN_KEY})
                try:
                    target = int((await backfill_state(http)).get("wanted", 0))  # every restored leg
                    out["chain"] = await get_latencies(base, chain_path, args.seconds)
                    out["adds"] = await fill_and_time_adds(lean, chains, args.adds, first=added)
                    added = int(out["adds"]["adds"])
                    nifty = (
                        await http.post("/api/v2/watchlist", json={"symbol": "NIFTY", "strikes": 51})
                    ).json()
                    out["push"] = await push_fanout(
                        f"ws://127.0.0.1:{port}/api/v2/stream",
                        nifty["entry"]["id"],
                        args.clients,
                        args.push_seconds,
                        lambda: http.get(f"{control}/rate", params={"pps": args.push_rate, "stack": 1}),
                        args.clients,
                    )
                    if rest_url is None:
                        return out
                    state = await backfill_state(http)
                    out["asked"], out["target"] = int(state["instruments"]), target
                    # The start-up's plan (every restored leg) answered, by the server's own count from the
                    # backfill's start (before ready); then the whole queue, the adds' chains and the
                    # recentring's legs included, down to the trickle recentring keeps subscribing.
                    while state.get("startup_filled_s") is None or int(state["pending"]) > TRICKLE:
                        if time.perf_counter() - ready > 120:
                            raise TimeoutError(f"backfill never finished: {state}")
                        await asyncio.sleep(0.2)
                        state = await backfill_state(http)
                    out["drained_s"] = time.perf_counter() - ready
                    out["filled_s"] = float(state["startup_filled_s"])
                    out["startup_wanted"] = int(state["startup_wanted"])
                    out["request_ms"] = (state["request_ms_last"], state["request_ms_max"])
                    out["rest"] = httpx.get(
                        f"{control}/state", params={"subs": 0, "history": 0}, timeout=10
                    ).json()["rest"]
                finally:
                    await lean.close()
        finally:
            server.terminate()
            server.wait(10)
        return out

    try:
        after = await restart(None)  # the same-run baseline: a restart without the REST side
        during = await restart(rest)
    finally:
        sim.terminate()
        sim.wait(10)
    filled_s, rest_stats = during["filled_s"], during["rest"]

    d_chain, a_chain = during["chain"], after["chain"]
    d_add, a_add = during["adds"], after["adds"]
    d_push, a_push = during["push"], after["push"]
    filled_ok = filled_s <= 30.0

    def close(a: float, b: float) -> bool:
        return a <= b * 1.2 or a - b <= 2.0

    push_ok = close(d_push["p99"], a_push["p99"])
    rows = [
        [
            f"start → the {during['startup_wanted']:,} restored legs backfilled",
            f"{filled_s:.1f} s ({rest_stats['answered']} requests, {rest_stats['max_per_second']}/s at most,"
            f" {rest_stats['rate_limited']} × 429)",
            "—",
            "≤ 30 s",
            "met" if filled_ok else "MISSED",
        ],
        [
            "GET option-chain NIFTY (101 strikes), p50 / p99",
            f"{pct(d_chain, 50):.1f} / {pct(d_chain, 99):.1f} ms",
            f"{pct(a_chain, 50):.1f} / {pct(a_chain, 99):.1f} ms",
            "(information)",
            "",
        ],
        [
            "POST /watchlist at capacity, p50 / p99",
            f"{d_add['p50']:.1f} / {d_add['p99']:.1f} ms",
            f"{a_add['p50']:.1f} / {a_add['p99']:.1f} ms",
            "(information)",
            "",
        ],
        [
            f"feed → push client (tick sent to received), {args.clients} clients, p50 / p99",
            f"{d_push['p50']:.1f} / {d_push['p99']:.1f} ms",
            f"{a_push['p50']:.1f} / {a_push['p99']:.1f} ms",
            "p99 within 20% or 2 ms",
            "met" if push_ok else "MISSED",
        ],
    ]
    print_table(
        f"Backfill — {machine()}",
        ["figure", "restart with backfill", "restart without (baseline)", "target", "met"],
        rows,
    )
    save_results(
        "backfill",
        [
            Figure(
                f"start → the {during['startup_wanted']:,} restored legs backfilled",
                f"{filled_s:.1f} s",
                "≤ 30 s",
                filled_ok,
            ),
            Figure(
                "GET option-chain p99 during the backfill",
                f"{pct(d_chain, 99):.1f} ms",
                "(information)",
                None,
                f"without: {pct(a_chain, 99):.1f} ms",
            ),
            Figure(
                "feed → push client p99 during the backfill",
                f"{d_push['p99']:.1f} ms",
                "within 20% or 2 ms of a restart without",
                push_ok,
                f"without: {a_push['p99']:.1f} ms",
            ),
        ],
        notes=[
            f"median chain GET during {statistics.median(d_chain):.1f} ms",
            f"asked for {during['asked']:,} of the {during['target']:,} legs by the end of the measurements",
            "a REST request, sent to answered (which paces the next): last {:.0f} ms, max {:.0f} ms".format(
                *during["request_ms"]
            ),
            f"ready → the whole queue drained (the adds' chains and recentring included): "
            f"{during['drained_s']:.1f} s",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instruments", type=int, default=25_000)
    parser.add_argument("--adds", type=int, default=50, help="adds at capacity timed in each phase")
    parser.add_argument("--seconds", type=float, default=4.0, help="chain GET sampling per phase")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--push-seconds", type=float, default=8.0)
    parser.add_argument("--push-rate", type=int, default=20_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

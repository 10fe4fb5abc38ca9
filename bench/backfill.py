"""Backfill benchmark: a `tickgate serve` process fills 25,000 instruments from the simulator's REST market
quote (another process, Dhan's limits: 1,000 instruments a request, one request a second) while the desk uses
it, against the same server, same run, once the backfill is done.

1. Fill a server to capacity with watchlist adds (Tier B + ~350 chains), without the REST side; stop it and
   start it again with the REST side (a morning's start, or a restart): time from ready to all 25,000
   restored legs backfilled (``/admin/stats`` backfill: as many asked as were wanted at start, only the
   recentring trickle pending).
2. While the backfill runs: option-chain GET latency (closed loop, one client) and watchlist-add latency at
   capacity; then the same after it finished (the same-run baseline).
3. Push tick→client latency during the backfill and after it (10 clients, simulator at 20,000 packets/s).

Run: ``python bench/backfill.py``. Targets (issue 16): 25,000 filled ≤ 30 s; API and push latency during
the backfill within 20% (or 2 ms) of the latency after it.
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
    server = start_server(master, sim_url, data_dir, port, rest_url=rest)
    chain_path = "/api/v2/option-chain/NIFTY?strikes=101"
    during: dict[str, Any] = {}
    after: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as http:
            await wait_ready(http)
            ready = time.perf_counter()
            lean = LeanHttp("127.0.0.1", port, {"X-API-Key": ADMIN_KEY})
            try:
                target = int((await backfill_state(http))["wanted"])  # every restored leg
                during["chain"] = await get_latencies(base, chain_path, args.seconds)
                during["adds"] = await fill_and_time_adds(lean, chains, args.adds, first=filling["adds"])
                nifty = (await http.post("/api/v2/watchlist", json={"symbol": "NIFTY", "strikes": 51})).json()
                chain_id = nifty["entry"]["id"]

                async def push() -> dict[str, Any]:
                    return await push_fanout(
                        f"ws://127.0.0.1:{port}/api/v2/stream",
                        chain_id,
                        args.clients,
                        args.push_seconds,
                        lambda: http.get(f"{control}/rate", params={"pps": args.push_rate, "stack": 1}),
                        args.clients,
                    )

                during["push"] = await push()
                state = await backfill_state(http)
                during["asked"], during["target"] = int(state["instruments"]), target
                # Done when the start-up backlog is cleared: as many legs asked for as were subscribed at the
                # end of the fill, and no more pending than the trickle recentring keeps subscribing (users'
                # chains, asked first).
                while int(state["instruments"]) < target or int(state["pending"]) > TRICKLE:
                    if time.perf_counter() - ready > 120:
                        raise TimeoutError(f"backfill never finished: {state}")
                    await asyncio.sleep(0.2)
                    state = await backfill_state(http)
                filled_s = time.perf_counter() - ready
                after["backfill"] = state
                await lean.close()  # idle while waiting: the server has closed the keep-alive connection
                lean = LeanHttp("127.0.0.1", port, {"X-API-Key": ADMIN_KEY})
                after["adds"] = await fill_and_time_adds(
                    lean, chains, args.adds, first=int(during["adds"]["adds"])
                )
                after["chain"] = await get_latencies(base, chain_path, args.seconds)
                after["push"] = await push()
                rest_stats = httpx.get(
                    f"{control}/state", params={"subs": 0, "history": 0}, timeout=10
                ).json()["rest"]
            finally:
                await lean.close()
    finally:
        server.terminate()
        sim.terminate()
        server.wait(10)
        sim.wait(10)

    d_chain, a_chain = during["chain"], after["chain"]
    d_add, a_add = during["adds"], after["adds"]
    d_push, a_push = during["push"], after["push"]
    filled_ok = filled_s <= 30.0

    def close(a: float, b: float) -> bool:
        return a <= b * 1.2 or a - b <= 2.0

    chain_ok = close(pct(d_chain, 99), pct(a_chain, 99))
    push_ok = close(d_push["p99"], a_push["p99"])
    rows = [
        [
            f"ready → {args.instruments:,} instruments backfilled",
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
            "p99 within 20% or 2 ms",
            "met" if chain_ok else "MISSED",
        ],
        [
            "POST /watchlist at capacity, p50 / p99",
            f"{d_add['p50']:.1f} / {d_add['p99']:.1f} ms",
            f"{a_add['p50']:.1f} / {a_add['p99']:.1f} ms",
            "(information)",
            "",
        ],
        [
            f"push tick→client, {args.clients} clients, p50 / p99",
            f"{d_push['p50']:.1f} / {d_push['p99']:.1f} ms",
            f"{a_push['p50']:.1f} / {a_push['p99']:.1f} ms",
            "p99 within 20% or 2 ms",
            "met" if push_ok else "MISSED",
        ],
    ]
    print_table(
        f"Backfill — {machine()}",
        ["figure", "during the backfill", "after it (baseline)", "target", "met"],
        rows,
    )
    save_results(
        "backfill",
        [
            Figure(
                f"ready → {args.instruments:,} instruments backfilled",
                f"{filled_s:.1f} s",
                "≤ 30 s",
                filled_ok,
            ),
            Figure(
                "GET option-chain p99 during the backfill",
                f"{pct(d_chain, 99):.1f} ms",
                "within 20% or 2 ms of after",
                chain_ok,
                f"after: {pct(a_chain, 99):.1f} ms",
            ),
            Figure(
                "push tick→client p99 during the backfill",
                f"{d_push['p99']:.1f} ms",
                "within 20% or 2 ms of after",
                push_ok,
                f"after: {a_push['p99']:.1f} ms",
            ),
        ],
        notes=[
            f"median chain GET during {statistics.median(d_chain):.1f} ms",
            f"asked for {during['asked']:,} of the {during['target']:,} legs by the end of the measurements",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instruments", type=int, default=25_000)
    parser.add_argument("--adds", type=int, default=50, help="adds at capacity timed in each phase")
    parser.add_argument("--seconds", type=float, default=4.0, help="chain GET sampling per phase")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--push-seconds", type=float, default=4.0)
    parser.add_argument("--push-rate", type=int, default=20_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

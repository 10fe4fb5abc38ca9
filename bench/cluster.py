"""The broker hop (issue 20): what a replica's quotes cost over NATS, against the gateway's own store.

The simulator (its own process, send time stamped into each quote) streams 25,000 instruments at 50,000
packets/s to a gateway in this process (the feed manager, its quote store, the bus publisher); 1, 2 and 4
replica processes follow it (:class:`tickgate.bus.follower.QuoteFollower`: snapshot, then deltas). Same run,
same ticks: tick→store latency in the gateway (the in-process bus: what the push channel reads today) and
tick→store in each replica (after the hop), and each replica's CPU per delivered message.
Run: ``python bench/cluster.py``. Target: the hop adds ≤ 5 ms at p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest
from _common import Figure, machine, print_table, save_results, start_simulator
from tickgate.bus.publisher import TickPublisher
from tickgate.config import FeedClientSettings, Settings
from tickgate.dhan.client import Credentials
from tickgate.dhan.protocol import FeedMode
from tickgate.feed import FeedManager
from tickgate.instruments import InstrumentRegistry, generate_master
from tickgate.planner import Planner, Tier
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN

NATS = "nats://127.0.0.1:4222"


def replica(prefix: str, seconds: float, warmup: float, ready: Any, out: Any) -> None:
    asyncio.run(_replica(prefix, seconds, warmup, ready, out))


async def _replica(prefix: str, seconds: float, warmup: float, ready: Any, out: Any) -> None:
    from tickgate.bus.follower import QuoteFollower
    from tickgate.feed.quotes import QuoteStore

    probe = ingest.LatencyProbe()
    store = QuoteStore()
    follower = QuoteFollower(store, NATS, prefix=prefix, on_batch=probe, snapshot_timeout_s=60.0)
    await follower.start()
    ready.set()
    await asyncio.sleep(warmup)
    probe.take()
    probe.enabled = True
    applied0, cpu0 = follower.applied, time.process_time()
    await asyncio.sleep(seconds)
    probe.enabled = False
    lat = probe.take()
    out.put(
        {
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "messages": follower.applied - applied0,
            "cpu_s": time.process_time() - cpu0,
            "snapshots": follower.snapshots,
            "gaps": follower.gaps,
        }
    )
    await follower.stop()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    ingest.OUT.mkdir(exist_ok=True)
    master = ingest.OUT / "master-bench.csv"
    if not master.exists():
        generate_master(master, fmt="detailed", seed=0)
    proc, url, control = start_simulator(master, 0)
    http = httpx.AsyncClient(timeout=10)
    rows: list[dict[str, Any]] = []
    try:
        registry = InstrumentRegistry.load(master)
        settings = Settings(feed=FeedClientSettings(ping_interval_s=10, ping_timeout_s=20))
        planner = Planner(settings.limits)
        for i, keys in enumerate(ingest.pick_keys(registry, args.instruments)):
            planner.add_group(f"B{i}", Tier.B, keys, FeedMode.QUOTE, owner="bench", now=0.0)
        probe = ingest.LatencyProbe()
        manager = FeedManager(
            settings, planner, lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN), url=url, on_batch=probe
        )
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        publisher = TickPublisher(manager.store, NATS, prefix=prefix)
        await publisher.start()
        manager.on_applied = publisher.frames
        await manager.start()
        await manager.wait_until(manager.all_up, 20)
        await http.get(f"{control}/rate", params={"pps": args.rate, "stack": 1})
        ctx = mp.get_context("spawn")
        for n in args.replicas:
            out = ctx.Queue()
            readies = [ctx.Event() for _ in range(n)]
            procs = [
                ctx.Process(target=replica, args=(prefix, args.seconds, args.warmup, r, out)) for r in readies
            ]
            for p in procs:
                p.start()
            for r in readies:
                r.wait(60)
            await asyncio.sleep(args.warmup)
            probe.take()
            probe.enabled = True
            await asyncio.sleep(args.seconds)
            probe.enabled = False
            own = probe.take()
            results = [out.get(timeout=60) for _ in procs]
            for p in procs:
                p.join(20)
            gw_p99 = float(np.percentile(own, 99)) if len(own) else float("nan")
            rows.append(
                {
                    "replicas": n,
                    "gateway_p50": float(np.percentile(own, 50)) if len(own) else float("nan"),
                    "gateway_p99": gw_p99,
                    "replica_p50": max(r["p50"] for r in results),
                    "replica_p99": max(r["p99"] for r in results),
                    "cpu_us_per_message": 1e6
                    * sum(r["cpu_s"] for r in results)
                    / max(1, sum(r["messages"] for r in results)),
                    "messages_per_s": sum(r["messages"] for r in results) / n / args.seconds,
                    "gaps": sum(r["gaps"] for r in results),
                }
            )
            print(json.dumps(rows[-1]))
        await http.get(f"{control}/rate", params={"pps": 0})
        await manager.stop()
        await publisher.stop()
    finally:
        await http.aclose()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--instruments", type=int, default=25_000)
    ap.add_argument("--rate", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    args = ap.parse_args()
    rows = asyncio.run(run(args))
    print_table(
        f"Broker hop: {args.instruments:,} instruments at {args.rate:,} packets/s, gateway → NATS → replicas"
        f" — {machine()}",
        [
            "replicas",
            "gateway tick→store p50 / p99",
            "replica tick→store p50 / p99",
            "hop p99",
            "replica CPU µs per message",
            "messages/s per replica",
            "gaps",
        ],
        [
            [
                r["replicas"],
                f"{r['gateway_p50']:.1f} / {r['gateway_p99']:.1f} ms",
                f"{r['replica_p50']:.1f} / {r['replica_p99']:.1f} ms",
                f"{r['replica_p99'] - r['gateway_p99']:+.1f} ms",
                f"{r['cpu_us_per_message']:.0f}",
                f"{r['messages_per_s']:,.0f}",
                r["gaps"],
            ]
            for r in rows
        ],
    )
    hop = max(r["replica_p99"] - r["gateway_p99"] for r in rows)
    scaling = "; ".join(f"{r['replicas']}: {r['cpu_us_per_message']:.0f} µs" for r in rows)
    save_results(
        "cluster",
        [
            Figure(
                "added p99 of the broker hop (tick→replica store vs tick→gateway store, worst replica count)",
                f"{hop:+.1f} ms",
                "≤ 5 ms",
                hop <= 5,
                baseline="the gateway's own store in the same run, "
                + " / ".join(f"{r['gateway_p99']:.1f}" for r in rows)
                + " ms p99",
            ),
            Figure("replica CPU per delivered message, by replicas", scaling),
        ],
    )


if __name__ == "__main__":
    main()

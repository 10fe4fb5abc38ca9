"""The split mode (issue 20), same run, on this machine: the broker hop, push through a replica, failover.

1. **The hop.** The simulator (its own process, send time stamped into each quote) streams 25,000
   instruments at 50,000 packets/s to a gateway in this process (the feed manager, its quote store, the
   bus publisher); 1, 2 and 4 replica processes follow it (:class:`tickgate.bus.follower.QuoteFollower`:
   snapshot, then deltas). Tick→store in the gateway (the in-process bus: what `tickgate serve`'s push
   reads) against tick→store in each replica (after the hop), and each replica's CPU per delivered message.
2. **Push through a replica.** `tickgate serve` (the baseline: in-process bus), then `tickgate gateway` and
   `tickgate api` processes on PostgreSQL and NATS: 100 WebSocket clients on a NIFTY chain of the replica
   while the feed runs at 50,000 packets/s; tick→client p50/p99, each against the other, same run.
3. **Failover.** Two `tickgate gateway` processes; kill -9 of the active one; the time until the simulator
   carries the plan again on the standby's sockets.

Run: ``python bench/cluster.py``. Targets: push p99 through the broker ≤ 50 ms; the hop adds ≤ 5 ms at p99;
failover ≤ 10 s; CPU per message printed as a scaling table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest
from _common import Figure, machine, print_table, save_results, start_simulator
from api import ADMIN_KEY, free_port, push_fanout, start_server, wait_ready
from tickgate.bus.publisher import TickPublisher
from tickgate.config import FeedClientSettings, Settings
from tickgate.dhan.client import Credentials
from tickgate.dhan.protocol import FeedMode
from tickgate.feed import FeedManager
from tickgate.instruments import InstrumentRegistry, generate_master
from tickgate.planner import Planner, Tier
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN

NATS = "nats://127.0.0.1:4222"
PG = os.environ.get("TICKGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def split_env(master: Path, sim_url: str, data_dir: Path, schema: str, prefix: str) -> dict[str, str]:
    """One split-mode deployment's environment: its own PostgreSQL schema and broker subjects."""
    return {
        **os.environ,
        "DHAN_CLIENT_ID": DEFAULT_CLIENT_ID,
        "DHAN_ACCESS_TOKEN": DEFAULT_TOKEN,
        "TICKGATE_FEED_URL": sim_url,
        "TICKGATE_INSTRUMENTS": str(master),
        "TICKGATE_DATA_DIR": str(data_dir),
        "TICKGATE_DB_URL": PG,
        "TICKGATE_STORE__PG_SCHEMA": schema,
        "TICKGATE_BUS_URL": NATS,
        "TICKGATE_BUS_PREFIX": prefix,
        "TICKGATE_ADMIN_KEY": ADMIN_KEY,
        "TICKGATE_GATEWAY_LEASE_TTL_S": "2",
    }


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tickgate", *args, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


async def pg_schema(create: bool, name: str) -> None:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    conn = await asyncpg.connect(make_url(PG).set(drivername="postgresql").render_as_string(False))
    try:
        sql = f'CREATE SCHEMA "{name}"' if create else f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
        await conn.execute(sql)
    finally:
        await conn.close()


async def push_rounds(master: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Push tick→client through `tickgate serve` (baseline), then through a `tickgate api` replica."""
    sim, sim_url, control = start_simulator(master, 2_000)
    out: dict[str, Any] = {}
    schema = f"tgbench_{uuid.uuid4().hex[:10]}"
    await pg_schema(True, schema)
    try:
        for mode in ("serve", "replica"):
            data_dir = Path(tempfile.mkdtemp(prefix=f"tickgate-bench-cluster-{mode}-"))
            port = free_port()
            if mode == "serve":
                procs = [start_server(master, sim_url, data_dir, port)]
            else:
                env = split_env(master, sim_url, data_dir, schema, f"bench{uuid.uuid4().hex[:6]}.")
                procs = [spawn(env, "gateway"), spawn({**env, "TICKGATE_PORT": str(port)}, "api")]
            try:
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": ADMIN_KEY}, timeout=30
                ) as http:
                    await wait_ready(http, 120)
                    added = await http.post("/api/v2/watchlist", json={"symbol": "NIFTY", "strikes": 101})
                    added.raise_for_status()
                    await asyncio.sleep(2.0)  # the replica's plan digest and the chain's first quotes
                    out[mode] = await push_fanout(
                        f"ws://127.0.0.1:{port}/api/v2/stream",
                        added.json()["entry"]["id"],
                        args.clients,
                        args.push_seconds,
                        lambda: http.get(f"{control}/rate", params={"pps": args.rate, "stack": 1}),
                        min(10, args.clients),
                    )
                    await http.get(f"{control}/rate", params={"pps": 2_000})
                    print(mode, json.dumps(out[mode]))
            finally:
                stop(*procs)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(10)
        await pg_schema(False, schema)
    return out


async def failover_round(master: Path) -> tuple[float, int]:
    """Seconds from kill -9 of the active gateway to the plan carried again at the simulator, and the
    plan's size (the default Tier B)."""
    sim, sim_url, control = start_simulator(master, 2_000)
    schema = f"tgbench_{uuid.uuid4().hex[:10]}"
    await pg_schema(True, schema)
    data_dir = Path(tempfile.mkdtemp(prefix="tickgate-bench-failover-"))
    env = split_env(master, sim_url, data_dir, schema, f"bench{uuid.uuid4().hex[:6]}.")
    first = spawn({**env, "TICKGATE_DATA_DIR": str(data_dir / "a")}, "gateway")
    second: subprocess.Popen[bytes] | None = None
    http = httpx.AsyncClient(timeout=10)

    async def carried() -> set[str]:
        view = (await http.get(f"{control}/view")).json()["view"]
        return {k for keys in view.values() for k in keys}

    try:
        deadline = time.monotonic() + 120
        plan: set[str] = set()
        while not plan or len(plan) != len(await carried()):  # the Tier B plan, placed and settled for 3 s
            assert time.monotonic() < deadline, "the first gateway never streamed"
            plan = await carried()
            await asyncio.sleep(3.0)
        second = spawn({**env, "TICKGATE_DATA_DIR": str(data_dir / "b")}, "gateway")
        await asyncio.sleep(15.0)  # the standby loads its registry and waits on the lease
        killed = time.monotonic()
        first.kill()
        while len(await carried()) >= len(plan):  # the simulator sees the dead gateway's sockets close
            assert time.monotonic() - killed < 10, "the killed gateway's sockets stayed open"
            await asyncio.sleep(0.01)
        while len(await carried()) < len(plan):  # as many keys (a window may have recentred meanwhile)
            assert time.monotonic() - killed < 60, "the standby never restored the plan"
            await asyncio.sleep(0.05)
        return time.monotonic() - killed, len(plan)
    finally:
        await http.aclose()
        stop(first, *([second] if second else []))
        sim.send_signal(signal.SIGTERM)
        sim.wait(10)
        await pg_schema(False, schema)


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
            for r in readies:  # waited off the loop: the gateway on it must answer their snapshot requests
                if not await asyncio.to_thread(r.wait, 60):
                    raise TimeoutError(f"a replica had no snapshot in 60 s ({publisher.snapshots} served)")
            await asyncio.sleep(args.warmup)
            probe.take()
            probe.enabled = True
            await asyncio.sleep(args.seconds)
            probe.enabled = False
            own = probe.take()
            results = [await asyncio.to_thread(out.get, True, 60) for _ in procs]
            for p in procs:
                await asyncio.to_thread(p.join, 20)
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
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--push-seconds", type=float, default=10.0)
    args = ap.parse_args()
    rows = asyncio.run(run(args))
    master = ingest.OUT / "master-bench.csv"
    push = asyncio.run(push_rounds(master, args))
    failover, planned = asyncio.run(failover_round(master))
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
    serve, replica = push["serve"], push["replica"]
    print_table(
        f"Push: {args.clients} WebSocket clients on a NIFTY chain, feed {args.rate:,} packets/s"
        f" — {machine()}",
        ["path", "tick→client p50 / p99", "messages received"],
        [
            [
                "tickgate serve (in-process bus)",
                f"{serve['p50']:.1f} / {serve['p99']:.1f} ms",
                serve["received"],
            ],
            [
                "gateway → NATS → tickgate api",
                f"{replica['p50']:.1f} / {replica['p99']:.1f} ms",
                replica["received"],
            ],
        ],
    )
    print(
        f"failover: kill -9 of the active gateway → plan carried again at the simulator in {failover:.2f} s"
    )
    hop = max(r["replica_p99"] - r["gateway_p99"] for r in rows)
    scaling = "; ".join(f"{r['replicas']}: {r['cpu_us_per_message']:.0f} µs" for r in rows)
    save_results(
        "cluster",
        [
            Figure(
                f"push tick→client p99 through the broker, {args.clients} clients on one replica,"
                f" feed {args.rate:,} packets/s",
                f"{replica['p99']:.1f} ms (p50 {replica['p50']:.1f})",
                "≤ 50 ms",
                replica["p99"] <= 50,
                baseline=f"tickgate serve (in-process bus) {serve['p99']:.1f} ms p99",
            ),
            Figure(
                "added p99 of the broker hop (tick→replica store vs tick→gateway store, worst of"
                " 1/2/4 replicas)",
                f"{hop:+.1f} ms",
                "≤ 5 ms",
                hop <= 5,
                baseline="the gateway's own store in the same run, "
                + " / ".join(f"{r['gateway_p99']:.1f}" for r in rows)
                + " ms p99",
            ),
            Figure("replica CPU per delivered message, by replicas (scaling table above)", scaling),
            Figure(
                f"failover: kill -9 of the active gateway → plan carried again at the simulator ({planned:,}"
                " keys, lease ttl 2 s)",
                f"{failover:.2f} s",
                "≤ 10 s",
                failover <= 10,
            ),
        ],
        notes=[
            f"end to end, the replica's push p99 minus serve's: {replica['p99'] - serve['p99']:+.1f} ms"
            " (100 clients on the replica's own loop instead of the feed's)",
        ],
    )


if __name__ == "__main__":
    main()

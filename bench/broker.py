"""Broker fan-out on this machine: NATS (core pub/sub, the server beside JetStream) against Redis pub/sub
(issue 20's choice of broker, measured before it is made).

One publisher process sends the gateway's tick traffic as compact binary batches (a batch of packets per
message, one subject per chain: ``tg.t.<chain>``) at a fixed packet rate; R subscriber processes (the API
replicas: 1, 2, 4) take every chain by wildcard. Each message carries its send time (ns), so each
subscriber measures publish→delivery latency; the subscribers' and the broker server's CPU time are read
from /proc. Printed per broker and replica count: delivered messages/s per replica, p50/p99 latency, lost
messages, and CPU per delivered message (clients and server). Run: ``python bench/broker.py``.

Needs the services this machine starts: NATS on 127.0.0.1:4222, Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, machine, print_table, save_results

HEAD = struct.Struct("<qI")  # send time (ns), sequence
NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379"
CHAINS = 200  # subjects the traffic is spread over


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(name: str) -> int | None:
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False).stdout.split()
    return int(found[0]) if found else None


# -- subscriber ---------------------------------------------------------------------------------------------


async def _subscribe(broker: str, seconds: float, ready: Any, out: Any) -> None:
    lat: list[int] = []
    count = 0
    bytes_in = 0

    def take(data: bytes) -> None:
        nonlocal count, bytes_in
        sent, _seq = HEAD.unpack_from(data)
        lat.append(time.time_ns() - sent)
        count += 1
        bytes_in += len(data)

    if broker == "nats":
        import nats

        nc = await nats.connect(NATS_URL, pending_size=64 * 1024 * 1024)

        async def on_msg(msg: Any) -> None:
            take(msg.data)

        await nc.subscribe("tg.t.>", cb=on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=512 * 2**20)
        await nc.flush()
        cpu0 = time.process_time()
        ready.set()
        await asyncio.sleep(seconds)
        await nc.close()
    else:
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        pubsub = client.pubsub()
        await pubsub.psubscribe("tg.t.*")
        cpu0 = time.process_time()
        ready.set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if msg is not None:
                take(msg["data"])
        await pubsub.aclose()
        await client.aclose()
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * (len(lat) - 1)))] / 1e6 if lat else float("nan")  # noqa: E731
    out.put(
        {
            "count": count,
            "bytes": bytes_in,
            "p50": pick(0.5),
            "p99": pick(0.99),
            "cpu": time.process_time() - cpu0,
        }
    )


def subscriber(broker: str, seconds: float, ready: Any, out: Any) -> None:
    asyncio.run(_subscribe(broker, seconds, ready, out))


# -- publisher ----------------------------------------------------------------------------------------------


async def publish(broker: str, rate: float, per_message: int, seconds: float) -> tuple[int, float]:
    """Publish ``rate`` packets/s as messages of ``per_message`` 60-byte packets for ``seconds``."""
    body = bytes(60 * per_message - HEAD.size)
    msgs_per_s = rate / per_message
    tick = 0.005
    per_tick = msgs_per_s * tick
    sent = 0
    owed = 0.0
    if broker == "nats":
        import nats

        nc = await nats.connect(NATS_URL, pending_size=64 * 1024 * 1024, flush_timeout=5)

        async def send(subject: str, data: bytes) -> None:
            await nc.publish(subject, data)

        async def flush() -> None:
            await nc.flush()
    else:
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        pending: list[tuple[str, bytes]] = []

        async def send(subject: str, data: bytes) -> None:
            pending.append((subject, data))

        async def flush() -> None:
            if pending:
                pipe = client.pipeline(transaction=False)
                for subject, data in pending:
                    pipe.publish(subject, data)
                pending.clear()
                await pipe.execute()

    started = time.perf_counter()
    cpu0 = time.process_time()
    next_at = started
    while time.perf_counter() - started < seconds:
        owed += per_tick
        n = int(owed)
        owed -= n
        for _ in range(n):
            await send(f"tg.t.{sent % CHAINS}", HEAD.pack(time.time_ns(), sent) + body)
            sent += 1
        await flush()
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await flush()
    cpu = time.process_time() - cpu0
    if broker == "nats":
        await nc.close()
    else:
        await client.aclose()
    return sent, cpu


def run_one(broker: str, replicas: int, rate: float, per_message: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    readies = [ctx.Event() for _ in range(replicas)]
    procs = [ctx.Process(target=subscriber, args=(broker, seconds + 3.0, r, out)) for r in readies]
    for p in procs:
        p.start()
    for r in readies:
        r.wait(20)
    time.sleep(0.3)
    server = server_pid("nats-server" if broker == "nats" else "redis-server")
    server_cpu0 = cpu_of(server) if server else 0.0
    sent, pub_cpu = asyncio.run(publish(broker, rate, per_message, seconds))
    results = [out.get(timeout=seconds + 30) for _ in procs]
    server_cpu = (cpu_of(server) - server_cpu0) if server else float("nan")
    for p in procs:
        p.join(10)
    delivered = sum(r["count"] for r in results)
    return {
        "broker": broker,
        "replicas": replicas,
        "sent": sent,
        "delivered_per_replica": delivered / replicas,
        "lost": sent * replicas - delivered,
        "p50": max(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),
        "client_cpu_us": 1e6 * (sum(r["cpu"] for r in results) + pub_cpu) / max(delivered, 1),
        "server_cpu_us": 1e6 * server_cpu / max(delivered, 1),
        "msgs_per_s": sent / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=50_000, help="packets/s published")
    ap.add_argument("--per-message", type=int, default=32, help="packets per broker message")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    ap.add_argument("--brokers", type=lambda s: s.split(","), default=["nats", "redis"])
    args = ap.parse_args()
    rows = []
    for broker in args.brokers:
        for replicas in args.replicas:
            r = run_one(broker, replicas, args.rate, args.per_message, args.seconds)
            rows.append(r)
            print(json.dumps(r))
    print_table(
        f"Broker fan-out: {args.rate:,.0f} packets/s in messages of {args.per_message} packets over {CHAINS}"
        f" subjects, {args.seconds:.0f} s each — {machine()}",
        [
            "broker",
            "replicas",
            "msgs/s",
            "delivered/replica",
            "lost",
            "p50 ms",
            "p99 ms",
            "client CPU µs/msg",
            "server CPU µs/msg",
        ],
        [
            [
                r["broker"],
                r["replicas"],
                f"{r['msgs_per_s']:,.0f}",
                f"{r['delivered_per_replica']:,.0f}",
                r["lost"],
                f"{r['p50']:.2f}",
                f"{r['p99']:.2f}",
                f"{r['client_cpu_us']:.1f}",
                f"{r['server_cpu_us']:.1f}",
            ]
            for r in rows
        ],
    )
    figures = []
    for broker in args.brokers:
        mine = [r for r in rows if r["broker"] == broker]
        worst = max(r["p99"] for r in mine)
        lost = sum(r["lost"] for r in mine)
        cpu = " / ".join(f"{r['client_cpu_us'] + r['server_cpu_us']:.0f}" for r in mine)
        figures.append(
            Figure(
                f"{broker}: fan-out to {', '.join(str(r['replicas']) for r in mine)} replicas",
                f"p99 ≤ {worst:.2f} ms, {lost} lost, CPU µs per delivered message {cpu}",
            )
        )
    save_results("broker", figures)


if __name__ == "__main__":
    main()

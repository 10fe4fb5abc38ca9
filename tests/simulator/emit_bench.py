"""How many packets per second can the simulator emit? ``python -m tests.simulator.emit_bench`` (not a test).

The simulator runs as ``tickgate simulate`` in its own process; this process opens five sockets of one
account, subscribes 5,000 instruments on each (25,000 from a generated full master), and drains them as
raw TCP bytes — no WebSocket parsing, no decoding — so the client is never the bottleneck. The figures
come from the simulator's own counters (``GET /control/state``): market packets sent per second, packets
withheld for backpressure, share of the event loop spent generating, worst timer lag and pings answered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.frames import Frame, Opcode

from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey, subscribe_messages
from tickgate.instruments import InstrumentRegistry, generate_master

TOKEN, CLIENT = "bench-token", "77"
MARKET = ("2", "4", "5", "8")


async def raw_socket(
    host: str, port: int, keys: list[InstrumentKey], mode: FeedMode
) -> tuple[asyncio.Task[int], asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=2**22)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /?version=2&token={TOKEN}&clientId={CLIENT}&authType=2 HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    for message in subscribe_messages(mode, keys):
        writer.write(Frame(Opcode.TEXT, message.encode()).serialize(mask=True, extensions=[]))
    await writer.drain()

    async def drain() -> int:
        total = 0
        while chunk := await reader.read(2**20):
            total += len(chunk)
        return total

    return asyncio.create_task(drain()), writer


async def measure(base: str, rate: float, stack: int, seconds: float) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        await http.get("/control/rate", params={"pps": rate, "stack": stack})
        await asyncio.sleep(1.0)  # settle
        before = (await http.get("/control/state", params={"subs": 0, "history": 0})).json()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        after = (await http.get("/control/state", params={"subs": 0, "history": 0})).json()
        dt_s = time.perf_counter() - t0
    c0, c1 = before["counters"], after["counters"]
    sent = sum(c1["packets_sent"].get(k, 0) - c0["packets_sent"].get(k, 0) for k in MARKET)
    socks = after["sockets"].values()
    return {
        "rate_asked": rate,
        "stack": stack,
        "packets_per_s": sent / dt_s,
        "frames_per_s": (c1["frames_sent"] - c0["frames_sent"]) / dt_s,
        "MB_per_s": (c1["bytes_sent"] - c0["bytes_sent"]) / dt_s / 1e6,
        "withheld_per_s": (c1["packets_withheld"] - c0["packets_withheld"]) / dt_s,
        "loop_busy": (c1["busy_s"] - c0["busy_s"]) / dt_s,
        "max_tick_lag_ms": c1["recent_tick_lag_s"] * 1e3,
        "pongs": min(s["pongs_received"] for s in socks),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", default="QUOTE", choices=[m.name for m in FeedMode])
    parser.add_argument("--rates", default="250000,2000000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / "master.csv"
        generate_master(master, today=dt.date.today())
        registry = InstrumentRegistry.load(master)
        frame = registry.frame
        options = frame.filter(frame["instrument"].is_in(["OPTIDX", "OPTSTK"])).head(25_000)
        keys = [
            InstrumentKey(ExchangeSegment(s), int(i))
            for s, i in zip(options["fseg"], options["sid"], strict=True)
        ]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from tickgate.cli import app; sys.exit(app())", "simulate",
            "--master", str(master), "--rate", "0", "--token", TOKEN, "--client-id", CLIENT,
            "--ping-timeout", "100000",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        url = (await proc.stdout.readline()).decode().split()[1]
        host, port = url.removeprefix("ws://").split(":")
        drains = []
        for i in range(5):
            task, _writer = await raw_socket(
                host, int(port), keys[i * 5000 : (i + 1) * 5000], FeedMode[args.mode]
            )
            drains.append(task)
        base = f"http://{host}:{port}"
        print(f"{'stack':>5} {'asked':>9} {'packets/s':>10} {'frames/s':>10} {'MB/s':>6} {'withheld/s':>10} "
              f"{'loop busy':>9} {'lag ms':>7} {'pongs':>5}")  # fmt: skip
        for stack in (1, 20):
            for rate in map(float, args.rates.split(",")):
                r = await measure(base, rate, stack, args.seconds)
                print(f"{stack:>5} {rate:>9,.0f} {r['packets_per_s']:>10,.0f} {r['frames_per_s']:>10,.0f} "
                      f"{r['MB_per_s']:>6.1f} {r['withheld_per_s']:>10,.0f} {r['loop_busy']:>9.0%} "
                      f"{r['max_tick_lag_ms']:>7.1f} {r['pongs']:>5.0f}")  # fmt: skip
        proc.terminate()
        await proc.wait()
        for task in drains:
            task.cancel()


if __name__ == "__main__":
    asyncio.run(main())

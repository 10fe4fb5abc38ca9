"""API benchmark over real HTTP: a `tickgate serve` process (one uvicorn worker) with 25,000 instruments live,
fed by the simulator in a third process.

1. Fill to capacity with watchlist adds (Tier B + ~350 Tier A chains), then time adds at capacity (each one
   evicts the least recently used chain): p50/p99 as the client sees them, one add as soon as the previous
   answered (closed loop, ~200 adds/s: the target's figure), then paced at ``--paced-rate`` (open loop,
   timed from when each add was due; for information).
2. ``GET /option-chain/NIFTY?strikes=101`` (101 strikes, live quotes of every leg) under concurrent load with
   ``wrk`` (Debian's; a Python client is the fallback and the bottleneck): requests/s.
3. Push fan-out: 100 WebSocket clients on NIFTY chains while the simulator streams 50k packets/s with its
   latency probe (send time in the volume field): p50/p99 tick→client.
4. The same clients switching the chain's analytics on and off together every ``--toggle-s`` seconds for
   ``--analytics-seconds``: the quotes' p99 in the phases with them, minus the p99 in the phases between
   (issue 18), with a 90 % bootstrap interval over the pairs of phases.

Run: ``python bench/api.py``. Targets (issue 7): chain >= 3,000 req/s; add p99 <= 10 ms; push p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, machine, print_table, save_results, start_simulator
from tickgate.instruments import InstrumentRegistry, generate_master
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN

OUT = Path(__file__).resolve().parent / "out"
ADMIN_KEY = "bench-admin-key-0123456789"
U32 = 2**32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    master: Path, sim_url: str, data_dir: Path, port: int, *, rest_url: str | None = None
) -> subprocess.Popen[bytes]:
    """``tickgate serve`` on the simulator; with ``rest_url`` (the simulator's REST side) it backfills."""
    env = {
        **os.environ,
        "DHAN_CLIENT_ID": DEFAULT_CLIENT_ID,
        "DHAN_ACCESS_TOKEN": DEFAULT_TOKEN,
        "TICKGATE_FEED_URL": sim_url,
        "TICKGATE_INSTRUMENTS": str(master),
        "TICKGATE_DATA_DIR": str(data_dir),
        "TICKGATE_DB_URL": f"sqlite+aiosqlite:///{data_dir / 'bench.db'}",
        "TICKGATE_ADMIN_KEY": ADMIN_KEY,
        "TICKGATE_PORT": str(port),
        **({"TICKGATE_REST_URL": rest_url} if rest_url else {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tickgate", "serve", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_ready(http: httpx.AsyncClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await http.get("/api/v2/health")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError("server never became ready")


def stock_chains(registry: InstrumentRegistry) -> list[tuple[str, str]]:
    """(symbol, expiry) of every stock option chain: what users add."""
    frame = registry.frame
    import polars as pl

    rows = (
        frame.filter(pl.col("instrument").cast(pl.Utf8) == "OPTSTK")
        .select(pl.col("symbol").cast(pl.Utf8), pl.col("expiry"))
        .unique()
        .sort(["expiry", "symbol"])
    )
    return [(s, e.isoformat()) for s, e in rows.iter_rows()]


class LeanHttp:
    """A keep-alive HTTP/1.1 client of a few lines, for timing requests one at a time: the time between
    writing the request and reading the last byte of its response, without a client library's own work
    (httpx costs about a millisecond of this machine's shared CPU per request, which the server under test
    would then be charged with twice: as latency and as contention)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: object) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def fill_and_time_adds(
    client: LeanHttp,
    chains: list[tuple[str, str]],
    at_capacity: int,
    *,
    rate: float | None = None,
    first: int = 0,
) -> dict:
    """Add chains (from ``chains[first]`` on) until ``at_capacity`` adds have evicted, timing those. Closed
    loop by default: each add as soon as the previous answered. With ``rate``, open loop: add ``k`` is due at
    ``k / rate`` seconds and timed from then, so an add held up by a slow one is charged the wait."""
    i = first
    latencies: list[float] = []
    evictions = 0
    began = time.perf_counter()
    while True:
        symbol, expiry = chains[i % len(chains)]
        i += 1
        start = time.perf_counter()
        if rate is not None:
            due = began + len(latencies) / rate
            if due > start:
                await asyncio.sleep(due - start)
            start = due
        status, raw = await client.post_json("/api/v2/watchlist", {"symbol": symbol, "expiry": expiry})
        elapsed = (time.perf_counter() - start) * 1000
        if status != 200:
            continue
        body = json.loads(raw)
        if body.get("evicted"):
            evictions += len(body["evicted"])
            latencies.append(elapsed)
            if len(latencies) >= at_capacity:
                break
        if i - first > len(chains) * 2 + at_capacity * 2:  # every add failing would otherwise loop forever
            break
    arr = np.array(latencies)
    return {
        "adds": i,
        "evictions": evictions,
        "p50": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "p99": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
    }


def run_wrk(url: str, seconds: int, connections: int) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-H", f"X-API-Key: {ADMIN_KEY}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw errors: {non2xx.group(0)}")
    return float(match.group(1)) if match else None


async def python_load(base: str, path: str, seconds: float, concurrency: int) -> float:
    """Fallback load generator (slower than the server: the figure is a floor)."""
    done = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=10) as http:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                r = await http.get(path)
                r.raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


async def push_fanout(  # noqa: PLR0917
    ws_url: str,
    chain_id: int,
    clients: int,
    seconds: float,
    start_feed: Callable[[], Awaitable[object]],
    measuring: int,
    *,
    toggle_s: float | None = None,
) -> dict:
    """Connect and subscribe every client first, then turn the feed up and measure (connecting 100 clients
    is not what is being measured). Every client receives every message; ``measuring`` of them also parse
    them and time each quote (the load generator shares this machine's two cores with the server and the
    simulator: 100 Python clients parsing JSON would measure the load generator).

    With ``toggle_s``, every client subscribes to the chain's analytics and unsubscribes again, all together,
    every ``toggle_s`` seconds, and each quote's latency is filed under the phase it arrived in (without the
    first ``ANALYTICS_SETTLE_S`` of each phase, while the clients' analytics sends start or the last ones
    drain): the baseline is then measured in the same seconds as what it is compared with, interleaved, so
    the machine's slower and faster minutes fall on both sides."""
    samples: list[tuple[float, float]] = []  # (arrived at, monotonic; latency, ms)
    phases: list[tuple[float, float, bool]] = []  # (switched at, every client acknowledged at, analytics on)
    messages = received = repeats = 0
    measure_from = deadline = float("inf")  # set once the feed has run up to rate

    async def client(ws: websockets.ClientConnection, measure: bool) -> None:
        """Reads from the moment it subscribes (a client that stops reading builds a backlog the bench would
        then time); counts and times only what arrives between ``measure_from`` and ``deadline``. Frames are
        taken as bytes: decoding every analytics message to text would be the load generator's own cost."""
        nonlocal messages, received, repeats
        seen: dict[str, int] = {}  # key -> the stamp this client last saw for it
        while (now := time.monotonic()) < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(decode=False), min(deadline - now, 1.0))
            except TimeoutError:
                continue
            arrived = time.monotonic()
            if arrived < measure_from:
                continue
            received += 1
            if raw[:20] == b'{"type":"subscribed"':
                acknowledged.release()
                continue
            if not measure:
                continue  # receives everything; parsing is left to the measuring clients (one CPU here)
            now_us = int(time.time() * 1e6) % U32
            if raw[:19] == b'{"type":"analytics"':
                continue  # timed are quotes; parsing kilobytes of analytics here would load this machine
            msg = json.loads(raw)
            if msg.get("type") != "quotes":
                continue
            messages += 1
            for q in msg["quotes"]:
                vol = q.get("volume")
                if not vol:
                    continue
                # A quote is pushed again when only its OI or LTP (ticker) moved: it still carries the stamp
                # of its last quote packet, which this client already received. Time each tick once, when
                # it first arrives; its re-sends are counted, not timed. The first sighting of a key only
                # learns its stamp: it may be such a re-send of a tick from before this client subscribed.
                last = seen.get(q["key"])
                seen[q["key"]] = vol
                if last == vol:
                    repeats += 1
                elif last is not None:
                    samples.append((arrived, ((now_us - vol) % U32) / 1000.0))

    lags: list[float] = []
    acknowledged = asyncio.Semaphore(0)  # released at each subscription acknowledgement

    async def watch_own_loop() -> None:
        """How late this load generator's own event loop wakes (its stalls would be timed as the server's)."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)

    async def toggle(period: float) -> None:
        """Switch every client's analytics on or off each ``period``; a phase counts from when the server
        has acknowledged every client's switch (a subscription reads the watchlist from the database: a
        hundred of them took up to 0.9 s here, time that belongs to neither side)."""
        item = f"analytics:{chain_id}"
        on = False
        switched = time.monotonic()
        while True:
            phases.append((switched, time.monotonic(), on))
            await asyncio.sleep(max(0.0, switched + period - time.monotonic()))
            on = not on
            switched = time.monotonic()
            request = json.dumps({"subscribe" if on else "unsubscribe": [item]})
            await asyncio.gather(*(ws.send(request) for ws in sockets))
            for _ in sockets:
                await acknowledged.acquire()

    sockets = []
    readers = []
    helpers: list[asyncio.Task[None]] = []
    try:
        for i in range(clients):
            ws = await websockets.connect(f"{ws_url}?key={ADMIN_KEY}", max_size=None, open_timeout=30)
            await ws.send(json.dumps({"subscribe": [f"chain:{chain_id}"]}))
            sockets.append(ws)
            # the measuring clients are spread over the connection order (the hub serves clients in turn)
            readers.append(asyncio.create_task(client(ws, i % max(1, clients // measuring) == 0)))
        await start_feed()
        await asyncio.sleep(1.0)
        # The load generator's own cyclic GC is off while it measures: its full collections, walking what
        # a hundred connections allocate, stopped it for up to 65 ms at a time, and every quote in flight
        # was then timed late, as if the server had been slow. (Reference counting still frees the rest.)
        gc.collect()
        gc.disable()
        measure_from = time.monotonic()
        deadline = measure_from + seconds
        helpers = [asyncio.create_task(watch_own_loop())]
        if toggle_s is not None:
            helpers.append(asyncio.create_task(toggle(toggle_s)))
        await asyncio.gather(*readers)
    finally:
        gc.enable()
        for task in [*readers, *helpers]:
            task.cancel()
        await asyncio.gather(*readers, *helpers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    lag = np.array(lags) * 1000.0
    out: dict = {
        "messages": messages,
        "received": received,
        "repeats": repeats,
        "generator_lag_ms": {
            "p99": float(np.percentile(lag, 99)) if len(lag) else float("nan"),
            "max": float(lag.max()) if len(lag) else float("nan"),
            "over_10ms": int((lag > 10).sum()),
        },
    }
    if toggle_s is None:
        out.update(_percentiles(np.array([lat for _, lat in samples])))
        return out
    out["phases"] = _by_phase(samples, phases)
    out["acknowledged_within_s"] = max((acked - switched for switched, acked, _ in phases), default=0.0)
    return out


ANALYTICS_SETTLE_S = 0.5  # a client's analytics go out at most every 1 / api.push_analytics_hz


def _percentiles(latencies: np.ndarray) -> dict:
    return {
        "quotes": len(latencies),
        "p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "p99": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
    }


def _by_phase(samples: list[tuple[float, float]], phases: list[tuple[float, float, bool]]) -> list[dict]:
    """Each whole phase's analytics switch and the latencies that arrived in it once it had settled:
    ``ANALYTICS_SETTLE_S`` after every client's switch was acknowledged, until the next switch (a phase the
    run's end cut short is left out)."""
    ends = [switched for switched, _, _ in phases[1:]]
    kept: list[list[float]] = [[] for _ in ends]
    for arrived, latency in samples:
        i = bisect.bisect_right(ends, arrived)
        if i < len(ends) and arrived - phases[i][1] >= ANALYTICS_SETTLE_S:
            kept[i].append(latency)
    return [{"analytics": on, "latencies": lat} for (_, _, on), lat in zip(phases, kept, strict=False)]


def extra_p99(phases: list[dict], *, resamples: int = 2_000, seed: int = 0) -> dict:
    """The p99 of the quotes that arrived while every client took the analytics, minus the p99 of those
    that arrived in the phases between, and a 90 % interval by resampling whole pairs of neighbouring
    phases (a bootstrap that keeps each phase's own bursts together). Percentiles are read from 10 µs
    histograms, so a resample sums histograms instead of sorting a quarter of a million latencies."""
    pairs = [
        (phases[i]["latencies"], phases[i + 1]["latencies"])
        for i in range(len(phases) - 1)
        if not phases[i]["analytics"] and phases[i + 1]["analytics"]
    ]
    top = max(max(off + on, default=0.0) for off, on in pairs)
    edges = np.arange(0.0, top + 0.02, 0.01)
    counts = np.array([[np.histogram(side, edges)[0] for side in pair] for pair in pairs])  # pair, side, bin

    def p99(hist: np.ndarray) -> float:
        return float(edges[1 + np.searchsorted(np.cumsum(hist), 0.99 * hist.sum())])

    def diff(chosen: np.ndarray) -> float:
        summed = counts[chosen].sum(axis=0)
        return p99(summed[1]) - p99(summed[0])

    everything = counts.sum(axis=0)
    p_without, p_with = p99(everything[0]), p99(everything[1])
    rng = np.random.default_rng(seed)
    spread = [diff(rng.integers(0, len(pairs), len(pairs))) for _ in range(resamples)]
    low, high = np.percentile(spread, [5, 95])
    return {
        "extra": p_with - p_without,
        "p99_with": p_with,
        "p99_without": p_without,
        "pairs": len(pairs),
        "quotes_with": int(everything[1].sum()),
        "quotes_without": int(everything[0].sum()),
        "interval90": (float(low), float(high)),
    }


async def run(args: argparse.Namespace) -> None:
    OUT.mkdir(exist_ok=True)
    master = OUT / "master-bench.csv"
    if not master.exists():
        generate_master(master, fmt="detailed", seed=0)
    chains = stock_chains(InstrumentRegistry.load(master))
    # The load generator times requests as its client sees them: keep its own set-up out of its cyclic GC's
    # full collections (a loaded registry would make each one a pause charged to whatever was in flight).
    gc.collect()
    gc.freeze()
    data_dir = Path(tempfile.mkdtemp(prefix="tickgate-bench-api-"))
    sim, sim_url, control = start_simulator(master, 2_000)
    port = free_port()
    server = start_server(master, sim_url, data_dir, port)
    (OUT / "api-server.pid").write_text(str(server.pid))  # for attaching a profiler
    base = f"http://127.0.0.1:{port}"
    results: dict[str, object] = {}
    try:
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as http:
            await wait_ready(http)
            if args.push_only:
                adds = {"adds": 0, "evictions": 0, "p50": float("nan"), "p99": float("nan")}
                results["paced"] = adds
            else:
                lean = LeanHttp("127.0.0.1", port, {"X-API-Key": ADMIN_KEY})
                try:
                    adds = await fill_and_time_adds(lean, chains, args.adds_at_capacity)
                    paced = await fill_and_time_adds(
                        lean, chains, args.paced_adds, rate=args.paced_rate, first=adds["adds"]
                    )
                    results["paced"] = paced
                finally:
                    await lean.close()
            results["adds"] = adds
            status = (await http.get("/api/v2/subscriptions")).json()
            results["live"] = status
            path = "/api/v2/option-chain/NIFTY?strikes=101"
            r = await http.get(path)
            r.raise_for_status()
            rows = r.json()["rows"]
            results["chain_rows"] = len(rows)
            rps = run_wrk(base + path, 1 if args.push_only else args.seconds, args.connections)
            results["chain_tool"] = "wrk" if rps is not None else "python"
            if rps is None:
                rps = await python_load(base, path, args.seconds, args.connections)
            results["chain_rps"] = rps
            # the same chain with every leg's IV and Greeks and the chain's analytics (issue 18)
            with_analytics = path + "&analytics=true"
            (await http.get(with_analytics)).raise_for_status()
            rps_a = run_wrk(base + with_analytics, 1 if args.push_only else args.seconds, args.connections)
            if rps_a is None:
                rps_a = await python_load(base, with_analytics, args.seconds, args.connections)
            results["chain_rps_analytics"] = rps_a
            # push: NIFTY weekly chain in the watchlist, 100 clients, simulator at 50k packets/s
            nifty = (await http.post("/api/v2/watchlist", json={"symbol": "NIFTY", "strikes": 101})).json()
            chain_id = nifty["entry"]["id"]
            # then the same fan-out with every client taking the chain's analytics in every other phase
            # of --toggle-s seconds (issue 18: the extra p99). On this shared machine two runs without
            # analytics a minute apart differ by more than the 1 ms judged (the rounds of 5 s with and 5 s
            # without the bench took before spread by ±10 ms): the baseline is interleaved with its subject.
            rounds = [
                ("push", None, args.push_seconds),
                ("interleaved", args.toggle_s, args.analytics_seconds),
            ]
            for name, toggle_s, seconds in rounds:
                results[name] = await push_fanout(
                    f"ws://127.0.0.1:{port}/api/v2/stream",
                    chain_id,
                    args.clients,
                    seconds,
                    lambda: http.get(f"{control}/rate", params={"pps": args.push_rate, "stack": 1}),
                    min(args.measuring_clients, args.clients),
                    toggle_s=toggle_s,
                )
                print(name, {k: v for k, v in results[name].items() if k != "phases"})  # type: ignore[union-attr]
            feed = (await http.get("/api/v2/admin/stats")).json()["feed"]
            results["push"]["decode_lag_max_ms"] = feed["decode_lag_max_s"] * 1000  # type: ignore[index]
            results["push"]["frames"] = feed["frames"]  # type: ignore[index]
            ws_status = (await http.get("/api/v2/ws/status")).json()
            print(
                "feed during the run: server disconnects",
                feed["server_disconnects"],
                "stale recycles",
                feed["stale_recycles"],
                "reconnects",
                [c.get("reconnects") for c in ws_status["connections"]],
            )
    finally:
        server.send_signal(signal.SIGTERM)
        sim.send_signal(signal.SIGTERM)
        server.wait(20)
        sim.wait(20)
        shutil.rmtree(data_dir, ignore_errors=True)

    adds = results["adds"]
    paced = results["paced"]
    push = results["push"]
    assert isinstance(adds, dict)
    assert isinstance(paced, dict)
    assert isinstance(push, dict)
    paced_figure = (
        f"POST /watchlist at capacity, open loop at {args.paced_rate:g} adds/s, n={args.paced_adds}",
        f"p50 {paced['p50']:.1f} ms, p99 {paced['p99']:.1f} ms",
    )
    rps = float(results["chain_rps"])  # type: ignore[arg-type]
    rps_a = float(results["chain_rps_analytics"])  # type: ignore[arg-type]
    interleaved = results["interleaved"]
    assert isinstance(interleaved, dict)
    ex = extra_p99(interleaved["phases"])
    np.savez_compressed(  # for a closer look at the phases (bench/out is not kept)
        OUT / "api-phases.npz",
        **{
            f"{i}_{int(ph['analytics'])}": np.asarray(ph["latencies"])
            for i, ph in enumerate(interleaved["phases"])
        },
    )
    extra = ex["extra"]
    low, high = ex["interval90"]
    extra_text = (
        f"{extra:+.2f} ms (90 % interval {low:+.2f} to {high:+.2f}; p99 {ex['p99_with']:.1f} ms with,"
        f" {ex['quotes_with']:,} quotes)"
    )
    extra_baseline = (
        f"p99 {ex['p99_without']:.1f} ms without, {ex['quotes_without']:,} quotes, in the {ex['pairs']}"
        f" phases of {args.toggle_s:g} s between"
    )
    print_table(
        f"API: one uvicorn worker, 25k live, simulator in its own process — {machine()}",
        ["figure", "measured", "target", ""],
        [
            (
                f"GET option-chain NIFTY ({results['chain_rows']} strikes), {args.connections} conns,"
                f" {results['chain_tool']}",
                f"{rps:,.0f} req/s",
                ">= 3,000 req/s",
                "met" if rps >= 3000 else "MISSED",
            ),
            (
                f"POST /watchlist at capacity (each evicts LRU), n={args.adds_at_capacity}",
                f"p50 {adds['p50']:.1f} ms, p99 {adds['p99']:.1f} ms",
                "p99 <= 10 ms",
                "met" if adds["p99"] <= 10 else "MISSED",
            ),
            (
                "GET option-chain NIFTY with ?analytics=true (IV + Greeks per leg), same run",
                f"{rps_a:,.0f} req/s (without: {rps:,.0f})",
                ">= 3,000 req/s",
                "met" if rps_a >= 3000 else "MISSED",
            ),
            (*paced_figure, "(information)", ""),
            (
                f"push: {args.clients} WS clients on a NIFTY chain, feed {args.push_rate:,} packets/s",
                f"p50 {push['p50']:.1f} ms, p99 {push['p99']:.1f} ms ({push['received']:,} msgs;"
                f" decode lag max {push.get('decode_lag_max_ms', float('nan')):.0f} ms)",
                "p99 <= 50 ms",
                "met" if push["p99"] <= 50 else "MISSED",
            ),
            (
                f"push with the chain's analytics too, every other {args.toggle_s:g} s: extra p99 over the"
                " phases without",
                f"{extra_text}; {extra_baseline}",
                "<= 1 ms",
                "met" if extra <= 1 else "MISSED",
            ),
        ],
    )

    save_results(
        "api",
        [
            Figure(
                f"GET option-chain NIFTY ({results['chain_rows']} strikes), {results['chain_tool']}",
                f"{rps:,.0f} req/s",
                "≥ 3,000 req/s",
                rps >= 3000,
            ),
            Figure(
                f"POST /watchlist at capacity (each evicts LRU), p99 of {args.adds_at_capacity}",
                f"{adds['p99']:.1f} ms (p50 {adds['p50']:.1f} ms)",
                "≤ 10 ms",
                adds["p99"] <= 10,
            ),
            Figure(
                "GET option-chain NIFTY with ?analytics=true",
                f"{rps_a:,.0f} req/s",
                "≥ 3,000 req/s",
                rps_a >= 3000,
                f"{rps:,.0f} req/s without analytics",
            ),
            Figure(*paced_figure),
            Figure(
                f"push tick→client p99, {args.clients} clients, feed {args.push_rate:,} packets/s",
                f"{push['p99']:.1f} ms (p50 {push['p50']:.1f} ms)",
                "≤ 50 ms",
                push["p99"] <= 50,
            ),
            Figure(
                "push p99 with every client taking the analytics, extra (interleaved with the baseline)",
                extra_text,
                "≤ 1 ms",
                extra <= 1,
                extra_baseline,
            ),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--adds-at-capacity", type=int, default=1000)  # p99 of 200 is its 2nd worst
    parser.add_argument("--paced-rate", type=float, default=20.0, help="adds/s of the open-loop add run")
    parser.add_argument("--paced-adds", type=int, default=300)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--push-rate", type=int, default=50_000)
    parser.add_argument("--push-seconds", type=float, default=10.0)
    parser.add_argument(
        "--analytics-seconds",
        type=float,
        default=240.0,
        help="how long the clients take the analytics every other phase (half of it with, half without)",
    )
    parser.add_argument(
        "--toggle-s",
        type=float,
        default=4.0,
        help="each phase with, or without, the analytics (each loses about a second to the switch: the"
        " subscriptions' acknowledgements and the clients' first analytics sends)",
    )
    parser.add_argument("--measuring-clients", type=int, default=10)
    parser.add_argument("--push-only", action="store_true", help="Tier B only, no add/chain timing")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

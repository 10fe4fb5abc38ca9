"""Benchmark of the instrument registry on a generated full-size (~290k rows) scrip master.

Measures, in one run:
  * registry load + index time — median of several runs, each in a fresh subprocess so that peak RSS is
    honest (nothing cached, nothing shared); "index" = every lazy index the first queries need (by-id,
    chains, search) plus one query of each kind;
  * peak RSS of those subprocesses (the kernel's high-water mark of the process, VmHWM — not ru_maxrss,
    which on Linux carries the *parent's* peak across fork + exec, so it reported this script's own RSS
    after generating the master), the RSS after imports only (polars, numpy, tickgate), and the
    difference: what the registry itself adds;
  * ``pandas.read_csv`` of the same file (parse only, default options) — median, fresh subprocesses too;
  * search latency p50/p99 over 1,000 realistic queries (symbols, prefixes, name words, index and
    commodity names, lower case, a few misses), plus chain-query latencies.

Usage: ``python bench/registry.py [--format detailed|compact] [--runs 5] [--out DIR]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if "--child" not in sys.argv:  # the measuring children must not load rich (it would count in their RSS)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # noqa: F401 - now, so that the saved results time the whole run and its load average

TODAY = dt.date(2026, 11, 25)
TARGETS = {"load_s": 0.5, "rss_mb": 150.0, "speedup": 3.0, "search_ms": 1.0}


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _peak_mb() -> float:
    """Peak RSS of this process. VmHWM where there is /proc: ru_maxrss of a child started with fork +
    exec is at least the parent's RSS at the fork (Linux keeps the maximum across exec)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    rss = _status_mb("VmRSS")
    if rss is not None:
        return rss
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def child_registry(path: str) -> None:
    t0 = time.perf_counter()
    from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
    from tickgate.instruments import InstrumentRegistry

    imported = time.perf_counter()
    base = _rss_mb()
    c1 = time.process_time()
    t1 = time.perf_counter()
    reg = InstrumentRegistry.load(path, today=TODAY)
    t2 = time.perf_counter()
    reg.warm()
    reg.get(InstrumentKey(ExchangeSegment.NSE_EQ, 2885))
    reg.search("reliance")
    expiry = reg.option_expiries("NIFTY")[0]
    reg.strikes("NIFTY", expiry)
    reg.strike_step("NIFTY", expiry)
    reg.underlying("CRUDEOIL")
    t3 = time.perf_counter()
    cpu = time.process_time() - c1
    print(json.dumps({
        "import_s": imported - t0, "load_s": t2 - t1, "index_s": t3 - t2, "total_s": t3 - t1, "cpu_s": cpu,
        "rss_base_mb": base, "rss_after_mb": _rss_mb(), "peak_mb": _peak_mb(), "rows": len(reg),
    }))  # fmt: skip


def child_pandas(path: str) -> None:
    import pandas as pd

    base = _rss_mb()
    c0 = time.process_time()
    t0 = time.perf_counter()
    df = pd.read_csv(path, low_memory=False)
    t1 = time.perf_counter()
    cpu = time.process_time() - c0
    print(
        json.dumps(
            {"parse_s": t1 - t0, "cpu_s": cpu, "rows": len(df), "rss_base_mb": base, "peak_mb": _peak_mb()}
        )
    )


def _run_child(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)], check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _queries(reg: object, n: int, seed: int = 1) -> list[str]:
    """Queries a user of the API would type: symbols and their prefixes, words of company names, index
    and commodity names, in mixed case, and a few that match nothing."""
    import polars as pl

    from tickgate.instruments import InstrumentRegistry

    assert isinstance(reg, InstrumentRegistry)
    rng = random.Random(seed)
    f = reg.frame.filter(pl.col("instrument").cast(pl.String).is_in(["EQUITY", "INDEX"]))
    symbols = f["tsym"].to_list()
    names = [w for d in f["display"].to_list() for w in d.split() if len(w) >= 4 and w.isalpha()]
    fno = (
        reg.frame.filter(pl.col("instrument").cast(pl.String) == "OPTSTK")["symbol"].unique().sort().to_list()
    )
    fixed = ["nifty", "NIFTY", "banknifty", "nifty bank", "sensex", "finnifty", "midcpnifty", "gold",
             "crude", "crudeoil", "silver", "natural gas", "usdinr", "reliance", "hdfc", "hdfc bank", "tcs",
             "infy", "infosys", "sbin", "state bank", "tata", "bajaj", "adani", "m&m", "bajaj-auto",
             "icici"]  # fmt: skip
    out: list[str] = []
    while len(out) < n:
        r = rng.random()
        if r < 0.2:
            q = rng.choice(fixed)
        elif r < 0.45:
            q = rng.choice(fno)
        elif r < 0.65:
            s = rng.choice(fno + symbols)
            q = s[: rng.randint(2, max(2, min(6, len(s))))]
        elif r < 0.8:
            q = rng.choice(names)
        elif r < 0.95:
            q = rng.choice(symbols)
        else:
            q = "".join(rng.choice("QXZJVWKY") for _ in range(rng.randint(3, 7)))  # no match
        out.append(q.lower() if rng.random() < 0.5 else q)
    return out


def _percentiles(samples_ms: list[float]) -> tuple[float, float, float]:
    s = sorted(samples_ms)
    return s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))], s[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", choices=["compact", "detailed"], default="detailed")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None, help="where to write the master (default: a temp dir)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path = args.child
        (child_registry if kind == "registry" else child_pandas)(path)
        return

    from rich.console import Console
    from rich.table import Table

    from _common import Figure, record_table, save_results
    from tickgate.instruments import InstrumentRegistry, generate_master

    console = Console()
    tmp = tempfile.TemporaryDirectory(prefix="tickgate-bench-")
    folder = args.out or Path(tmp.name)
    path = folder / f"scrip-master-{args.format}.csv"
    t = time.perf_counter()
    gen = generate_master(path, fmt=args.format, today=TODAY)
    gen_s = time.perf_counter() - t
    console.print(
        f"generated {gen.rows:,} rows, {gen.bytes / 1e6:.1f} MB ({args.format}) in {gen_s:.2f}s: {path}"
    )

    regs: list[dict[str, float]] = []
    pds: list[dict[str, float]] = []
    for _ in range(args.runs):  # interleaved, so both see the same machine load
        regs.append(_run_child("registry", path))
        pds.append(_run_child("pandas", path))
    load = statistics.median(r["total_s"] for r in regs)
    load_only = statistics.median(r["load_s"] for r in regs)
    load_cpu = statistics.median(r["cpu_s"] for r in regs)
    load_best = min(r["total_s"] for r in regs)
    index = statistics.median(r["index_s"] for r in regs)
    peak = max(r["peak_mb"] for r in regs)
    peak_median = statistics.median(r["peak_mb"] for r in regs)
    added = [r["peak_mb"] - r["rss_base_mb"] for r in regs]  # the registry's own share of the peak
    added_median, added_max = statistics.median(added), max(added)
    parse_cpu = statistics.median(p["cpu_s"] for p in pds)
    base = statistics.median(r["rss_base_mb"] for r in regs)
    imp = statistics.median(r["import_s"] for r in regs)
    parse = statistics.median(p["parse_s"] for p in pds)
    pd_peak = max(p["peak_mb"] for p in pds)
    pd_added = statistics.median(p["peak_mb"] - p["rss_base_mb"] for p in pds)

    reg = InstrumentRegistry.load(path, today=TODAY)
    reg.warm()  # index building is counted in "load + index" above
    queries = _queries(reg, args.queries)
    search_ms: list[float] = []
    search_cpu_ms: list[float] = []
    hits = 0
    for q in queries:
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        hits += bool(reg.search(q))
        search_ms.append((time.perf_counter_ns() - t0) / 1e6)
        search_cpu_ms.append((time.thread_time_ns() - c0) / 1e6)
    chain_ms: list[float] = []
    rng = random.Random(2)
    underlyings = ["NIFTY", "BANKNIFTY", "SENSEX", "RELIANCE", "TCS", "CRUDEOIL", "GOLD", "USDINR"]
    for _ in range(300):
        sym = rng.choice(underlyings)
        t0 = time.perf_counter_ns()
        exp = reg.option_expiries(sym)[0]
        reg.strikes(sym, exp)
        chain_ms.append((time.perf_counter_ns() - t0) / 1e6)
    s50, s99, smax = _percentiles(search_ms)
    u50, u99, umax = _percentiles(search_cpu_ms)
    c50, c99, _ = _percentiles(chain_ms)

    def ok(good: bool) -> str:
        return "[green]yes[/]" if good else "[red]NO[/]"

    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    cores = os.cpu_count()
    title = f"instrument registry — {gen.rows:,}-row {args.format} master, median of {args.runs} runs"
    table = Table(title=f"{title}\n(load average {load_avg} on {cores} cores)")
    for col in ("metric", "measured", "target", "met"):
        table.add_column(col)
    rows = [
        ("load + index (fresh process)", f"{load * 1000:.0f} ms", "≤ 500 ms", ok(load <= TARGETS["load_s"])),
        ("  of which load / index+first queries", f"{load_only * 1000:.0f} / {index * 1000:.0f} ms", "", ""),
        ("  best run; CPU time (all threads)", f"{load_best * 1000:.0f}; {load_cpu * 1000:.0f} ms", "", ""),
        ("peak RSS (whole process), median / max", f"{peak_median:.0f} / {peak:.0f} MB", "≤ 150 MB",
         ok(peak <= TARGETS["rss_mb"])),
        ("  RSS after imports (polars, numpy, tickgate)", f"{base:.0f} MB", "", ""),
        ("  added by the registry (peak − after imports), median / max",
         f"{added_median:.0f} / {added_max:.0f} MB", "≤ 150 MB", ok(added_max <= TARGETS["rss_mb"])),
        ("pandas.read_csv (parse only): wall; CPU; peak (added)",
         f"{parse * 1000:.0f}; {parse_cpu * 1000:.0f} ms; {pd_peak:.0f} (+{pd_added:.0f}) MB", "", ""),
        ("speed-up vs pandas (wall; CPU time)", f"{parse / load:.1f}×; {parse_cpu / load_cpu:.1f}×", "≥ 3×",
         ok(parse / load >= TARGETS["speedup"])),
        (f"search p50 / p99 / max ({len(queries)} queries)", f"{s50:.3f} / {s99:.3f} / {smax:.3f} ms",
         "p99 ≤ 1 ms", ok(s99 <= TARGETS["search_ms"])),
        ("  same, CPU time of the thread", f"{u50:.3f} / {u99:.3f} / {umax:.3f} ms", "", ""),
        ("  queries with results", f"{hits}/{len(queries)}", "", ""),
        ("expiries + strikes p50 / p99", f"{c50:.3f} / {c99:.3f} ms", "", ""),
        ("imports (polars, numpy, tickgate)", f"{imp * 1000:.0f} ms", "", ""),
        ("generate master", f"{gen_s:.2f} s", "", ""),
    ]  # fmt: skip
    for r in rows:
        table.add_row(*r)
    console.print(table)
    record_table(f"{title} (load average {load_avg})", ["metric", "measured", "target", "met"], rows)
    pandas = f"pandas.read_csv {parse * 1000:.0f} ms"
    save_results(
        "registry",
        [
            Figure("registry load + index, fresh process (median)", f"{load * 1000:.0f} ms", "≤ 500 ms",
                   load <= TARGETS["load_s"], pandas),
            Figure("speed-up vs pandas.read_csv (wall)", f"{parse / load:.1f}×", "≥ 3×",
                   parse / load >= TARGETS["speedup"], pandas),
            Figure("memory added by the registry (max of runs)",
                   f"+{added_max:.0f} MB (whole process peak {peak:.0f} MB)", "≤ 150 MB added",
                   added_max <= TARGETS["rss_mb"]),
            Figure(f"search p99 ({len(queries):,} queries)", f"{s99:.3f} ms", "≤ 1 ms",
                   s99 <= TARGETS["search_ms"]),
        ],
        ["The 150 MB target is \"for the registry\" (issue 3): its own share, peak RSS minus the RSS after "
         "importing polars, numpy and tickgate. The table judges the whole-process peak against it too."],
    )  # fmt: skip
    console.print("\nmarkdown:\n")
    print(f"{title} (load average {load_avg} on {cores} cores)\n")
    print("| metric | measured | target |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0].strip()} | {r[1]} | {r[2]} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()

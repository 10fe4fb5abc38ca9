"""Benchmark of the command line's start-up: what a person waits for at the prompt.

Measures, in one run, each as a whole fresh process (interpreter start, imports, work, exit), interleaved so
that the machine's load falls on all of them alike:
  * ``tickgate --help`` — median of ``--runs`` processes (target ≤ 200 ms);
  * ``tickgate instruments info FILE`` on a generated full-size master (detailed format) — median;
  * the same-run baseline: a whole ``python -c "import pandas; pandas.read_csv(FILE)"`` process — median
    (target: ``instruments info`` ≥ 1.5× faster than it).

Usage: ``python bench/cli.py [--runs 7]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Figure, machine, print_table, save_results

TODAY = dt.date(2026, 11, 25)
VENV_BIN = Path(sys.executable).parent
HELP_TARGET_S = 0.200
INFO_TARGET_X = 1.5


def timed(argv: list[str]) -> float:
    """Wall seconds of one whole process; it must succeed."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    from tickgate.instruments import generate_master

    tickgate = str(VENV_BIN / "tickgate")
    with tempfile.TemporaryDirectory(prefix="tickgate-bench-cli-") as tmp:
        master = Path(tmp) / "scrip-master-detailed.csv"
        generate_master(master, fmt="detailed", today=TODAY)
        commands = {
            "tickgate --help": [tickgate, "--help"],
            "tickgate instruments info": [tickgate, "instruments", "info", str(master)],
            "pandas.read_csv process": [
                sys.executable,
                "-c",
                f"import pandas; pandas.read_csv({str(master)!r})",
            ],
        }
        os.environ.setdefault("COLUMNS", "120")
        for argv in commands.values():  # warm the page cache and the .pyc files once
            timed(argv)
        runs: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                runs[name].append(timed(argv))
    med = {name: statistics.median(times) for name, times in runs.items()}
    help_s, info_s, pandas_s = (
        med["tickgate --help"],
        med["tickgate instruments info"],
        med["pandas.read_csv process"],
    )
    speedup = pandas_s / info_s
    help_met = "met" if help_s <= HELP_TARGET_S else "MISSED"
    info_met = "met" if speedup >= INFO_TARGET_X else "MISSED"
    info_target = f"≥ {INFO_TARGET_X}× faster than pandas ({speedup:.2f}×)"
    rows = [
        (
            label,
            f"{med[name] * 1000:.0f} ms",
            f"{min(runs[name]) * 1000:.0f}–{max(runs[name]) * 1000:.0f} ms",
            target,
            met,
        )
        for label, name, target, met in (
            ("tickgate --help", "tickgate --help", "≤ 200 ms", help_met),
            ("tickgate instruments info", "tickgate instruments info", info_target, info_met),
            ("pandas.read_csv process (baseline)", "pandas.read_csv process", "", ""),
        )
    ]
    print_table(
        f"CLI start-up, whole processes, median of {args.runs} — {machine()}",
        ["command", "median", "range", "target", "met"],
        rows,
    )
    baseline = f"whole `pandas.read_csv` process {pandas_s * 1000:.0f} ms"
    save_results(
        "cli",
        [
            Figure(
                "`tickgate --help`, whole process",
                f"{help_s * 1000:.0f} ms",
                "≤ 200 ms",
                help_s <= HELP_TARGET_S,
            ),
            Figure(
                "`tickgate instruments info` on a full-size master, whole process",
                f"{info_s * 1000:.0f} ms = {speedup:.2f}× faster than pandas",
                f"≥ {INFO_TARGET_X}× the pandas process",
                speedup >= INFO_TARGET_X,
                baseline,
            ),
        ],
    )


if __name__ == "__main__":
    main()

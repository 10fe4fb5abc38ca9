"""Helpers shared by the benchmarks: timing, machine description, table printing."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table


def machine() -> str:
    """One line naming where the figures came from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest wall time of ``repeat`` runs, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console(width=140).print(table)


def start_simulator(master: Path, rate: int, *extra: str) -> tuple[subprocess.Popen[str], str, str]:
    """``tickgate simulate`` in its own process, latency probe on: (process, feed URL, control URL)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tickgate",
            "simulate",
            "--master",
            str(master),
            "--rate",
            str(rate),
            "--latency-probe",
            "--tick-ms",
            "5",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = control = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("SIMULATOR "):
            url = line.split()[1]
        elif line.startswith("CONTROL "):
            control = line.split()[1].removesuffix("/state")
        if url and control:
            break
    if not url:
        raise RuntimeError("the simulator did not announce its URL")
    return proc, url, control

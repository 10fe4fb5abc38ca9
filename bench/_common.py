"""Helpers shared by the benchmarks: timing, machine description, table printing, saved results.

Every table a benchmark prints through :func:`print_table` (or records with :func:`record_table`) is kept,
and :func:`save_results` writes them with the headline :class:`Figure` s, the options the bench ran with, the
machine and the load average before/after to ``bench/out/results/<name>.json``. ``bench/report.py`` turns the
files of one ``make bench`` run into ``docs/PERFORMANCE.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text

OUT = Path(__file__).resolve().parent / "out"
RESULTS = Path(os.environ.get("TICKGATE_BENCH_RESULTS", OUT / "results"))
PACKAGES = ("tickgate", "dhanhq", "pandas", "polars", "numpy", "websockets", "uvicorn", "fastapi", "httpx")
MET = {"met", "yes"}
MISSED = {"missed", "no"}
VERDICT_COLUMNS = {"", "met"}

_STARTED = time.time()
_LOAD_BEFORE = os.getloadavg()
_TABLES: list[dict[str, object]] = []


def cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def machine() -> str:
    """One line naming where the figures came from."""
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def machine_info() -> dict[str, object]:
    """The machine and software the figures came from, for the report."""
    ram_gb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram_gb = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    packages: dict[str, str] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": packages,
    }


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest wall time of ``repeat`` runs, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@dataclasses.dataclass(frozen=True)
class Figure:
    """A headline figure: what was measured, the value as printed, the same-run baseline (if the bench has
    one), the target and whether it was met (``None``: no target)."""

    figure: str
    measured: str
    target: str = ""
    met: bool | None = None
    baseline: str = ""


def _plain(cell: object) -> str:
    text = str(cell)
    try:
        return Text.from_markup(text).plain
    except MarkupError:
        return text


def verdict(columns: Sequence[str], row: Sequence[str]) -> str | None:
    """Verdict "met" or "missed" from the verdict column (named "" or "met"); None if the row has none."""
    for column, cell in zip(columns, row, strict=False):
        if column.strip().lower() in VERDICT_COLUMNS:
            word = cell.strip().lower()
            if word in MET:
                return "met"
            if word in MISSED:
                return "missed"
    return None


def record_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Keep a table (rich markup stripped) for :func:`save_results`."""
    cols = [str(c) for c in columns]
    plain = [[_plain(cell) for cell in row] for row in rows]
    _TABLES.append(
        {
            "title": _plain(title),
            "columns": cols,
            "rows": plain,
            "verdicts": [verdict(cols, row) for row in plain],
        }
    )


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    record_table(title, columns, rows)
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console(width=140).print(table)


def _jsonable(value: object) -> object:
    """numpy scalars (a comparison of numpy floats is a numpy bool) as their Python value."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    return str(value)


def save_results(name: str, figures: Sequence[Figure] = (), notes: Sequence[str] = ()) -> Path:
    """Write ``bench/out/results/<name>.json``: the tables printed so far, the headline figures, the options
    the bench ran with, the machine, and the load average when the bench started and now."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    finished = time.time()
    data = {
        "name": name,
        "command": " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "options": sys.argv[1:],
        "started": dt.datetime.fromtimestamp(_STARTED, dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(finished - _STARTED, 1),
        "load_before": [round(x, 2) for x in _LOAD_BEFORE],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine_info(),
        "figures": [
            {**dataclasses.asdict(f), "met": None if f.met is None else bool(f.met)} for f in figures
        ],
        "tables": _TABLES,
        "notes": list(notes),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=_jsonable) + "\n")
    print(f"results saved to {path}")
    return path


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
            "--no-market-hours",  # load at any hour: the bench measures throughput, not the calendar
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

"""Fixtures for the instrument registry tests: generated masters (small, both formats) and helpers."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

import pinned
from tickgate.instruments import InstrumentRegistry, generate_master
from tickgate.instruments.generator import GeneratorStats

TODAY = pinned.TODAY
SMALL = {"rows_target": 60_000, "fno_stocks": 12}


@pytest.fixture(scope="session")
def small_masters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, GeneratorStats]]:
    """A small generated master (all index/MCX/currency series, 12 F&O stocks) in both formats."""
    folder = tmp_path_factory.mktemp("masters")
    out = {}
    for fmt in ("compact", "detailed"):
        path = folder / f"small-{fmt}.csv"
        out[fmt] = (path, generate_master(path, fmt=fmt, seed=7, today=TODAY, **SMALL))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def small_registries(small_masters: dict[str, tuple[Path, GeneratorStats]]) -> dict[str, InstrumentRegistry]:
    return {fmt: InstrumentRegistry.load(path, today=TODAY) for fmt, (path, _) in small_masters.items()}


@pytest.fixture(scope="session")
def detailed(small_registries: dict[str, InstrumentRegistry]) -> InstrumentRegistry:
    return small_registries["detailed"]


def read_rows(path: Path) -> list[dict[str, str]]:
    """A master read independently of the code under test (stdlib csv, separator sniffed by header)."""
    with open(path, newline="", encoding="utf-8") as fh:
        head = fh.readline()
        fh.seek(0)
        return list(csv.DictReader(fh, delimiter="\t" if head.count("\t") > head.count(",") else ","))


def parse_date(text: str) -> dt.date:
    """Dates as the samples write them: 2026-02-24, 2026-02-24 14:30:00 or 7/31/2025."""
    text = text.strip().split(" ")[0]
    if "/" in text:
        m, d, y = (int(x) for x in text.split("/"))
        return dt.date(y, m, d)
    return dt.date.fromisoformat(text)

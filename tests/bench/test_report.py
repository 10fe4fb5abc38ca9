"""The benchmark results pipeline: a bench saves its tables and figures, the report formats only those."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tickgate_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


common = _load("_common")
report = _load("report")


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "_TABLES", [])
    monkeypatch.setattr(sys, "argv", ["bench/decode.py", "--packets", "1000"])
    return tmp_path


def test_saved_tables_and_figures_are_what_the_report_shows(results: Path) -> None:
    common.print_table(
        "Decode: 1,000 packets",
        ["path", "packets/s", "vs SDK", "target", ""],
        [
            ("official SDK parser", "0.08 M/s", "1.0x", "", ""),
            ("batch", "2.66 M/s", "35.0x", ">= 20x", "met"),
            ("per-frame | odd", "0.12 M/s", "1.5x", ">= 3x", "MISSED"),
        ],
    )
    common.save_results(
        "decode",
        [common.Figure("batch vs SDK", "2.66 M packets/s = 35.0× the SDK", "≥ 20×", True, "SDK 0.08 M/s")],
    )
    loaded = report.load_results(results)
    assert loaded["decode"]["tables"][0]["verdicts"] == [None, "met", "missed"]
    assert loaded["decode"]["options"] == ["--packets", "1000"]

    text = report.render(loaded, failed=["ingest"], generated=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert "| decode | batch vs SDK | 2.66 M packets/s = 35.0× the SDK | SDK 0.08 M/s | ≥ 20× | met |" in text
    assert "| per-frame \\| odd | 0.12 M/s | 1.5x | >= 3x | **MISSED** |" in text
    assert "Targets across every table below: **1 met, 1 missed**" in text
    assert "Not the issue-target sizes" in text
    assert "`--packets 1000`" in text
    # benches without results are named as such and get no figures
    assert "| ingest | **failed** |" in text
    for name in ("registry", "planner", "api", "cli", "backfill", "analytics", "accounts", "cluster"):
        assert f"| {name} | **not run** |" in text
    assert text.count("No figures are reported for it.") == 9


def test_no_results_at_all_invents_nothing() -> None:
    text = report.render({}, generated=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), commit="abc1234")
    assert "commit `abc1234`" in text
    assert "**0 met, 0 missed**" in text
    assert text.count("**not run**") == len(report.BENCHES)
    assert " M/s" not in text
    assert "## Bad input and robustness" in text

"""Fixtures for the chain tests: one generated full-size master per session, the real BANKNIFTY extract."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tickgate.chains import AtmEngine
from tickgate.config import ChainSettings
from tickgate.instruments import InstrumentRegistry, generate_master

TODAY = dt.date(2026, 7, 14)
"""A Tuesday that is a NIFTY weekly expiry (the next day rolls it), two days before a SENSEX weekly and
the CRUDEOIL July options expiry."""
SAMPLE_TODAY = dt.date(2025, 7, 1)
"""Before every expiry of the 2025 BANKNIFTY extract."""


def chain_settings(**over: object) -> ChainSettings:
    """Explicit settings, so a developer's TICKGATE_CHAINS__* environment cannot change test outcomes."""
    base: dict[str, object] = {
        "stock_strikes": 25,
        "index_strikes": 101,
        "commodity_strikes": 51,
        "currency_strikes": 25,
        "hysteresis": 0.6,
        "recentre_cooldown_s": 5.0,
        "cache_ttl_s": 60.0,
        "cache_max_entries": 4096,
        "tier_b": None,
    }
    base.update(over)
    return ChainSettings.model_validate(base)


@pytest.fixture(scope="session")
def master_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chains") / "master.csv"
    generate_master(path, seed=0, today=TODAY)
    return path


@pytest.fixture(scope="session")
def registry(master_path: Path) -> InstrumentRegistry:
    return InstrumentRegistry.load(master_path, today=TODAY)


@pytest.fixture(scope="session")
def banknifty(samples_dir: Path) -> InstrumentRegistry:
    """The real Dhan extract: 2,328 BANKNIFTY options (tab-separated, spreadsheet dates)."""
    return InstrumentRegistry.load(samples_dir / "detailed-banknifty-options-2025.tsv", today=SAMPLE_TODAY)


@pytest.fixture
def settings() -> ChainSettings:
    return chain_settings()


@pytest.fixture
def engine(banknifty: InstrumentRegistry, settings: ChainSettings) -> AtmEngine:
    return AtmEngine(banknifty, settings)

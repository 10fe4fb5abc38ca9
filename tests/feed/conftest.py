"""Fixtures for feed tests: a real simulator on loopback and fast-reacting client settings."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable

import pytest

import pinned
from tickgate.config import FeedClientSettings, FeedLimits, Settings
from tickgate.dhan.client import Credentials
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.feed import FeedManager
from tickgate.planner import Planner, Tier
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator, StaticUniverse

TODAY = pinned.TODAY
CHAIN_SIZE = 200  # keys per group (100 strikes × CE/PE)


def fast_settings(limits: FeedLimits | None = None, **feed: float) -> Settings:
    """Timings scaled down so reconnects, watchdogs and backoffs happen within a test."""
    values: dict[str, float] = {
        "open_interval_s": 0.01,
        "backoff_initial_s": 0.05,
        "backoff_cap_s": 0.4,
        "backoff_stable_s": 5.0,
        "backoff_805_s": 0.6,
        "fatal_recheck_s": 0.1,
        "connect_timeout_s": 3.0,
        "ping_interval_s": 1.0,
        "ping_timeout_s": 4.0,
        "stale_after_s": 30.0,
        "close_timeout_s": 0.5,
        "startup_barrier_s": 2.0,
    }
    values.update(feed)
    return Settings(limits=limits or FeedLimits(), feed=FeedClientSettings(**values))  # type: ignore[arg-type]


def big_universe(chains: int) -> tuple[StaticUniverse, list[list[InstrumentKey]]]:
    """``chains`` option chains of CHAIN_SIZE keys each on NIFTY, ids from 100000 up."""
    universe = StaticUniverse.sample(TODAY)
    groups = []
    expiry = TODAY + dt.timedelta(days=7)
    for c in range(chains):
        first = 100_000 + c * CHAIN_SIZE
        rows = universe.add_chain(
            "NIFTY", expiry, [20_000 + 10 * i for i in range(CHAIN_SIZE // 2)], first_id=first
        )
        groups.append([k for _strike, ce, pe in rows for k in (ce, pe)])
    return universe, groups


def add_groups(planner: Planner, groups: list[list[InstrumentKey]], tier: Tier, prefix: str) -> None:
    for i, keys in enumerate(groups):
        result = planner.add_group(
            f"{prefix}{i}", tier, keys, FeedMode.QUOTE, owner=f"{prefix}{i}", now=float(i)
        )
        assert result.accepted, result.reason


def view_sets(sim: Simulator) -> set[frozenset[tuple[InstrumentKey, FeedMode]]]:
    return {frozenset(v.items()) for v in sim.view().values() if v}


def plan_sets(planner: Planner) -> set[frozenset[tuple[InstrumentKey, FeedMode]]]:
    return {frozenset(v.items()) for v in planner.actual().values() if v}


def credentials() -> Credentials:
    return Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN)


@pytest.fixture
def make_sim() -> Callable[..., Simulator]:
    def make(**kwargs: object) -> Simulator:
        kwargs.setdefault("today", TODAY)
        kwargs.setdefault("rate", 2_000.0)
        kwargs.setdefault("ping_interval", 0.5)
        kwargs.setdefault("ping_timeout", 5.0)
        return Simulator(**kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def running() -> AsyncIterator[list[object]]:
    """Things to close at the end of a test, in reverse order (managers before simulators)."""
    items: list[object] = []
    yield items
    for item in reversed(items):
        if isinstance(item, FeedManager):
            await item.stop()
        elif isinstance(item, Simulator):
            await item.close()


__all__ = [
    "CHAIN_SIZE",
    "ExchangeSegment",
    "add_groups",
    "big_universe",
    "credentials",
    "fast_settings",
    "plan_sets",
    "view_sets",
]

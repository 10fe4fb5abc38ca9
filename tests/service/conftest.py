"""A whole tickgate service against the simulator, on a generated master and a temporary SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import pinned
from tickgate.config import FeedClientSettings, FeedLimits, Settings
from tickgate.dhan.client import Credentials
from tickgate.instruments import InstrumentRegistry
from tickgate.service import TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, Simulator

TODAY = pinned.TODAY
NOW = pinned.CLOCK_START  # the suite's pinned instant: never the host clock

SMALL_TIER_B = """
[defaults]
mode = "quote"
strikes = 21

[[options]]
symbol = "NIFTY"
exchange = "NSE"
expiries = "next 1 weekly"
"""


def service_settings(tmp: Path, *, limits: FeedLimits | None = None, tier_b: Path | None = None) -> Settings:
    feed = FeedClientSettings(
        open_interval_s=0.01,
        backoff_initial_s=0.1,
        backoff_cap_s=0.5,
        ping_interval_s=2.0,
        ping_timeout_s=5.0,
        close_timeout_s=0.5,
        startup_barrier_s=1.0,
    )
    settings = Settings(
        limits=limits or FeedLimits(),
        feed=feed,
        data_dir=tmp,
        db_url=f"sqlite+aiosqlite:///{tmp / 'tickgate.db'}",
    )
    if tier_b is not None:
        settings = settings.model_copy(
            update={"chains": settings.chains.model_copy(update={"tier_b": tier_b})}
        )
    return settings


ServiceFactory = Callable[..., Awaitable[TickgateService]]


@pytest.fixture
async def simulator(master: Path, registry: InstrumentRegistry) -> AsyncIterator[Simulator]:
    from tickgate.sim import RegistryUniverse

    sim = Simulator(universe=RegistryUniverse(registry, TODAY), master=master, today=TODAY, rate=3_000.0)
    await sim.start()
    yield sim
    await sim.close()


@pytest.fixture
async def make_service(
    simulator: Simulator, registry: InstrumentRegistry, tmp_path: Path
) -> AsyncIterator[ServiceFactory]:
    started: list[TickgateService] = []

    async def make(**kwargs: object) -> TickgateService:
        settings = kwargs.pop("settings", None) or service_settings(tmp_path)
        kwargs.setdefault("clock", pinned.flowing(NOW))
        kwargs.setdefault("scheduler", False)
        svc = TickgateService(
            settings,  # type: ignore[arg-type]
            credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
            feed_url=simulator.url,
            registry=registry,
            **kwargs,  # type: ignore[arg-type]
        )
        await svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        if svc.started_at is not None:
            await svc.stop()

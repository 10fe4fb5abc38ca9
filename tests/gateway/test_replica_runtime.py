"""An API replica runs under the gateway's latency policy for the process (issue 20): what its start built is
frozen out of the cyclic GC's walks, the GIL is handed over in 1 ms slices, and one full walk of everything
is made at each session's close. Without it, every full collection of a replica holding a registry walked
every object in it, a pause each of its push clients waited through."""

from __future__ import annotations

import gc
import os
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

import tickgate.replica
from tickgate.config import Settings, StoreSettings
from tickgate.instruments import InstrumentRegistry
from tickgate.replica import ReplicaService
from tickgate.schedule.eod import SESSIONS
from tickgate.service.runtime import RuntimePolicy

NATS = "nats://127.0.0.1:4222"
PG = os.environ.get("TICKGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"tgtest_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(make_url(PG).set(drivername="postgresql").render_as_string(False))
    await conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    await conn.close()


async def test_a_replica_freezes_what_it_built_and_walks_everything_at_each_close(
    schema: str, registry: InstrumentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tickgate.replica, "SNAPSHOT_WAIT_S", 0.2)  # no gateway here: serve without quotes
    before = sys.getswitchinterval()
    settings = Settings(
        db_url=PG, store=StoreSettings(pg_schema=schema), bus_url=NATS, bus_prefix=f"t{uuid.uuid4().hex[:8]}."
    )
    svc = ReplicaService(settings, registry=registry)
    await svc.start()
    try:
        assert sys.getswitchinterval() == pytest.approx(RuntimePolicy.SWITCH_INTERVAL_S)
        assert gc.get_freeze_count() > 0  # the registry, among the rest
        collector = svc._collector
        assert collector is not None
        assert collector.running
        assert {f"eod-{s.lower().replace('_', '-')}" for s in SESSIONS} <= set(collector.next_runs)
        assert all(collector.next_runs[f"eod-{s.lower().replace('_', '-')}"] for s in SESSIONS)
        await svc._collect_at_close("NSE", (), None)  # what the collector runs at a close
        assert svc.runtime.stats.daily_collections == 1
        assert gc.get_freeze_count() > 0  # frozen again after the walk
    finally:
        await svc.stop()
    assert sys.getswitchinterval() == before
    assert gc.get_freeze_count() == 0
    assert svc._collector is None

"""An API replica runs under the gateway's latency policy for the process (issue 20): what its start built is
frozen out of the cyclic GC's walks, the GIL is handed over in 1 ms slices, and one full walk of everything
is made at each session's close. Without it, every full collection of a replica holding a registry walked
every object in it, a pause each of its push clients waited through."""

from __future__ import annotations

import gc
import sys

import pytest

import tickgate.replica
from tickgate.config import Settings, StoreSettings
from tickgate.instruments import InstrumentRegistry
from tickgate.replica import ReplicaService
from tickgate.schedule.eod import SESSIONS
from tickgate.service.runtime import RuntimePolicy

from .cluster import NATS, PG


async def test_a_replica_freezes_what_it_built_and_walks_everything_at_each_close(
    schema: str, registry: InstrumentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tickgate.replica, "SNAPSHOT_WAIT_S", 0.2)  # no gateway here: serve without quotes
    before = sys.getswitchinterval()
    settings = Settings(
        db_url=PG, store=StoreSettings(pg_schema=schema), bus_url=NATS, bus_prefix=f"t{schema}."
    )
    svc = ReplicaService(settings, registry=registry)
    await svc.start()
    try:
        assert sys.getswitchinterval() == pytest.approx(RuntimePolicy.SWITCH_INTERVAL_S)
        assert gc.get_freeze_count() > 0  # the registry, among the rest
        collector = svc._collector
        assert collector is not None
        assert collector.running
        closes = [f"eod-{s.lower().replace('_', '-')}" for s in SESSIONS]
        assert all(collector.next_runs.get(job) for job in closes), collector.next_runs
        await svc._collect_at_close("NSE", (), None)  # what the collector runs at a close
        assert svc.runtime.stats.daily_collections == 1
        assert gc.get_freeze_count() > 0  # frozen again after the walk
    finally:
        await svc.stop()
    assert sys.getswitchinterval() == before
    assert gc.get_freeze_count() == 0
    assert svc._collector is None

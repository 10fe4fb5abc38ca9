"""The gateway's lease on the real PostgreSQL (issue 20): one holder at a time; a holder that dies is
replaced once its row expires; a holder cut off from the database (through a TCP proxy the test
controls) stops using its sockets before the standby takes over; a replaced holder cannot renew."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from proxies import Proxy
from tickgate.store import Store
from tickgate.store.engine import normalize_url, pg_engine
from tickgate.store.lease import LeaseKeeper, LeaseTimer
from waiting import until

from .conftest import PG_URL as PG
from .conftest import Db

TTL = 1.0


def test_the_timer_steps_down_before_the_row_can_expire() -> None:
    timer = LeaseTimer(ttl_s=5.0)
    assert not timer.must_step_down(100.0)
    timer.acquired(3, now=100.0)
    assert timer.renew_at() == 101.0
    assert not timer.must_step_down(102.9)
    assert timer.must_step_down(103.0)  # 0.6 × 5 s: two seconds before the row expires
    timer.renewed(103.0)
    assert not timer.must_step_down(105.0)
    timer.lost()
    assert not timer.holding
    with pytest.raises(ValueError, match="before the row expires"):
        LeaseTimer(5.0, step_down=1.0)


@pytest.fixture
async def engine(pg_db: Db) -> AsyncIterator[AsyncEngine]:
    """An engine on a schema of this test's own, migrated to head (the lease table with the rest)."""
    store = await Store.open(pg_db.url, settings=pg_db.settings)
    await store.close()
    eng = on_schema(pg_db, PG)
    yield eng
    await eng.dispose()


def on_schema(db: Db, url: str | URL) -> AsyncEngine:
    return pg_engine(normalize_url(url), db.settings)


class Gateway:
    """What a gateway does with the lease: 'sockets' held from acquired to lost, timestamped."""

    def __init__(self, name: str, engine: AsyncEngine) -> None:
        self.name = name
        self.holding = False
        self.events: list[tuple[float, str]] = []
        self.keeper = LeaseKeeper(
            engine, f"{name}-{uuid.uuid4().hex[:6]}", ttl_s=TTL, on_acquired=self.acquired, on_lost=self.lost
        )

    async def acquired(self, epoch: int) -> None:
        self.holding = True
        self.events.append((time.monotonic(), f"acquired {epoch}"))

    async def lost(self) -> None:
        self.holding = False
        self.events.append((time.monotonic(), "lost"))


async def test_one_holder_then_the_standby_after_a_crash(engine: AsyncEngine) -> None:
    a, b = Gateway("a", engine), Gateway("b", engine)
    overlap = 0

    async def watch() -> None:
        nonlocal overlap
        while True:
            overlap += a.holding and b.holding
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    a.keeper.start()
    await until(lambda: a.holding, 5)
    b.keeper.start()
    await asyncio.sleep(3 * TTL)
    assert not b.holding, "the standby took a lease that was being renewed"
    # a dies (kill -9: no release, no goodbye): b takes over once the row expires
    crashed = time.monotonic()
    assert a.keeper._task is not None
    a.keeper._task.cancel()
    a.holding = False
    await until(lambda: b.holding, 5 * TTL)
    took = time.monotonic() - crashed
    assert TTL * 0.5 <= took <= 3 * TTL, took
    assert b.keeper.epoch == 2
    # a's late renewal names epoch 1: refused, so a can never think it still holds
    async with engine.begin() as conn:
        renewed = (
            await conn.execute(
                sa.text(
                    "UPDATE gateway_lease SET expires_at = now() WHERE holder = :h AND epoch = 1 RETURNING 1"
                ),
                {"h": a.keeper.holder},
            )
        ).scalar()
    assert renewed is None
    await b.keeper.stop()  # graceful: released at once
    watcher.cancel()
    assert overlap == 0


async def test_a_holder_cut_off_from_the_database_stops_before_the_standby_starts(
    engine: AsyncEngine, pg_db: Db
) -> None:
    proxy = Proxy(make_url(PG).port or 5432)
    await proxy.start()
    cut_engine = on_schema(pg_db, make_url(PG).set(host="127.0.0.1", port=proxy.port))
    a, b = Gateway("a", cut_engine), Gateway("b", engine)
    try:
        a.keeper.start()
        await until(lambda: a.holding, 5)
        b.keeper.start()
        await asyncio.sleep(TTL)
        proxy.partitioned = True  # a can neither renew nor hear back; b still reaches the database
        await until(lambda: b.holding, 6 * TTL)
        lost_at = next(t for t, what in a.events if what == "lost")
        acquired_at = next(t for t, what in b.events if what.startswith("acquired"))
        assert lost_at < acquired_at, "the standby started before the cut-off holder stopped"
        assert acquired_at - lost_at >= 0.2 * TTL  # the margin: 1 - step_down of the ttl, less the polling
        assert a.keeper.step_downs == 1
    finally:
        await a.keeper.stop(release=False)
        await b.keeper.stop()
        proxy.partitioned = False
        await proxy.cut()
        await cut_engine.dispose()

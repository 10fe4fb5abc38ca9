"""The one writer: batching, flush, retries, isolation of refused rows, backpressure without loss."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import exc as sa_exc

from tickgate.dhan.protocol import FeedMode
from tickgate.planner.types import EventKind, PlannerEvent, Tier
from tickgate.store import Store

from .conftest import Db, _pg_dsn

Batch = Callable[..., Awaitable[None]]


def _events(n: int, start: int = 0) -> list[PlannerEvent]:
    return [
        PlannerEvent(EventKind.SUBSCRIBE, f"A:{i}", "u", Tier.A, count=i) for i in range(start, start + n)
    ]


async def _counts(store: Store) -> list[int]:
    out: list[int] = []
    cursor = None
    while True:
        page = await store.audit.page(limit=1000, before=cursor)
        out += [e.count for e in page.entries]
        if page.next_cursor is None:
            return out[::-1]
        cursor = page.next_cursor


def _patch(store: Store, wrapper: Callable[[Batch], Batch]) -> None:
    store.batches.write_batch = wrapper(store.batches.write_batch)  # type: ignore[method-assign]


async def test_batches_in_order_and_flush_waits(db: Db) -> None:
    store = await Store.open(db.url, settings=db.settings.model_copy(update={"writer_batch_max": 500}))
    try:
        for i in range(0, 3000, 100):
            assert store.writer.submit_events(_events(100, i), "planner") == 100
        assert store.writer.pending > 0
        await store.writer.flush(timeout=30)
        assert store.writer.pending == 0
        assert await _counts(store) == list(range(3000))
        stats = store.writer.stats()
        assert stats["audit_written"] == 3000
        assert stats["audit_failed"] == 0
        assert 6 <= stats["batches"] <= 12  # 500 a transaction, not one per event
        await store.writer.flush()  # nothing pending: returns at once
    finally:
        await store.close()


async def test_transient_errors_are_retried_without_loss(store: Store) -> None:
    failures = 3

    def wrapper(inner: Batch) -> Batch:
        async def flaky(audit: list[Any], atm: list[Any], subs: Any, **rest: Any) -> None:
            nonlocal failures
            if failures:
                failures -= 1
                raise sa_exc.OperationalError("INSERT", {}, Exception("database is locked"))
            await inner(audit, atm, subs, **rest)

        return flaky

    _patch(store, wrapper)
    store.writer.submit_events(_events(50), "planner")
    await store.writer.flush(timeout=10)
    assert await _counts(store) == list(range(50))
    assert store.writer.stats()["retries"] == 3
    assert store.writer.stats()["last_error"] is None


async def test_a_refused_row_costs_only_itself(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    def wrapper(inner: Batch) -> Batch:
        async def picky(audit: list[Any], atm: list[Any], subs: Any, **rest: Any) -> None:
            if any(r["actor"] == "poison" for r in audit):
                raise sa_exc.IntegrityError("INSERT", {}, Exception("refused"))
            await inner(audit, atm, subs, **rest)

        return picky

    _patch(store, wrapper)
    store.writer.submit_events(_events(10), "planner")
    store.writer.submit_log("STARTUP", actor="poison")
    store.writer.submit_events(_events(10, 10), "planner")
    await store.writer.flush(timeout=10)
    assert await _counts(store) == list(range(20))
    assert store.writer.stats()["audit_failed"] == 1
    assert any("poison" in r.getMessage() for r in caplog.records)  # its content survives in the log


async def test_backpressure_queues_everything_and_waits_for_room(db: Db) -> None:
    store = await Store.open(db.url, settings=db.settings.model_copy(update={"writer_high_water": 100}))
    gate = asyncio.Event()

    def wrapper(inner: Batch) -> Batch:
        async def stalled(audit: list[Any], atm: list[Any], subs: Any, **rest: Any) -> None:
            await gate.wait()  # the database "stops answering"
            await inner(audit, atm, subs, **rest)

        return stalled

    _patch(store, wrapper)
    try:
        for i in range(0, 1000, 10):
            store.writer.submit_events(_events(10, i), "feed")  # the hot path never waits
        assert store.writer.backlogged
        waiter = asyncio.create_task(store.writer.wait_for_room())
        with pytest.raises(TimeoutError):
            await store.writer.flush(timeout=0.2)
        assert not waiter.done()
        gate.set()
        await asyncio.wait_for(waiter, 10)
        await store.writer.flush(timeout=10)
        assert await _counts(store) == list(range(1000))  # nothing dropped
        assert store.writer.stats()["max_pending"] >= 900
        await store.writer.wait_for_room()  # returns at once below high water
    finally:
        gate.set()
        await store.close()


async def test_close_writes_what_is_pending_then_refuses(db: Db) -> None:
    store = await Store.open(db.url, settings=db.settings)
    store.writer.submit_events(_events(25), "planner")
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.writer.submit_log("STARTUP", actor="late")
    again = await Store.open(db.url, settings=db.settings)
    try:
        assert await _counts(again) == list(range(25))
    finally:
        await again.close()


async def test_a_crashed_writer_is_reported_not_waited_for(store: Store) -> None:
    def boom() -> None:
        raise RuntimeError("bug")

    store.writer._take = boom  # type: ignore[method-assign]
    store.writer.submit_log("STARTUP", actor="x")
    with pytest.raises(RuntimeError, match="crashed"):
        await store.writer.flush(timeout=5)
    assert not store.writer.alive
    assert not await store.ping()


async def test_writer_retries_while_another_process_locks_sqlite(sqlite_db: Db) -> None:
    db = sqlite_db
    store = await Store.open(db.url, settings=db.settings.model_copy(update={"busy_timeout_ms": 50}))
    other = sqlite3.connect(db.path, isolation_level=None)  # type: ignore[arg-type]
    try:
        other.execute("BEGIN EXCLUSIVE")  # e.g. a backup or a CLI holding the write lock
        store.writer.submit_events(_events(40), "planner")
        await asyncio.sleep(0.5)
        assert store.writer.stats()["retries"] >= 1
        assert store.writer.pending == 40
        other.execute("COMMIT")
        await store.writer.flush(timeout=10)
        assert await _counts(store) == list(range(40))
    finally:
        other.close()
        await store.close()


async def test_writer_and_reads_survive_killed_postgres_connections(pg_db: Db) -> None:
    store = await Store.open(pg_db.url, settings=pg_db.settings)
    try:
        store.writer.submit_events(_events(10), "planner")
        await store.writer.flush(timeout=10)
        pids: set[int] = set()
        for _ in range(3):
            async with store._engines.write.connect() as conn:
                pids.add(int((await conn.exec_driver_sql("select pg_backend_pid()")).scalar_one()))
        admin = await asyncpg.connect(_pg_dsn())
        try:
            for pid in pids:
                await admin.execute("select pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        store.writer.submit_events(_events(10, 10), "planner")
        await store.writer.flush(timeout=20)
        assert await _counts(store) == list(range(20))
        assert await store.ping()
    finally:
        await store.close()


async def test_touches_are_coalesced_and_written_without_waiting(store: Store) -> None:
    """Viewing a chain records its last use through the writer: many views, one row update, no await."""
    user, _ = await store.users.create("viewer")
    entry = await store.watchlists.put(
        user.id, "NIFTY", exchange="NSE", group_id="A:1:NSE:NIFTY:SPOT", mode=FeedMode.QUOTE
    )
    later = entry.last_used + timedelta(minutes=3)
    for s in range(60):
        store.writer.submit_touch(entry.id, later - timedelta(seconds=60 - s))
    store.writer.submit_touch(entry.id, later)
    store.writer.submit_touch(999_999, later)  # a row deleted meanwhile: nothing to update, no error
    await store.writer.flush(timeout=10)
    got = await store.watchlists.get(entry.id)
    assert got is not None
    assert got.last_used == later
    assert store.writer.stats()["batches"] <= 2

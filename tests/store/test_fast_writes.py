"""The write path's shortcuts store exactly what the plain SQLAlchemy path would, on both databases, and the
ordering rules around SQLite's one write lock hold: users' writes first, the writer never starved."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tickgate.config import StoreSettings
from tickgate.dhan.protocol import FeedMode
from tickgate.planner import Tier
from tickgate.store import Store
from tickgate.store import rows as conv
from tickgate.store import schema as tbl
from tickgate.store.engine import Engines
from tickgate.store.prepared import DriverStatement, run_prepared
from tickgate.store.types import AuditEntry, WatchlistState

from .conftest import Db
from .test_subscriptions import _row

T0 = datetime(2026, 11, 25, 4, 0, 0, 123456, tzinfo=UTC)


def _audit_rows() -> list[conv.Row]:
    return [
        conv.audit_row(
            "SUBSCRIBE" if i % 2 else "EVICT",
            actor="planner",
            at=T0 + timedelta(microseconds=i),
            group_id=None if i == 3 else f"A:7:NSE:RELIANCE:{i}",
            owner=str(i),
            tier=Tier.A if i % 3 else None,
            connection=i % 5 if i % 4 else None,
            count=51 + i,
            mode=FeedMode.FULL if i % 2 else None,
            reason=None if i % 2 else f"évincé n°{i} — ₹ capacity",
            details={"keys": [f"NSE_FNO:{i}"], "n": i, "nested": {"ok": True}} if i % 3 == 0 else None,
        )
        for i in range(12)
    ]


async def test_driver_statements_store_what_sqlalchemy_stores(store: Store) -> None:
    rows = _audit_rows()
    fast = DriverStatement(lambda _d, _n: sa.insert(tbl.subscription_log), insert=True)
    prepared = fast.prepare(store._engines.write_dialect, rows)
    await store.gate.write(lambda conn: run_prepared(conn, [prepared]))
    await store.gate.write(lambda conn: conn.execute(sa.insert(tbl.subscription_log), rows))
    entries = (await store.audit.page(limit=100)).entries
    assert len(entries) == 2 * len(rows)

    def shape(e: AuditEntry) -> dict[str, object]:
        d = dataclasses.asdict(e)
        del d["id"]
        return d

    by_path = sorted(entries, key=lambda e: e.id)
    fast_rows, plain_rows = by_path[: len(rows)], by_path[len(rows) :]
    assert [shape(e) for e in fast_rows] == [shape(e) for e in plain_rows]
    assert fast_rows[0].at == T0  # microseconds and UTC survive the trip


async def test_subscription_upserts_replace_rows_in_place(store: Store) -> None:
    store.writer.submit_subscriptions([_row(i, owners=("g1",)) for i in range(10)])
    await store.writer.flush()
    delta = conv.SubDelta(
        upserts=conv.sub_index([_row(3, owners=("g1", "g2"), conn=4), _row(42, owners=("g9",), conn=None)]),
        gone=(("NSE_FNO", 5),),
    )
    statements = store.subscriptions.statements(delta, None)
    await store.gate.write(lambda conn: run_prepared(conn, statements))
    rows = {r.key.security_id: r for r in await store.subscriptions.rows()}
    assert sorted(rows) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 42]
    assert rows[3].owners == ("g1", "g2")
    assert rows[3].connection == 4
    assert rows[42].state == "suspended"
    assert rows[42].connection is None
    assert rows[0].owners == ("g1",)


async def test_driver_statements_tell_json_values_apart(store: Store) -> None:
    """The writer reuses a batch's processed values; ``1``, ``1.0`` and ``True`` are equal in Python but
    not in JSON, so each must still be stored as SQLAlchemy stores it."""
    rows = [
        conv.audit_row("SUBSCRIBE", actor="planner", at=T0, count=i, details=details)
        for i, details in enumerate([1, True, 1.0, "1", 1, True, None, [1, True], [1, True]])
    ]
    fast = DriverStatement(lambda _d, _n: sa.insert(tbl.subscription_log), insert=True)
    prepared = fast.prepare(store._engines.write_dialect, rows)
    await store.gate.write(lambda conn: run_prepared(conn, [prepared]))
    await store.gate.write(lambda conn: conn.execute(sa.insert(tbl.subscription_log), rows))
    entries = sorted((await store.audit.page(limit=100)).entries, key=lambda e: e.id)
    fast_details = [(e.count, e.details) for e in entries[: len(rows)]]
    plain_details = [(e.count, e.details) for e in entries[len(rows) :]]
    assert fast_details == plain_details
    # (SQLite's NUMERIC affinity stores the JSON text 1.0 as 1, on both paths alike)
    assert [type(fast_details[i][1]) for i in (0, 1, 3)] == [int, bool, str]


async def test_sqlite_file_writes_run_on_the_event_loop(sqlite_db: Db) -> None:
    store = await Store.open(sqlite_db.url, settings=sqlite_db.settings, start_writer=False)
    try:
        names = await asyncio.gather(
            *(store.gate.write(lambda _c: threading.current_thread().name) for _ in range(5))
        )
    finally:
        await store.close()
    assert names == [threading.current_thread().name] * 5


async def test_a_write_waits_for_another_process_off_the_event_loop(sqlite_db: Db) -> None:
    """Another connection holding SQLite's write lock (another process: the CLI adding a user) makes a
    write wait on the writer thread, not on the loop; it commits once the lock is released."""
    assert sqlite_db.path is not None
    store = await Store.open(sqlite_db.url, settings=sqlite_db.settings, start_writer=False)
    other = sqlite3.connect(sqlite_db.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(store.gate.write(lambda _c: threading.current_thread().name))
        ticks = 0
        for _ in range(20):  # the loop keeps running while the write waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done()
        other.execute("COMMIT")
        name = await asyncio.wait_for(write, 10)
        assert name.startswith("tickgate-sqlite-writer"), name
        assert ticks == 20
        # and once the lock is free again, writes are back on the loop
        assert (
            await store.gate.write(lambda _c: threading.current_thread().name)
            == threading.current_thread().name
        )
    finally:
        other.close()
        await store.close()


async def test_wal_checkpoints_run_off_the_writer_connection(sqlite_db: Db) -> None:
    """The writer connection never checkpoints (that would fsync on the event loop); the store's own
    checkpoint, on a worker thread, folds the WAL back into the database."""
    assert sqlite_db.path is not None
    store = await Store.open(sqlite_db.url, settings=sqlite_db.settings, start_writer=False)
    try:
        autocheckpoint = await store.gate.write(
            lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        )
        assert autocheckpoint == 0
        for i in range(200):  # committed transactions: frames in the WAL for the checkpoint to move
            await store.meta.set(f"checkpoint-test:{i % 7}", i)
        await store.checkpoint()
        assert store.checkpoints.done == 1
        assert store.checkpoints.failed == 0
        assert store.checkpoints.last_wal_frames > 0
        assert await store.meta.get("checkpoint-test:3") == 199  # i = 199 was the last write to key 3
    finally:
        await store.close()


async def test_background_writes_wait_for_priority_sections(sqlite_db: Db) -> None:
    settings = StoreSettings(writer_yield_max_s=5.0)
    store = await Store.open(sqlite_db.url, settings=settings, start_writer=False)
    ran: list[str] = []
    try:
        async with store.gate.priority():
            background = asyncio.ensure_future(
                store.gate.write(lambda _c: ran.append("batch"), background=True)
            )
            await asyncio.sleep(0.1)
            assert ran == []  # held back while a user's request is in flight
            await store.gate.write(lambda _c: ran.append("user"))  # the user's own write is not
            assert ran == ["user"]
        await asyncio.wait_for(background, 5)
        assert ran == ["user", "batch"]
    finally:
        await store.close()


async def test_the_writer_is_never_starved(sqlite_db: Db) -> None:
    settings = StoreSettings(writer_yield_max_s=0.05)
    store = await Store.open(sqlite_db.url, settings=settings, start_writer=False)
    try:
        async with store.gate.priority():  # a request that never ends
            started = time.monotonic()
            await asyncio.wait_for(store.gate.write(lambda _c: None, background=True), 5)
            waited = time.monotonic() - started
    finally:
        await store.close()
    assert 0.04 <= waited < 2.0


@pytest.mark.parametrize("n", [1, 7, 120])
async def test_audit_rows_through_the_writer_keep_their_order(store: Store, n: int) -> None:
    for i in range(n):
        store.writer.submit_log("WATCHLIST_ADD", actor=f"user:{i}", count=i)
    await store.writer.flush(timeout=30)
    entries = (await store.audit.page(action="WATCHLIST_ADD", limit=1000)).entries
    assert [e.count for e in sorted(entries, key=lambda e: e.id)] == list(range(n))


async def test_eviction_marks_spare_a_row_added_again_after_the_decision(store: Store) -> None:
    user, _ = await store.users.create("trader")
    q = FeedMode.QUOTE
    old = await store.watchlists.put(user.id, "SBIN", exchange="NSE", group_id="A:1:SBIN", mode=q)
    decided = datetime.now(UTC)
    later = decided + timedelta(seconds=1)
    again = await store.watchlists.put(user.id, "TCS", exchange="NSE", group_id="A:1:TCS", mode=q, at=later)
    evicted = WatchlistState.EVICTED
    store.writer.submit_watchlist_state(("A:1:SBIN", "A:1:TCS"), evicted, reason="capacity", at=decided)
    await store.writer.flush(timeout=30)
    states = {e.id: e.state for e in await store.watchlists.rows(user.id)}
    assert states[old.id] is WatchlistState.EVICTED
    assert states[again.id] is WatchlistState.ACTIVE  # created after the decision: not the evicted chain


async def test_a_whole_subscriptions_table_is_written_off_the_event_loop(
    sqlite_db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first snapshot after start is the whole table (25,000 rows, ~50 ms of SQLite): it goes to the
    writer thread; a chain's delta stays inline."""
    store = await Store.open(sqlite_db.url, settings=sqlite_db.settings, start_writer=False)
    threaded: list[int] = []
    original = Engines.run_write

    async def spy(self: Engines, fn: Any) -> Any:
        threaded.append(1)
        return await original(self, fn)

    monkeypatch.setattr(Engines, "run_write", spy)
    try:
        whole = conv.sub_index([_row(i, owners=("g1",)) for i in range(store.settings.writer_subs_chunk + 1)])
        await store.batches.write_batch([], [], whole)
        assert threaded == [1]
        delta = conv.SubDelta(upserts=conv.sub_index([_row(3, owners=("g2",))]), gone=(("NSE_FNO", 5),))
        await store.batches.write_batch([], [], delta)
        assert threaded == [1]
        rows = {r.key.security_id: r for r in await store.subscriptions.rows()}
        assert len(rows) == store.settings.writer_subs_chunk
        assert rows[3].owners == ("g2",)
    finally:
        await store.close()


async def test_driver_level_errors_arrive_as_sqlalchemy_raises_them(store: Store) -> None:
    """The inline writer calls sqlite3 directly; a refused row must still surface as SQLAlchemy's
    IntegrityError (the writer isolates refused rows by that type, and retries transient ones)."""
    rows = _audit_rows()[:2]
    rows[1] = {**rows[1], "actor": None}  # NOT NULL
    statement = DriverStatement(lambda _d, _n: sa.insert(tbl.subscription_log), insert=True)
    prepared = statement.prepare(store._engines.write_dialect, rows)
    with pytest.raises(sa.exc.IntegrityError):
        await store.gate.write(lambda conn: run_prepared(conn, [prepared]))
    assert not (await store.audit.page(limit=10)).entries  # the whole transaction rolled back

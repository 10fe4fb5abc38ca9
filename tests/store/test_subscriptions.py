"""The subscriptions table: a materialised view of the planner, replaced whole or diffed by the writer."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from tickgate.clock import SYSTEM_CLOCK
from tickgate.config import FeedLimits
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.planner import Planner, Tier
from tickgate.store import Store, SubscriptionRow, subscription_rows
from tickgate.store import rows as conv
from tickgate.store.planner_view import PlannerSubscriptions
from tickgate.store.prepared import run_prepared
from tickgate.store.subscriptions import PUT

from .conftest import Db

T0 = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)
FNO = ExchangeSegment.NSE_FNO


def _row(
    sid: int, *, owners: tuple[str, ...] = ("g",), conn: int | None = 0, at: datetime = T0
) -> SubscriptionRow:
    return SubscriptionRow(
        key=InstrumentKey(FNO, sid),
        owners=owners,
        tier=Tier.A,
        connection=conn,
        mode=FeedMode.QUOTE,
        state="placed" if conn is not None else "suspended",
        updated=at,
    )


def _rows(n: int) -> list[SubscriptionRow]:
    return [_row(i) for i in range(n)]


def _as_set(rows: list[SubscriptionRow]) -> set[tuple[object, ...]]:
    return {(r.key, r.owners, r.tier, r.connection, r.mode, r.state) for r in rows}


async def _snapshot(store: Store, rows: list[SubscriptionRow]) -> None:
    store.writer.submit_subscriptions(rows)
    await store.writer.flush()


async def test_snapshots_are_whole_and_exact(store: Store) -> None:
    first = [_row(i, owners=("a", "b")) for i in range(1000)]
    await _snapshot(store, first)
    assert _as_set(await store.subscriptions.rows()) == _as_set(first)
    second = [_row(i, conn=None) for i in range(500, 700)]
    await _snapshot(store, second)
    got = await store.subscriptions.rows()
    assert _as_set(got) == _as_set(second)
    assert {r.state for r in got} == {"suspended"}
    assert await store.subscriptions.rows(state="placed") == []
    await _snapshot(store, [])
    assert await store.subscriptions.rows() == []


async def test_writer_snapshots_diff_and_match_the_latest(store: Store) -> None:
    store.writer.submit_subscriptions([_row(i) for i in range(300)])
    await store.writer.flush()
    later = T0 + timedelta(minutes=1)
    latest = [_row(i, at=later) for i in range(100, 300)] + [
        _row(i, conn=2, at=later) for i in range(300, 350)
    ]
    latest[0] = _row(100, owners=("g", "h"), at=later)
    store.writer.submit_subscriptions(latest)
    await store.writer.flush()
    got = {r.key.security_id: r for r in await store.subscriptions.rows()}
    assert _as_set(list(got.values())) == _as_set(latest)
    assert got[100].owners == ("g", "h")
    assert got[100].updated == later
    assert got[200].updated == T0  # unchanged: not rewritten by the diff
    assert got[320].connection == 2


async def test_snapshots_coalesce_latest_wins(store: Store) -> None:
    for n in range(1, 60):
        store.writer.submit_subscriptions(partial(_rows, n))
    await store.writer.flush()
    stats = store.writer.stats()
    assert stats["snapshots_submitted"] == 59
    assert stats["snapshots_written"] < 59
    assert len(await store.subscriptions.rows()) == 59


async def test_a_failed_write_is_followed_by_a_whole_rewrite(store: Store) -> None:
    """After a write that did not commit, what the table holds is unknown: the next snapshot clears it and
    writes everything, rather than a difference from what this process believes is there."""
    await _snapshot(store, [_row(i) for i in range(10)])
    with pytest.raises(RuntimeError, match="refused"):
        async with store.subscriptions.change(conv.sub_index([_row(i) for i in range(5, 8)])):
            raise RuntimeError("refused")  # e.g. the transaction failed
    # Rows the table holds but this process no longer knows about (another writer, a half-applied change):
    await store.gate.write(
        lambda conn: run_prepared(conn, [PUT.prepare(store.gate.write_dialect, [conv.sub_values(_row(99))])])
    )
    await _snapshot(store, [_row(i) for i in range(6, 9)])
    assert sorted(r.key.security_id for r in await store.subscriptions.rows()) == [6, 7, 8]


def _planner() -> Planner:
    p = Planner(FeedLimits(sockets_per_account=2, instruments_per_socket=10, instruments_per_message=5))
    keys = [InstrumentKey(FNO, i) for i in range(20)]
    p.add_group("B:NIFTY", Tier.B, keys[:6], FeedMode.QUOTE, "system", 0.0)
    p.add_group("A:1:X", Tier.A, keys[4:10], FeedMode.FULL, "1", 1.0)
    p.add_group("A:2:Y", Tier.A, keys[10:16], FeedMode.TICKER, "2", 2.0)
    return p


def test_rows_from_the_planner_with_every_connection_down() -> None:
    rows = {r.key.security_id: r for r in subscription_rows(_planner(), T0)}
    assert sorted(rows) == list(range(16))
    assert {r.state for r in rows.values()} == {"suspended"}
    assert {r.connection for r in rows.values()} == {None}
    assert rows[4].owners == ("A:1:X", "B:NIFTY")
    assert rows[4].tier is Tier.B
    assert rows[4].mode is FeedMode.FULL  # the richest owner's mode
    assert rows[7].tier is Tier.A
    assert rows[12].mode is FeedMode.TICKER


async def test_rows_from_a_live_planner_round_trip(store: Store) -> None:
    p = _planner()
    p.connection_up(0)
    p.connection_up(1)
    rows = subscription_rows(p, T0)
    placed = {k: (c, m) for c, ks in p.actual().items() for k, m in ks.items()}
    assert len(placed) == 16
    for r in rows:
        assert r.state == "placed"
        assert (r.connection, r.mode) == placed[r.key]
    p.connection_down(1)  # capacity 10 < 16: Tier A is suspended, LRU first
    rows2 = subscription_rows(p, T0)
    by_state = {s: {r.key.security_id for r in rows2 if r.state == s} for s in ("placed", "suspended")}
    assert by_state["placed"] | by_state["suspended"] == set(range(16))
    assert set(range(6)) <= by_state["placed"]  # Tier B stays
    assert all(r.connection == 0 for r in rows2 if r.state == "placed")
    store.writer.submit_subscriptions(lambda: subscription_rows(p, T0))
    await store.writer.flush()
    assert _as_set(await store.subscriptions.rows()) == _as_set(rows2)
    assert {r.key.security_id for r in await store.subscriptions.rows(tier=Tier.B)} == set(range(6))


async def test_snapshots_are_written_at_most_once_per_interval(db: Db) -> None:
    store = await Store.open(
        db.url, settings=db.settings.model_copy(update={"writer_snapshot_interval_s": 0.5})
    )
    try:
        store.writer.submit_subscriptions(_rows(3))
        await asyncio.sleep(0.2)  # the first snapshot goes at once (start-up: the table must be rewritten)
        assert len(await store.subscriptions.rows()) == 3
        store.writer.submit_subscriptions(_rows(5))
        store.writer.submit_log("STARTUP", actor="t")  # audit rows do not wait for the snapshot
        await asyncio.sleep(0.15)
        assert await store.audit.count() == 1
        assert len(await store.subscriptions.rows()) == 3  # not yet: too soon after the last one
        await asyncio.sleep(0.6)
        assert len(await store.subscriptions.rows()) == 5  # then without anyone flushing
        store.writer.submit_subscriptions(_rows(7))
        await store.writer.flush(timeout=5)  # flush does not wait for the interval
        assert len(await store.subscriptions.rows()) == 7
    finally:
        await store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_incremental_changes_keep_the_table_equal_to_the_planner(store: Store, seed: int) -> None:
    """The writer applies only what the planner changed (adds, removes, evictions, connection loss,
    recovery, rebalances, mode changes), yet after every flush the table equals a full recomputation."""
    rng = random.Random(seed)
    limits = FeedLimits(sockets_per_account=3, instruments_per_socket=40, instruments_per_message=7)
    p = Planner(limits)
    view = PlannerSubscriptions(p, SYSTEM_CLOCK)
    keys = [InstrumentKey(FNO, i) for i in range(150)]
    p.add_group("B:IDX", Tier.B, keys[:20], FeedMode.QUOTE, "system", 0.0)
    for c in range(3):
        p.connection_up(c)
    groups: list[str] = []
    for step in range(120):
        op = rng.random()
        if op < 0.45:
            gid = f"A:{step}"
            start = rng.randrange(0, 140)
            result = p.add_group(
                gid, Tier.A, keys[start : start + rng.randint(1, 25)], rng.choice(list(FeedMode)), "u", step
            )
            if result.accepted:
                groups.append(gid)
            groups = [g for g in groups if p.has_group(g)]
        elif op < 0.6 and groups:
            p.remove_group(groups.pop(rng.randrange(len(groups))), step)
        elif op < 0.7:
            p.connection_down(rng.randrange(3))
        elif op < 0.8:
            p.connection_up(rng.randrange(3))
        elif op < 0.88 and groups:
            group = rng.choice(groups)
            p.pin(group) if rng.random() < 0.5 else p.unpin(group)
        elif op < 0.94:
            p.rebalance()
        else:
            view.resync()
        store.writer.submit_subscriptions(view)
        if rng.random() < 0.3:
            await store.writer.flush(timeout=10)
            assert _as_set(await store.subscriptions.rows()) == _as_set(subscription_rows(p, T0)), step
    await store.writer.flush(timeout=10)
    assert _as_set(await store.subscriptions.rows()) == _as_set(subscription_rows(p, T0))


def test_changes_are_small_after_the_first_full_table() -> None:
    p = _planner()
    view = PlannerSubscriptions(p, SYSTEM_CLOCK)
    rows, gone, full = view.changes()
    assert full
    assert len(rows) == 16
    assert gone == []
    p.connection_up(0)
    p.remove_group("A:2:Y", 3.0)
    rows, gone, full = view.changes()
    assert not full
    assert {k.security_id for k in gone} == set(range(10, 16))  # nobody wants them any more
    assert {r.key.security_id for r in rows} == set(range(10))  # placed on connection 0 now
    assert view.changes()[:2] == ([], [])  # nothing changed since


def test_changes_come_out_a_chunk_at_a_time_with_rows_as_of_the_chunk() -> None:
    p = _planner()
    view = PlannerSubscriptions(p, SYSTEM_CLOCK)
    view.changes()  # the first full table
    p.connection_up(0)
    p.remove_group("A:2:Y", 3.0)  # 16 keys change: 10 placed, 6 gone
    seen: set[int] = set()
    first_rows, first_gone, full = view.changes(limit=5)
    assert not full
    assert len(first_rows) + len(first_gone) == 5
    assert view.pending() == 11
    seen |= {r.key.security_id for r in first_rows} | {k.security_id for k in first_gone}
    p.connection_down(0)  # a later chunk shows the state at the time it is taken
    while view.pending():
        rows, gone, _ = view.changes(limit=5)
        assert len(rows) + len(gone) <= 5
        assert all(r.connection is None for r in rows)
        seen |= {r.key.security_id for r in rows} | {k.security_id for k in gone}
    assert seen >= set(range(16))

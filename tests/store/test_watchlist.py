"""Watchlist rows: CRUD, unique planner group, LRU touch, eviction state, end of day by exchange."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tickgate.dhan.protocol import FeedMode
from tickgate.store import NotFoundError, Store, WatchlistState

T0 = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)
EXP = date(2026, 12, 29)


async def _add(store: Store, uid: int, symbol: str, exchange: str = "NSE", *, minutes: int = 0, **kw: object):  # type: ignore[no-untyped-def]
    return await store.watchlists.put(
        uid,
        symbol,
        exchange=exchange,
        group_id=f"A:{uid}:{symbol}:{kw.get('expiry', EXP)}",
        mode=FeedMode.QUOTE,
        expiry=kw.get("expiry", EXP),  # type: ignore[arg-type]
        strikes=25,
        at=T0 + timedelta(minutes=minutes),
    )


async def test_add_get_list_remove(store: Store) -> None:
    alice, _ = await store.users.create("alice")
    bob, _ = await store.users.create("bob")
    w = await store.watchlists.put(
        alice.id,
        " reliance ",
        exchange="nse",
        group_id="A:1:RELIANCE",
        mode=FeedMode.FULL,
        expiry=EXP,
        strikes=25,
        at=T0,
    )
    assert (w.symbol, w.exchange, w.expiry, w.strikes, w.mode) == ("RELIANCE", "NSE", EXP, 25, FeedMode.FULL)
    assert w.created == w.last_used == T0
    assert w.state is WatchlistState.ACTIVE
    assert await store.watchlists.get(w.id) == w
    assert await store.watchlists.by_group("A:1:RELIANCE") == w
    stock = await store.watchlists.put(
        bob.id, "INFY", exchange="NSE", group_id="A:2:INFY", mode=FeedMode.TICKER
    )
    assert stock.expiry is None
    assert stock.strikes is None
    assert await store.watchlists.rows(alice.id) == [w]
    assert await store.watchlists.rows() == [w, stock]
    # Only the owner removes (None means admin / system).
    assert await store.watchlists.remove(w.id, bob.id) is None
    assert await store.watchlists.remove(w.id, alice.id) == w
    assert await store.watchlists.remove(w.id, alice.id) is None
    assert await store.watchlists.get(w.id) is None
    assert await store.watchlists.remove(stock.id) == stock
    assert await store.watchlists.rows() == []


async def test_group_id_is_unique_and_user_must_exist(store: Store) -> None:
    """A put of an existing group starts its row over (same id, active, new times): one row per group."""
    alice, _ = await store.users.create("alice")
    first = await _add(store, alice.id, "TCS")
    await store.watchlists.set_state([first.group_id], WatchlistState.EVICTED, reason="capacity")
    again = await _add(store, alice.id, "TCS", minutes=7)
    assert again.id == first.id
    assert (await store.watchlists.get(first.id)) == again
    assert again.state is WatchlistState.ACTIVE
    assert again.created == T0 + timedelta(minutes=7)
    with pytest.raises(NotFoundError):
        await _add(store, 4242, "TCS")
    with pytest.raises(ValueError, match="naive"):
        await store.watchlists.put(
            alice.id, "X", exchange="NSE", group_id="g", mode=FeedMode.QUOTE, at=datetime(2026, 1, 1)
        )
    assert len(await store.watchlists.rows()) == 1


async def test_touch_orders_recovery_least_recently_used_first(store: Store) -> None:
    u, _ = await store.users.create("u")
    a = await _add(store, u.id, "A", minutes=0)
    b = await _add(store, u.id, "B", minutes=1)
    c = await _add(store, u.id, "C", minutes=2)
    assert [w.id for w in await store.watchlists.active()] == [a.id, b.id, c.id]
    store.writer.submit_touch(a.id, T0 + timedelta(minutes=5))
    await store.writer.flush()
    assert [w.id for w in await store.watchlists.active()] == [b.id, c.id, a.id]
    got = await store.watchlists.get(a.id)
    assert got is not None
    assert got.last_used == T0 + timedelta(minutes=5)
    assert got.created == T0


async def test_evicted_rows_stay_visible_but_are_not_recovered(store: Store) -> None:
    u, _ = await store.users.create("u")
    a = await _add(store, u.id, "A")
    b = await _add(store, u.id, "B")
    n = await store.watchlists.set_state([a.group_id, "A:unknown"], WatchlistState.EVICTED, reason="capacity")
    assert n == 1
    assert [w.id for w in await store.watchlists.active()] == [b.id]
    evicted = await store.watchlists.get(a.id)
    assert evicted is not None
    assert evicted.state is WatchlistState.EVICTED
    assert evicted.state_reason == "capacity"
    assert [w.id for w in await store.watchlists.rows(u.id, state=WatchlistState.EVICTED)] == [a.id]
    assert await store.watchlists.set_state([a.group_id], WatchlistState.ACTIVE) == 1
    assert [w.id for w in await store.watchlists.active()] == [a.id, b.id]
    assert await store.watchlists.set_state([], WatchlistState.ACTIVE) == 0


async def test_end_of_day_clears_by_exchange(store: Store) -> None:
    u, _ = await store.users.create("u")
    nse = await _add(store, u.id, "NIFTY", "NSE")
    bse = await _add(store, u.id, "SENSEX", "BSE")
    mcx = await _add(store, u.id, "CRUDEOIL", "MCX")
    await store.watchlists.set_state([bse.group_id], WatchlistState.EVICTED)
    cleared = await store.watchlists.clear(["nse", "BSE"])
    assert [w.id for w in cleared] == [nse.id, bse.id]  # evicted rows go too
    assert [w.id for w in await store.watchlists.rows()] == [mcx.id]
    assert await store.watchlists.clear([]) == []
    assert [w.id for w in await store.watchlists.clear(["MCX"])] == [mcx.id]
    again = await _add(store, u.id, "NIFTY", "NSE")  # the group id is free again next day
    assert [w.id for w in await store.watchlists.clear()] == [again.id]
    assert await store.watchlists.rows() == []


async def test_put_starts_an_evicted_row_over_in_one_statement(store: Store) -> None:
    u, _ = await store.users.create("putter")
    group = f"A:{u.id}:NSE:TCS:{EXP}"
    first = await store.watchlists.put(
        u.id, "tcs", exchange="nse", group_id=group, mode=FeedMode.QUOTE, expiry=EXP, strikes=25, at=T0
    )
    assert (first.symbol, first.exchange, first.state) == ("TCS", "NSE", WatchlistState.ACTIVE)
    await store.watchlists.set_state([group], WatchlistState.EVICTED, reason="capacity limit: test")
    later = T0 + timedelta(minutes=7)
    again = await store.watchlists.put(
        u.id, "TCS", exchange="NSE", group_id=group, mode=FeedMode.FULL, expiry=EXP, strikes=11, at=later
    )
    assert again.id == first.id  # the same row, started over
    got = await store.watchlists.get(first.id)
    assert got is not None
    assert (got.state, got.state_reason, got.mode, got.strikes) == (
        WatchlistState.ACTIVE,
        None,
        FeedMode.FULL,
        11,
    )
    assert got.created == later
    assert len(await store.watchlists.rows(u.id)) == 1
    with pytest.raises(NotFoundError):
        await store.watchlists.put(999_999, "TCS", exchange="NSE", group_id="A:999999:x", mode=FeedMode.QUOTE)


async def test_queued_eviction_marks_spare_rows_added_again_since(store: Store) -> None:
    """An eviction decided at t, written later, must not mark a row its owner re-added after t."""
    u, _ = await store.users.create("marks")
    old = await _add(store, u.id, "INFY", minutes=0)
    readded = await _add(store, u.id, "SBIN", minutes=0)
    decided = T0 + timedelta(minutes=1)
    await store.watchlists.put(
        u.id,
        "SBIN",
        exchange="NSE",
        group_id=readded.group_id,
        mode=FeedMode.QUOTE,
        at=decided + timedelta(seconds=1),
    )
    store.writer.submit_watchlist_state(
        [old.group_id, readded.group_id], WatchlistState.EVICTED, reason="capacity limit: x", at=decided
    )
    await store.writer.flush(timeout=10)
    states = {w.symbol: w.state for w in await store.watchlists.rows(u.id)}
    assert states == {"INFY": WatchlistState.EVICTED, "SBIN": WatchlistState.ACTIVE}

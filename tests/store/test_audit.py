"""The audit log: planner events and generic rows in, newest-first keyset pages out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tickgate.dhan.protocol import FeedMode
from tickgate.planner.types import EventKind, PlannerEvent, Tier
from tickgate.store import AuditAction, Store, action_for

from .conftest import log_now

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_every_planner_event_kind_has_an_action() -> None:
    for kind in EventKind:
        assert action_for(kind) in AuditAction
    assert action_for(EventKind.EOD) is AuditAction.EOD_CLEANUP
    assert action_for(EventKind.MODE_CHANGE) == "MODE_CHANGE"


async def test_planner_events_are_logged_field_by_field(store: Store) -> None:
    events = [
        PlannerEvent(EventKind.ADD, "A:7:RELIANCE", "7", Tier.A, count=52, mode=FeedMode.QUOTE, at=123.5),
        PlannerEvent(EventKind.EVICT, "A:3:INFY", "3", Tier.A, count=50, reason="capacity limit"),
        PlannerEvent(EventKind.MOVE, None, None, None, connection=1, target=4, count=20),
        PlannerEvent(EventKind.EOD, "A:7:RELIANCE", "7", Tier.A, count=52, reason="EOD"),
    ]
    assert store.writer.submit_events(events, "planner", at=T0, details={"request": "r-1"}) == 4
    assert store.writer.submit_events([], "planner") == 0
    await store.writer.flush(timeout=30)
    page = await store.audit.page()
    assert [e.action for e in page.entries] == ["EOD_CLEANUP", "MOVE", "EVICT", "ADD"]
    add = page.entries[-1]
    assert (add.at, add.actor, add.group_id, add.owner, add.tier, add.count, add.mode) == (
        T0,
        "planner",
        "A:7:RELIANCE",
        "7",
        Tier.A,
        52,
        FeedMode.QUOTE,
    )
    assert add.details == {"planner_at": 123.5, "request": "r-1"}
    move = page.entries[1]
    assert (move.connection, move.target, move.group_id, move.tier) == (1, 4, None, None)
    assert page.entries[2].reason == "capacity limit"
    assert page.next_cursor is None


async def test_generic_rows_and_validation(store: Store) -> None:
    await log_now(
        store,
        "watchlist_add",
        actor="alice",
        group_id="g" * 500,
        owner="alice",
        tier="A",
        count=3,
        details={"symbol": "TCS"},
        at=T0,
    )
    e = (await store.audit.page()).entries[0]
    assert e.action == "WATCHLIST_ADD"
    assert e.details == {"symbol": "TCS"}
    assert e.group_id == "g" * 200  # clipped, never refused
    # a bad row is refused on the caller's stack, not later in the writer
    with pytest.raises(ValueError, match="UPPER_SNAKE"):
        store.writer.submit_log("not an action!", actor="x")
    with pytest.raises(ValueError, match="actor"):
        store.writer.submit_log("STARTUP", actor="")
    with pytest.raises(ValueError, match="naive"):
        store.writer.submit_log("STARTUP", actor="x", at=datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        store.writer.submit_log("STARTUP", actor="x", details={"not json": object()})
    assert await store.audit.count() == 1


async def test_pages_newest_first_cover_everything_once(store: Store) -> None:
    actions = ["SUBSCRIBE", "EVICT", "EOD_CLEANUP"]
    for i in range(53):
        await log_now(store, actions[i % 3], actor="t", count=i, at=T0 + timedelta(seconds=i))
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await store.audit.page(limit=10, before=cursor)
        pages += 1
        seen += [e.count for e in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        # an append between pages does not shift the next page (keyset, not offset)
        await log_now(store, "STARTUP", actor="late", at=T0)
    assert seen == list(range(52, -1, -1))
    assert pages == 6


async def test_filters_since_until_action(store: Store) -> None:
    for i in range(30):
        await log_now(
            store,
            ["SUBSCRIBE", "EVICT", "EOD_CLEANUP"][i % 3],
            actor="t",
            count=i,
            at=T0 + timedelta(minutes=i),
        )
    since = await store.audit.page(since=T0 + timedelta(minutes=25), limit=100)
    assert [e.count for e in since.entries] == [29, 28, 27, 26, 25]
    window = await store.audit.page(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=13))
    assert [e.count for e in window.entries] == [12, 11, 10]
    evicts = await store.audit.page(action="evict", limit=4)
    assert [e.count for e in evicts.entries] == [28, 25, 22, 19]
    rest = await store.audit.page(action="EVICT", limit=100, before=evicts.next_cursor)
    assert [e.count for e in rest.entries] == [16, 13, 10, 7, 4, 1]
    both = await store.audit.page(
        action=["EVICT", "EOD_CLEANUP"], since=T0 + timedelta(minutes=24), limit=100
    )
    assert [e.count for e in both.entries] == [29, 28, 26, 25]
    ist = await store.audit.page(since=(T0 + timedelta(minutes=28)).astimezone(timedelta_tz(5, 30)))
    assert [e.count for e in ist.entries] == [29, 28]
    assert (await store.audit.page(limit=0)).entries[0].count == 29  # clamped to at least one
    assert len((await store.audit.page(limit=10**6)).entries) == 30
    assert await store.audit.count("evict") == 10
    last = await store.audit.last()
    assert last is not None
    assert last.count == 29


def timedelta_tz(h: int, m: int):  # type: ignore[no-untyped-def]
    from datetime import timezone

    return timezone(timedelta(hours=h, minutes=m))

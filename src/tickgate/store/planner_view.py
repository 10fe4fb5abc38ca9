"""The ``subscriptions`` table's content, computed from the planner (the table is a materialised view of it,
kept for introspection and post-mortems; restart recovery never reads it back as truth)."""

from __future__ import annotations

from datetime import datetime

from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.planner import Planner, Tier
from tickgate.store.types import SubscriptionRow, utc


def subscription_rows(planner: Planner, at: datetime) -> list[SubscriptionRow]:
    """One row per desired instrument (suspended ones included): owners (group ids, sorted), tier (B when
    any owner is Tier B), and where it is placed now. Suspended keys carry their desired mode."""
    at = utc(at)
    owners: dict[InstrumentKey, list[str]] = {}
    richest: dict[InstrumentKey, FeedMode] = {}
    tier_b: set[InstrumentKey] = set()
    for g in planner.groups():
        for k in planner.group_keys(g.group):
            owners.setdefault(k, []).append(g.group)
            cur = richest.get(k)
            if cur is None or cur.rank < g.mode.rank:
                richest[k] = g.mode
            if g.tier is Tier.B:
                tier_b.add(k)
    placed: dict[InstrumentKey, tuple[int, FeedMode]] = {}
    for c, keys in planner.actual().items():
        for k, m in keys.items():
            placed[k] = (c, m)
    rows: list[SubscriptionRow] = []
    for k, groups in owners.items():
        where = placed.get(k)
        conn: int | None
        if where is not None:
            conn, mode = where
        else:
            # Unplaced means every owner is suspended: the richest owner mode is the one it will resume in.
            conn, mode = None, richest[k]
        rows.append(
            SubscriptionRow(
                key=k,
                owners=tuple(sorted(groups)),
                tier=Tier.B if k in tier_b else Tier.A,
                connection=conn,
                mode=mode,
                state="placed" if where is not None else "suspended",
                updated=at,
            )
        )
    return rows

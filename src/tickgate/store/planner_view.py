"""The ``subscriptions`` table's content, computed from the planner (the table is a materialised view of it,
kept for introspection and post-mortems; restart recovery never reads it back as truth)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime

from tickgate.clock import Clock
from tickgate.dhan.protocol import InstrumentKey
from tickgate.planner import KeyState, Planner, Tier
from tickgate.store.types import SubscriptionRow, utc


def _row(key: InstrumentKey, state: KeyState, at: datetime) -> SubscriptionRow:
    return SubscriptionRow(
        key=key,
        owners=state.owners,
        tier=Tier.B if state.tier_b else Tier.A,
        connection=state.connection,
        mode=state.mode,
        state="placed" if state.connection is not None else "suspended",
        updated=at,
    )


def subscription_rows(
    planner: Planner, at: datetime, keys: Iterable[InstrumentKey] | None = None
) -> list[SubscriptionRow]:
    """One row per desired instrument (or per desired one of ``keys``), suspended ones included: owners
    (group ids, sorted), tier (B when any owner is Tier B), and where it is placed now. Suspended keys carry
    the richest mode among their owners: the one they will resume in."""
    at = utc(at)
    return [_row(k, s, at) for k, s in planner.key_states(keys).items()]


class PlannerSubscriptions:
    """The writer's source of subscription-table changes: rows of the keys the planner changed since the
    last write (a chain add touches ~100 rows, not 25,000), and a full rewrite the first time and after any
    write that failed (:meth:`resync`). Submitted to the writer after each planner change; computed only
    when the writer is about to write, on the event loop's thread like every planner call, and at most
    ``limit`` keys at a time: a second of evictions is ~10,000 keys, and building all their rows at once
    stalled the event loop (docs/decisions/0002-measured-tradeoffs.md)."""

    def __init__(self, planner: Planner, clock: Clock) -> None:
        self.planner = planner
        self.clock = clock
        self._full = True
        self._pending: dict[InstrumentKey, None] = {}  # changed, not handed out yet (oldest first)

    def changes(self, limit: int | None = None) -> tuple[list[SubscriptionRow], list[InstrumentKey], bool]:
        """(rows to upsert, keys to delete, whether the rows are the whole table); a diff covers at most
        ``limit`` changed keys, the rest wait for the next call. Rows are the planner's state now."""
        at = self.clock.utcnow()
        changed = self.planner.take_changed()
        if self._full:
            self._full = False
            self._pending.clear()
            return subscription_rows(self.planner, at), [], True
        self._pending.update(dict.fromkeys(changed))
        if limit is None or len(self._pending) <= limit:
            keys, self._pending = list(self._pending), {}
        else:
            keys = list(itertools.islice(self._pending, limit))
            for k in keys:
                del self._pending[k]
        rows = subscription_rows(self.planner, at, keys)
        present = {r.key for r in rows}
        return rows, [k for k in keys if k not in present], False

    def pending(self) -> int:
        return len(self._pending)

    def resync(self) -> None:
        """The last change set was not written: rewrite the whole table next time."""
        self._full = True

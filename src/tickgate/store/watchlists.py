"""Watchlist rows: the desired Tier A, one row per user and chain, that a restart re-subscribes.

A user's add and remove are awaited (acknowledged once durable); use times and eviction marks ride the
writer's batches (:data:`TOUCH`, :data:`MARK`, :data:`WINDOW`), since nothing waits for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tickgate.dhan.protocol import FeedMode
from tickgate.store import rows as conv
from tickgate.store import schema as tbl
from tickgate.store.gate import Repository, where_given
from tickgate.store.prepared import DriverStatement, upsert
from tickgate.store.types import NotFoundError, WatchlistEntry, WatchlistState, utc

_W = tbl.watchlist
_CHUNK = 500  # group ids per IN (...) list

# The hot path of a watchlist add: an upsert is not in SQLAlchemy's compiled cache (its ``excluded`` columns
# are built per statement), and compiling it on every add cost more than running it: prepared once.
PUT = DriverStatement(lambda d, names: upsert(d, _W, ("group_id",), names).returning(_W.c.id), insert=True)
TOUCH = DriverStatement(
    lambda _d, _n: sa.update(_W).where(_W.c.id == sa.bindparam("wid")).values(last_used=sa.bindparam("at"))
)
"""A row used at ``at`` (LRU), by the writer."""
# Only rows older than the decision are marked: a chain evicted and at once added again by its owner (a newer
# ``created``) stays active.
MARK = DriverStatement(
    lambda _d, _n: (
        sa.update(_W)
        .where(_W.c.group_id == sa.bindparam("group"), _W.c.created <= sa.bindparam("at"))
        .values(state=sa.bindparam("state"), state_reason=sa.bindparam("reason"))
    )
)
"""A chain's rows evicted (or active again) by a decision at ``at``, by the writer."""
WINDOW = DriverStatement(
    lambda _d, _n: sa.update(_W).where(_W.c.group_id == sa.bindparam("group")).values(atm=sa.bindparam("atm"))
)
"""The ATM a chain's window sits on (set when placed and at each recentre), by the writer."""


class Watchlists(Repository):
    """``store.watchlists``."""

    async def get(self, watchlist_id: int) -> WatchlistEntry | None:
        rows = await self._gate.fetch(sa.select(_W).where(_W.c.id == watchlist_id))
        return conv.to_watchlist(rows[0]) if rows else None

    async def by_group(self, group_id: str) -> WatchlistEntry | None:
        rows = await self._gate.fetch(sa.select(_W).where(_W.c.group_id == group_id))
        return conv.to_watchlist(rows[0]) if rows else None

    async def rows(
        self, user_id: int | None = None, *, state: WatchlistState | None = None
    ) -> list[WatchlistEntry]:
        """A user's rows (everyone's with ``user_id=None``), oldest first."""
        stmt = where_given(
            sa.select(_W).order_by(_W.c.created, _W.c.id),
            (_W.c.user_id, user_id),
            (_W.c.state, None if state is None else state.value),
        )
        return [conv.to_watchlist(r) for r in await self._gate.fetch(stmt)]

    async def active(self) -> list[WatchlistEntry]:
        """Restart recovery's desired Tier A: active rows, least recently used first (re-adding them in this
        order rebuilds the planner's LRU order)."""
        stmt = (
            sa.select(_W).where(_W.c.state == WatchlistState.ACTIVE.value).order_by(_W.c.last_used, _W.c.id)
        )
        return [conv.to_watchlist(r) for r in await self._gate.fetch(stmt)]

    async def put(
        self,
        user_id: int,
        symbol: str,
        *,
        exchange: str,
        group_id: str,
        mode: FeedMode,
        expiry: date | None = None,
        strikes: int | None = None,
        at: datetime | None = None,
    ) -> WatchlistEntry:
        """Insert an active row for ``group_id``, or start its existing row over (an evicted chain added
        again keeps its id and becomes active and new). One statement, committed when this returns: the
        hot path of a watchlist add. ``NotFoundError`` if the user does not exist."""
        when = utc(at) if at is not None else self._now()
        values = conv.watchlist_values(user_id, symbol, exchange, group_id, mode, expiry, strikes, when)
        sql, params = PUT.prepare(self._gate.write_dialect, [values])

        def tx(conn: Connection) -> int:
            try:
                return int(conn.exec_driver_sql(sql, params[0]).scalar_one())
            except IntegrityError as e:  # the group id is the conflict target: only the user can be missing
                raise NotFoundError(f"no user {user_id}") from e

        wid = await self._gate.write(tx)
        return conv.to_watchlist({"id": wid, **values})

    async def remove(self, watchlist_id: int, user_id: int | None = None) -> WatchlistEntry | None:
        """Delete a row (only the owner's when ``user_id`` is given) and return it; None if there is none."""
        cond = [_W.c.id == watchlist_id]
        if user_id is not None:
            cond.append(_W.c.user_id == user_id)

        def tx(conn: Connection) -> WatchlistEntry | None:
            row = conn.execute(sa.delete(_W).where(*cond).returning(*_W.c)).mappings().first()
            return conv.to_watchlist(row) if row else None

        return await self._gate.write(tx)

    async def set_state(
        self, group_ids: Iterable[str], state: WatchlistState, *, reason: str | None = None
    ) -> int:
        """Mark the rows of these planner groups evicted (lost to capacity) or active again; returns how
        many rows changed. Evicted rows stay visible but are not re-subscribed by a restart."""
        gids = list(dict.fromkeys(group_ids))
        if not gids:
            return 0

        def tx(conn: Connection) -> int:
            n = 0
            for i in range(0, len(gids), _CHUNK):
                stmt = (
                    sa.update(_W)
                    .where(_W.c.group_id.in_(gids[i : i + _CHUNK]))
                    .values(state=state.value, state_reason=reason)
                )
                n += conn.execute(stmt).rowcount
            return n

        return await self._gate.write(tx)

    async def clear(self, exchanges: Iterable[str] | None = None) -> list[WatchlistEntry]:
        """End of day: delete every row (of these exchanges: NSE/BSE close at 15:30, MCX late evening) in
        one transaction and return them, so the caller can release their groups and log the cleanup."""
        stmt = sa.delete(_W)
        if exchanges is not None:
            ex = sorted({e.strip().upper() for e in exchanges})
            if not ex:
                return []
            stmt = stmt.where(_W.c.exchange.in_(ex))

        def tx(conn: Connection) -> list[WatchlistEntry]:
            res = conn.execute(stmt.returning(*_W.c))
            return sorted((conv.to_watchlist(r) for r in res.mappings()), key=lambda w: w.id)

        return await self._gate.write(tx)

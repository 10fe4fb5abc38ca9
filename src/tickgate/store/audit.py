"""The audit log: one row per change the feed saw, appended by the writer (:data:`INSERT`), read here."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa

from tickgate.store import rows as conv
from tickgate.store import schema as tbl
from tickgate.store.gate import Repository, where_given
from tickgate.store.prepared import DriverStatement
from tickgate.store.types import AuditEntry, AuditPage, utc

PAGE_MAX = 1000
_L = tbl.subscription_log
INSERT = DriverStatement(lambda _d, _n: sa.insert(_L), insert=True)


class AuditLog(Repository):
    """``store.audit``."""

    async def page(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        action: str | Iterable[str] | None = None,
        group_id: str | None = None,
        actor: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> AuditPage:
        """The audit log newest first, filtered; keyset-paginated: pass the page's ``next_cursor`` as
        ``before`` for the next (older) page. Stable under concurrent appends, unlike an offset."""
        limit = max(1, min(int(limit), PAGE_MAX))
        stmt = sa.select(_L).order_by(_L.c.id.desc()).limit(limit + 1)
        if since is not None:
            stmt = stmt.where(_L.c.at >= utc(since))
        if until is not None:
            stmt = stmt.where(_L.c.at < utc(until))
        if action is not None:
            actions = [action] if isinstance(action, str) else list(action)
            stmt = stmt.where(_L.c.action.in_([a.strip().upper() for a in actions]))
        stmt = where_given(stmt, (_L.c.group_id, group_id), (_L.c.actor, actor))
        if before is not None:
            stmt = stmt.where(_L.c.id < before)
        rows = await self._gate.fetch(stmt)
        entries = tuple(conv.to_audit(r) for r in rows[:limit])
        return AuditPage(entries, entries[-1].id if len(rows) > limit else None)

    async def count(self, action: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(_L)
        if action is not None:
            stmt = stmt.where(_L.c.action == action.strip().upper())
        async with self._gate.read() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def last(self) -> AuditEntry | None:
        page = await self.page(limit=1)
        return page.entries[0] if page.entries else None

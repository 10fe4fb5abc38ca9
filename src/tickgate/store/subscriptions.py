"""The ``subscriptions`` table: an output, the planner's plan as last written, for dashboards and audits.

It follows the planner's delta (a chain's rows per user action, applied by key). A full snapshot is written
as the difference from what this process last wrote, and whole — cleared and rewritten — the first time
after open and after any failed write, when what the table holds is unknown. A restart never reads it back
to decide anything (see :mod:`tickgate.store.core`), so a crash cannot resurrect a phantom subscription.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime

import sqlalchemy as sa

from tickgate.planner.types import Tier
from tickgate.store import rows as conv
from tickgate.store import schema as tbl
from tickgate.store.gate import Repository, WriteGate, where_given
from tickgate.store.prepared import DriverStatement, Prepared, upsert
from tickgate.store.types import SubscriptionRow

_S = tbl.subscriptions
PUT = DriverStatement(lambda d, names: upsert(d, _S, ("segment", "security_id"), names), insert=True)
DELETE = DriverStatement(
    lambda _d, _n: sa.delete(_S).where(
        _S.c.segment == sa.bindparam("segment"), _S.c.security_id == sa.bindparam("security_id")
    )
)
CLEAR = DriverStatement(lambda _d, _n: sa.delete(_S))

Change = conv.SubIndex | conv.SubDelta
"""A whole table (by key) or a delta."""


class Subscriptions(Repository):
    """``store.subscriptions``: reads, and the diff state of the one writer of the table."""

    def __init__(self, gate: WriteGate, now: Callable[[], datetime]) -> None:
        super().__init__(gate, now)
        self._lock = asyncio.Lock()  # one writer of the table at a time: the diff base is shared
        self._written: dict[conv.SubKey, conv.SubSig] | None = None  # None: unknown (rewrite whole)

    async def rows(self, *, state: str | None = None, tier: Tier | None = None) -> list[SubscriptionRow]:
        stmt = where_given(
            sa.select(_S).order_by(_S.c.segment, _S.c.security_id),
            (_S.c.state, state),
            (_S.c.tier, None if tier is None else tier.value),
        )
        return [conv.to_subscription(r) for r in await self._gate.fetch(stmt)]

    @asynccontextmanager
    async def change(self, subs: Change) -> AsyncIterator[Callable[[], list[Prepared]]]:
        """Write ``subs`` inside this block: it yields the function that prepares the statements (call it in
        the transaction). When the block exits cleanly the table is known to hold the result; when it raises,
        the table is unknown and the next full snapshot is written whole."""
        async with self._lock:
            previous = self._written
            self._written = None  # unknown until this commits
            yield lambda: self.statements(subs, previous)
            if isinstance(subs, conv.SubDelta):
                if previous is not None:
                    for k in subs.gone:
                        previous.pop(k, None)
                    previous.update((k, sig) for k, (sig, _) in subs.upserts.items())
                self._written = previous
            else:
                self._written = {k: sig for k, (sig, _) in subs.items()}

    def statements(self, subs: Change, previous: dict[conv.SubKey, conv.SubSig] | None) -> list[Prepared]:
        """A change of the table: a delta applied by key (correct on top of whatever the table holds), a full
        table as the difference from ``previous`` (what was last written), or whole (cleared first)."""
        d = self._gate.write_dialect
        gone: Iterable[conv.SubKey]
        if isinstance(subs, conv.SubDelta):
            gone, put = subs.gone, [r for _, r in subs.upserts.values()]
        elif previous is None:
            gone, put = (), [r for _, r in subs.values()]
        else:
            gone = [k for k in previous if k not in subs]
            put = [r for k, (sig, r) in subs.items() if previous.get(k) != sig]
        whole = not isinstance(subs, conv.SubDelta) and previous is None
        out = [CLEAR.prepare(d, [{}])] if whole else []
        out.append(DELETE.prepare(d, [{"segment": seg, "security_id": sid} for seg, sid in gone]))
        out.append(PUT.prepare(d, [conv.sub_values(r) for r in put]))
        return out

"""The ATM cache: the last strike window chosen per (underlying, expiry), so a restart centres at once.

Written by the writer (:data:`PUT`, latest window per chain wins); pruned of past expiries every pre-open."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tickgate.store import rows as conv
from tickgate.store import schema as tbl
from tickgate.store.gate import Repository
from tickgate.store.prepared import DriverStatement, upsert
from tickgate.store.types import AtmEntry

_A = tbl.atm_cache
PUT = DriverStatement(lambda d, names: upsert(d, _A, ("underlying", "expiry"), names), insert=True)


class AtmCache(Repository):
    """``store.atm``."""

    async def get(self, underlying: str, expiry: date) -> AtmEntry | None:
        rows = await self._gate.fetch(
            sa.select(_A).where(_A.c.underlying == underlying, _A.c.expiry == expiry)
        )
        return conv.to_atm(rows[0]) if rows else None

    async def all(self) -> list[AtmEntry]:
        return [
            conv.to_atm(r)
            for r in await self._gate.fetch(sa.select(_A).order_by(_A.c.underlying, _A.c.expiry))
        ]

    async def prune(self, today: date) -> int:
        """Drop cached windows of expiries before ``today`` (the daily roll); how many."""

        def tx(conn: Connection) -> int:
            return conn.execute(sa.delete(_A).where(_A.c.expiry < today)).rowcount

        return await self._gate.write(tx)

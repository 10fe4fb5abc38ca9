"""Small named JSON values the service keeps across restarts (e.g. when each exchange's end of day ran)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tickgate.store import rows as conv
from tickgate.store import schema as tbl
from tickgate.store.gate import Repository
from tickgate.store.prepared import upsert
from tickgate.store.types import JSONValue


class Meta(Repository):
    """``store.meta``."""

    async def get(self, key: str) -> JSONValue:
        """The value of ``key``, None if unset."""
        rows = await self._gate.fetch(sa.select(tbl.meta.c.value).where(tbl.meta.c.key == key))
        return rows[0]["value"] if rows else None

    async def set(self, key: str, value: JSONValue) -> None:
        values = {"key": key, "value": conv._check_json(value), "updated": self._now()}
        stmt = upsert(self._gate.write_dialect.name, tbl.meta, ("key",), values, values)

        def tx(conn: Connection) -> None:
            conn.execute(stmt)

        await self._gate.write(tx)

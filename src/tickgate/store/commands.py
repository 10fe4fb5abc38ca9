"""Commands by idempotency key (``store.commands``): what the gateway answered each one, first answer kept."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tickgate.store import schema as tbl
from tickgate.store.gate import Repository
from tickgate.store.prepared import insert_new


class Commands(Repository):
    """``store.commands``."""

    async def answer(self, key: str) -> tuple[int, Any] | None:
        """The (status, body) recorded for ``key``, None if the command was never answered."""
        t = tbl.command_log
        rows = await self._gate.fetch(sa.select(t.c.status, t.c.body).where(t.c.key == key))
        return (int(rows[0]["status"]), rows[0]["body"]) if rows else None

    async def record(self, key: str, op: str, status: int, body: Any) -> None:
        """Keep the answer to ``key``; an answer already kept stays (the first one wins)."""
        values = {"key": key, "op": op, "status": status, "body": body, "at": self._now()}
        stmt = insert_new(self._gate.write_dialect.name, tbl.command_log, ("key",), values)

        def tx(conn: Connection) -> None:
            conn.execute(stmt)

        await self._gate.write(tx)

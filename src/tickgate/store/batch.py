"""One transaction of the background writer: audit rows, watchlist touches, marks and windows, ATM
windows and a subscriptions change, together. This is the whole of what
:class:`~tickgate.store.writer.StoreWriter` needs from the database (its
:class:`~tickgate.store.writer.BatchSink`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Connection

from tickgate.store import atm, audit, watchlists
from tickgate.store import rows as conv
from tickgate.store.gate import WriteGate
from tickgate.store.prepared import Prepared, run_prepared
from tickgate.store.subscriptions import Change, Subscriptions
from tickgate.store.types import utc


class BatchWriter:
    """Writes the writer's batches through the gate as background writes (they yield to awaited ones)."""

    def __init__(self, gate: WriteGate, subscriptions: Subscriptions, subs_chunk: int) -> None:
        """``subs_chunk``: a whole table larger than this is written off the event loop."""
        self._gate = gate
        self._subscriptions = subscriptions
        self._subs_chunk = subs_chunk

    async def write_batch(
        self,
        audit_rows: list[conv.Row],
        atm_rows: list[conv.Row],
        subs: Change | None,
        *,
        touches: Sequence[tuple[int, datetime]] = (),
        marks: Sequence[conv.StateMark] = (),
        windows: Sequence[tuple[str, float]] = (),
    ) -> None:
        """One transaction. The subscriptions table changes by one chain per user action, so it is never
        rewritten whole on the hot path (see :mod:`tickgate.store.subscriptions`)."""
        # Prepared inside the transaction function: for a SQLite file that is on the loop either way; on
        # PostgreSQL it runs within run_sync, and on the writer thread when a SQLite write waits there.
        if subs is None:
            await self._gate.write(
                lambda conn: run_prepared(
                    conn, self._statements(audit_rows, atm_rows, touches, marks, windows)
                ),
                background=True,
            )
            return
        async with self._subscriptions.change(subs) as subs_statements:

            def tx(conn: Connection) -> None:
                run_prepared(conn, self._statements(audit_rows, atm_rows, touches, marks, windows))
                run_prepared(conn, subs_statements())

            # A whole table (25,000 rows at first write) would hold the loop too long: off the loop.
            whole = not isinstance(subs, conv.SubDelta) and len(subs) > self._subs_chunk
            await self._gate.write(tx, background=True, inline=not whole)

    def _statements(
        self,
        audit_rows: list[conv.Row],
        atm_rows: list[conv.Row],
        touches: Sequence[tuple[int, datetime]],
        marks: Sequence[conv.StateMark],
        windows: Sequence[tuple[str, float]] = (),
    ) -> list[Prepared]:
        d = self._gate.write_dialect
        return [
            audit.INSERT.prepare(d, audit_rows),
            watchlists.TOUCH.prepare(d, [{"wid": wid, "at": utc(at)} for wid, at in touches]),
            watchlists.MARK.prepare(
                d,
                [
                    {"group": g, "at": m.at, "state": m.state, "reason": m.reason}
                    for m in marks
                    for g in m.groups
                ],
            ),
            atm.PUT.prepare(d, atm_rows),
            watchlists.WINDOW.prepare(d, [{"group": g, "atm": a} for g, a in windows]),
        ]

"""The day's last quotes, saved at each exchange's end of day and read back at start.

Why: after the close Dhan's feed is silent, so a restart in the evening would show blank chains until the
next morning. The last quote of every instrument of the closing exchange is saved (one row per instrument,
replaced each day); at start they price the quote store as ``saved`` (never over a live price).

A row saved on an earlier trading day than the one it is read on describes a finished day: its last price is
that day's close, which is the *previous* close of the day it is read on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.feed.quotes import RestQuote
from tickgate.store import schema as tbl
from tickgate.store.gate import Repository
from tickgate.store.prepared import DriverStatement, run_prepared, upsert

_Q = tbl.last_quotes
PUT = DriverStatement(lambda d, names: upsert(d, _Q, ("segment", "security_id"), names), insert=True)
_CHUNK = 5_000  # rows a statement batch: a whole 25,000-row save is a few executemany calls


class LastQuotes(Repository):
    """``store.last_quotes``."""

    async def save(self, quotes: Sequence[RestQuote], trading_date: dt.date) -> int:
        """Save the day's last quote of each instrument (those with a price); returns how many."""
        at = self._now()
        rows = [
            {
                "segment": ExchangeSegment(q.key.segment).name,
                "security_id": q.key.security_id,
                "trading_date": trading_date,
                "ltp": q.ltp,
                "prev_close": q.prev_close,
                "open": q.open,
                "high": q.high,
                "low": q.low,
                "volume": q.volume,
                "oi": q.oi,
                "prev_oi": q.prev_oi,
                "saved_at": at,
            }
            for q in quotes
            if q.ltp is not None
        ]
        if not rows:
            return 0
        d = self._gate.write_dialect
        statements = [PUT.prepare(d, rows[i : i + _CHUNK]) for i in range(0, len(rows), _CHUNK)]

        def tx(conn: Connection) -> None:
            run_prepared(conn, statements)

        await self._gate.write(tx, inline=len(rows) <= 1000)  # a whole day's save goes off the loop
        return len(rows)

    async def load(self, today: dt.date) -> list[RestQuote]:
        """Every saved quote as it reads on ``today``: a finished earlier day's last price is today's
        previous close (and its OI the previous OI)."""
        rows = await self._gate.fetch(sa.select(_Q))
        out = []
        for r in rows:
            key = InstrumentKey(ExchangeSegment[r["segment"]], int(r["security_id"]))
            if r["trading_date"] < today:
                out.append(RestQuote(key, r["ltp"], prev_close=r["ltp"], prev_oi=r["oi"]))
            else:
                out.append(
                    RestQuote(
                        key,
                        r["ltp"],
                        prev_close=r["prev_close"],
                        open=r["open"],
                        high=r["high"],
                        low=r["low"],
                        volume=r["volume"],
                        oi=r["oi"],
                        prev_oi=r["prev_oi"],
                    )
                )
        return out

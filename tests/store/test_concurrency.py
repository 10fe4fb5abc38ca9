"""No "database is locked" (OpenAlgo #1759): API writes, the writer task, a scheduler and a second store
(another process's connections, as far as SQLite can tell) all write at once; nothing may fail."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime

from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.planner.types import EventKind, PlannerEvent, Tier
from tickgate.store import AtmEntry, Store, SubscriptionRow

from .conftest import Db, log_now

ADDS = 200
BATCHES = 20
PER_BATCH = 50


async def test_hammer_concurrent_writers_zero_errors(db: Db) -> None:
    api = await Store.open(db.url, settings=db.settings)
    other = await Store.open(db.url, settings=db.settings)  # e.g. `tickgate users add` while serving
    rng = random.Random(6)
    try:
        users = [(await api.users.create(f"u{i}"))[0] for i in range(10)]
        added: list[int] = []

        async def add(i: int) -> None:
            store = api if i % 3 else other
            w = await store.watchlists.put(
                users[i % 10].id,
                f"SYM{i}",
                exchange=("NSE", "BSE", "MCX")[i % 3],
                group_id=f"A:{i}",
                mode=FeedMode.QUOTE,
                expiry=date(2026, 12, 29),
                strikes=25,
            )
            added.append(w.id)
            if i % 4 == 0:
                store.writer.submit_touch(w.id, store.now())

        async def planner_batch(j: int) -> None:
            store = api if j % 2 else other
            events = [
                PlannerEvent(EventKind.SUBSCRIBE, f"A:{j}", "u", Tier.A, count=j * PER_BATCH + k)
                for k in range(PER_BATCH)
            ]
            store.writer.submit_events(events, "planner")
            store.writer.submit_subscriptions(
                [
                    SubscriptionRow(
                        InstrumentKey(ExchangeSegment.NSE_FNO, 1000 * j + k),
                        (f"A:{j}",),
                        Tier.A,
                        k % 5,
                        FeedMode.QUOTE,
                        "placed",
                        datetime.now(UTC),
                    )
                    for k in range(100)
                ]
            )
            store.writer.submit_atm(
                AtmEntry("NIFTY", date(2026, 12, 1), 26000.0 + j, (26000.0,), None, datetime.now(UTC))
            )
            await asyncio.sleep(rng.random() * 0.01)
            await store.writer.flush(timeout=30)

        async def scheduler(k: int) -> None:  # the EOD job's bookkeeping and direct audit rows
            await other.meta.set(f"eod:{k % 3}", {"run": k})
            await log_now(other, "EOD_CLEANUP", actor="scheduler", count=k)
            api.writer.submit_atm(
                AtmEntry("SENSEX", date(2026, 12, 3), 85000.0 + k, (85000.0,), 1.0, datetime.now(UTC))
            )

        async def reader(k: int) -> None:
            await api.watchlists.rows()
            await other.audit.page(action="SUBSCRIBE", limit=50)
            await api.subscriptions.rows()

        jobs = (
            [add(i) for i in range(ADDS)]
            + [planner_batch(j) for j in range(BATCHES)]
            + [scheduler(k) for k in range(20)]
            + [reader(k) for k in range(20)]
        )
        rng.shuffle(jobs)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == [], f"{len(errors)} concurrent writes failed, first: {errors[:1]!r}"
        assert len(added) == len(set(added)) == ADDS
        assert len(await api.watchlists.rows()) == ADDS
        await other.writer.flush()
        await api.writer.flush()
        assert await api.audit.count("SUBSCRIBE") == BATCHES * PER_BATCH
        assert await api.audit.count("EOD_CLEANUP") == 20
        assert api.writer.stats()["audit_failed"] == other.writer.stats()["audit_failed"] == 0
    finally:
        await other.close()
        await api.close()

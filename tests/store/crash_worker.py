"""Subprocess for test_crash: adds watchlist rows forever, printing each id only after it is committed,
while the writer task churns audit rows and subscription snapshots. The test SIGKILLs it at random."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from tickgate.config import StoreSettings
from tickgate.dhan.protocol import ExchangeSegment, FeedMode, InstrumentKey
from tickgate.planner.types import EventKind, PlannerEvent, Tier
from tickgate.store import DuplicateError, Store, SubscriptionRow


async def main(url: str, schema: str, tag: str) -> None:
    store = await Store.open(url, settings=StoreSettings(pg_schema=schema or None))
    try:
        user, _ = await store.users.create("crash")
    except DuplicateError:
        found = await store.users.by_name("crash")
        assert found is not None
        user = found
    print("READY", flush=True)

    async def churn() -> None:
        n = 0
        while True:
            n += 1
            store.writer.submit_events(
                [PlannerEvent(EventKind.SUBSCRIBE, f"{tag}:{n}", "crash", Tier.A, count=n)], "w"
            )
            store.writer.submit_subscriptions(
                [
                    SubscriptionRow(
                        InstrumentKey(ExchangeSegment.NSE_FNO, n * 10 + k),
                        (tag,),
                        Tier.A,
                        0,
                        FeedMode.QUOTE,
                        "placed",
                        datetime.now(UTC),
                    )
                    for k in range(50)
                ]
            )
            await asyncio.sleep(0.001)

    noise = asyncio.create_task(churn())
    i = 0
    while True:
        w = await store.watchlists.put(
            user.id, f"S{i}", exchange="NSE", group_id=f"{tag}:{i}", mode=FeedMode.QUOTE, strikes=25
        )
        sys.stdout.write(f"{w.id} {w.group_id}\n")
        sys.stdout.flush()
        i += 1
        if noise.done():
            noise.result()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))

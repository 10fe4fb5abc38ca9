"""Subprocess for the SIGKILL recovery test: a real service adding watchlist chains until it is killed.

argv: master path, database URL, simulator URL, data dir. Prints ``ADDED <watchlist id> <group>`` after
each add is acknowledged (committed and planned), flushing stdout, so the parent knows what must survive.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' own modules (pinned)

from tests.service.conftest import NOW, TODAY, service_settings

from pinned import flowing
from tickgate.dhan.client import Credentials
from tickgate.instruments import InstrumentRegistry
from tickgate.service import TickgateService
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN

SYMBOLS = ["RELIANCE", "HDFCBANK", "TCS", "INFY", "SBIN", "ITC", "LT", "AXISBANK", "MARUTI", "WIPRO"] * 3


async def main() -> None:
    master, db_url, sim_url, data_dir = sys.argv[1:5]
    settings = service_settings(Path(data_dir)).model_copy(update={"db_url": db_url})
    registry = InstrumentRegistry.load(Path(master), today=TODAY)
    service = TickgateService(
        settings,
        credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
        feed_url=sim_url,
        registry=registry,
        scheduler=False,
        clock=flowing(NOW),
    )
    await service.start()
    print("STARTED", flush=True)
    for i, symbol in enumerate(SYMBOLS):
        user = await service.store.users.by_name(f"u{i % 3}")
        if user is None:
            user, _ = await service.store.users.create(f"u{i % 3}")
        result = await service.watchlists.add(user.id, symbol)
        print("ADDED", result.entry.id, result.entry.group_id, flush=True)
        await asyncio.sleep(0.05)
    await asyncio.sleep(3600)  # wait to be killed


if __name__ == "__main__":
    asyncio.run(main())

"""Subprocess for the "database is locked" test: another process writing to the service's SQLite file.

argv: database URL, iterations. Each iteration creates a user, writes an audit row directly and a meta
key — short write transactions interleaved with the service's own. Prints ``DONE <n>`` at the end; any
exception (an ``OperationalError: database is locked`` above all) ends it with a traceback and exit 1.
"""

from __future__ import annotations

import asyncio
import sys

from tickgate.config import StoreSettings
from tickgate.store import Store


async def main() -> None:
    url, iterations = sys.argv[1], int(sys.argv[2])
    store = await Store.open(url, settings=StoreSettings())
    try:
        print("READY", flush=True)
        for i in range(iterations):
            await store.users.create(f"external-{i}")
            store.writer.submit_log("EXTERNAL_WRITE", actor="other-process", count=i)
            await store.writer.flush(timeout=30)
            await store.meta.set(f"external:{i % 5}", i)
            await asyncio.sleep(0)
    finally:
        await store.close()
    print("DONE", iterations, flush=True)


if __name__ == "__main__":
    asyncio.run(main())

"""The store: every read and write of the tickgate database goes through one ``Store`` object.

It is a composition, one concern a module:

* :mod:`~tickgate.store.gate`: when a read or write runs (SQLite's one writer; awaited writes first);
* :mod:`~tickgate.store.prepared`: statements prepared once for the driver's ``executemany``;
* repositories: :mod:`~tickgate.store.users` (``store.users``), :mod:`~tickgate.store.watchlists`,
  :mod:`~tickgate.store.subscriptions`, :mod:`~tickgate.store.audit`, :mod:`~tickgate.store.atm`,
  :mod:`~tickgate.store.meta`;
* :mod:`~tickgate.store.writer`: the one background writer, which writes through
  :mod:`~tickgate.store.batch`.

**Awaited writes** (users, keys, a user's watchlist add and remove) commit before they return: a user's add is
acknowledged only once it is durable. **Everything else** (planner audit events, the subscriptions table, use
times, eviction marks, the ATM cache) goes through ``store.writer``: ``submit_*`` is synchronous and never
touches the database, so the feed reader and the planner path never wait for it. Each write has exactly one of
the two paths.

Restart recovery reads the *desired* state only: active watchlist rows (oldest use first, so re-adding
them rebuilds the planner's LRU order) plus the Tier B configuration. The ``subscriptions`` table is an
output, so a crash can never resurrect a phantom subscription from it. No planner snapshot is persisted, for
the same reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import URL

from tickgate.clock import SYSTEM_CLOCK, Clock
from tickgate.config import Settings, StoreSettings
from tickgate.store.atm import AtmCache
from tickgate.store.audit import AuditLog
from tickgate.store.batch import BatchWriter
from tickgate.store.commands import Commands
from tickgate.store.engine import (
    Engines,
    create_engines,
    database_url,
    head_revision,
    sqlite_enable_wal,
    sqlite_init_lock,
    sqlite_path,
    upgrade,
)
from tickgate.store.gate import WriteGate
from tickgate.store.last_quotes import LastQuotes
from tickgate.store.meta import Meta
from tickgate.store.subscriptions import Subscriptions
from tickgate.store.users import Users
from tickgate.store.watchlists import Watchlists
from tickgate.store.writer import StoreWriter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CheckpointStats:
    """WAL checkpoints of a SQLite file (``/admin/stats``): how many, how long, how much the WAL held."""

    done: int = 0
    failed: int = 0
    last_s: float = 0.0
    max_s: float = 0.0
    last_wal_frames: int = 0
    last_error: str | None = None

    def record(self, result: tuple[int, int, int], seconds: float) -> None:
        self.done += 1
        self.last_s = seconds
        self.max_s = max(self.max_s, seconds)
        self.last_wal_frames = result[1]
        self.last_error = None


class Store:
    """The database behind tickgate (SQLite by default, PostgreSQL by URL). Open with :meth:`open`."""

    def __init__(self, engines: Engines, settings: StoreSettings, clock: Clock | None = None) -> None:
        """Use :meth:`open` (it migrates and starts the writer); this only wires the parts together."""
        self._engines = engines
        self._settings = settings
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._last_now: datetime | None = None
        self.gate = WriteGate(engines, settings.writer_yield_max_s)
        self.users = Users(self.gate, self.now)
        self.watchlists = Watchlists(self.gate, self.now)
        self.subscriptions = Subscriptions(self.gate, self.now)
        self.audit = AuditLog(self.gate, self.now)
        self.atm = AtmCache(self.gate, self.now)
        self.meta = Meta(self.gate, self.now)
        self.commands = Commands(self.gate, self.now)
        self.last_quotes = LastQuotes(self.gate, self.now)
        self._closed = False
        self._checkpointer: asyncio.Task[None] | None = None
        self.checkpoints = CheckpointStats()
        self.batches = BatchWriter(self.gate, self.subscriptions, settings.writer_subs_chunk)
        self.writer = StoreWriter(self.batches, self.now, settings)

    # ------------------------------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        url: str | URL,
        *,
        settings: StoreSettings | None = None,
        clock: Clock | None = None,
        start_writer: bool = True,
    ) -> Store:
        """Connect, create a SQLite file's directory, run ``alembic upgrade head`` (one transaction, safe
        against concurrent starters) and start the writer task."""
        cfg = settings or StoreSettings()
        engines = create_engines(url, cfg)
        try:
            path = sqlite_path(engines.url)
            if path is None:
                await _migrate(engines, cfg)
            else:
                async with sqlite_init_lock(path):
                    await asyncio.to_thread(sqlite_enable_wal, path, cfg)
                    await _migrate(engines, cfg)
        except BaseException:
            await engines.dispose()
            raise
        store = cls(engines, cfg, clock)
        if start_writer:
            store.writer.start()
        if path is not None:
            store._checkpointer = asyncio.get_running_loop().create_task(
                store._checkpoint_loop(), name="tickgate-sqlite-checkpoint"
            )
        return store

    @classmethod
    async def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> Store:
        """``Store.open`` on ``TICKGATE_DB_URL`` or the default SQLite file in the data directory."""
        clock = clock or settings.make_clock()
        return await cls.open(database_url(settings), settings=settings.store, clock=clock)

    async def close(self, timeout: float | None = 30.0) -> None:
        """Flush and stop the writer, wait for in-flight writes, release connections. Idempotent."""
        if self._closed:
            return
        try:
            await self.writer.close(timeout=timeout)
        finally:
            self._closed = True
            await self.gate.close()
            if self._checkpointer is not None:
                self._checkpointer.cancel()
                await asyncio.gather(self._checkpointer, return_exceptions=True)
            await self._engines.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def settings(self) -> StoreSettings:
        return self._settings

    def now(self) -> datetime:
        """The store's clock (the service's one clock, read in UTC: audit rows carry market time), strictly
        increasing: rows compare decision times (an eviction mark touches only rows created before it), so
        two decisions must never share an instant — not on a test's frozen clock, nor when the host's clock
        steps back."""
        now = self._clock.utcnow()
        if self._last_now is not None and now <= self._last_now:
            now = self._last_now + timedelta(microseconds=1)
        self._last_now = now
        return now

    async def ping(self, timeout: float = 2.0) -> bool:
        """Readiness: the database answers a query within ``timeout`` and the writer is alive."""
        if self.gate.closed or (self.writer.started and not self.writer.alive):
            return False
        try:
            async with asyncio.timeout(timeout):
                async with self.gate.read() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except Exception:
            log.warning("database ping failed", exc_info=True)
            return False
        return True

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (``head_revision()`` after ``open``)."""
        from tickgate.store.engine import current_revision

        async with self.gate.read() as conn:
            return await conn.run_sync(current_revision)

    @staticmethod
    def head_revision() -> str:
        return head_revision()

    async def _checkpoint_loop(self) -> None:
        """Checkpoint a SQLite file's WAL every ``checkpoint_interval_s`` after writes, on a worker thread
        (the writer connection never checkpoints: that would fsync on the event loop)."""
        while True:
            await asyncio.sleep(self._settings.checkpoint_interval_s)
            if self.gate.unchecked_writes:
                await self.checkpoint()

    async def checkpoint(self) -> None:
        """One PASSIVE checkpoint now (SQLite file; nothing otherwise). A failure is counted and logged:
        the WAL keeps everything until the next one succeeds."""
        self.gate.unchecked_writes = 0
        began = time.perf_counter()
        try:
            result = await asyncio.to_thread(self._engines.checkpoint)
        except Exception as e:  # logged and counted; retried at the next interval
            self.checkpoints.failed += 1
            self.checkpoints.last_error = f"{type(e).__name__}: {e}"[:300]
            log.warning("WAL checkpoint failed: %s", self.checkpoints.last_error)
            return
        if result is not None:
            self.checkpoints.record(result, time.perf_counter() - began)

    @asynccontextmanager
    async def priority(self) -> AsyncIterator[None]:
        """:meth:`WriteGate.priority`: a user's request path holds the writer's batches back."""
        async with self.gate.priority():
            yield


async def _migrate(engines: Engines, cfg: StoreSettings) -> None:
    async with engines.write.begin() as conn:
        await conn.run_sync(upgrade, cfg.pg_schema)

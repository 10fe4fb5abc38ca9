"""The gate every connection of the store goes through: when a read or a write may run, and on which thread.

Why a gate of its own: SQLite has one writer at a time, a user's watchlist add waits for its write inside an
HTTP request, and the batching writer would happily hold the lock for a whole batch meanwhile. The order of
writes is a policy (awaited writes first, the writer's batches yield to them for a bounded time), and the
policy is tested here directly, apart from any query.

A write cannot be cut off half-way by its caller's cancellation (a client that disconnects mid-request): a
SQLite file's transaction runs synchronously on the event loop, all of it or none; otherwise it runs in a task
of its own, shielded from the caller, that finishes (or rolls back) alone and that :meth:`WriteGate.close`
waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from tickgate.store.engine import Engines, WriteLockBusyError

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreClosedError(RuntimeError):
    """A read or write after :meth:`WriteGate.close`."""


class WriteGate:
    """Schedules the store's reads and writes over its :class:`~tickgate.store.engine.Engines`.

    ``writer_yield_max_s`` bounds how long a background write waits for a gap between awaited ones."""

    def __init__(self, engines: Engines, writer_yield_max_s: float) -> None:
        self.engines = engines
        self._yield_max_s = writer_yield_max_s
        # SQLite allows one writer at a time: serialise them here rather than meet SQLITE_BUSY.
        self._wlock: asyncio.Lock | None = asyncio.Lock() if engines.dialect == "sqlite" else None
        # An in-memory SQLite database lives on one connection: reads must queue behind writes too.
        self._rlock: asyncio.Lock | None = self._wlock if engines.single_connection else None
        self._foreground = 0  # awaited writes queued or running (SQLite): background writes let them go first
        self._foreground_idle = asyncio.Event()
        self._foreground_idle.set()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.unchecked_writes = (
            0  # writes since the last WAL checkpoint (a SQLite file's checkpointer reads it)
        )

    @property
    def write_dialect(self) -> Dialect:
        return self.engines.write_dialect

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Refuse new work and wait for the writes already running. Idempotent."""
        self._closed = True
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("store is closed")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read connection (queued behind writes only where both share one connection)."""
        self.check_open()
        if self._rlock is None:
            async with self.engines.read.connect() as conn:
                yield conn
        else:
            async with self._rlock, self.engines.read.connect() as conn:
                yield conn

    async def fetch(self, stmt: sa.Executable) -> list[sa.RowMapping]:
        async with self.read() as conn:
            return list((await conn.execute(stmt)).mappings())

    async def write(
        self, fn: Callable[[Connection], T], *, background: bool = False, inline: bool = True
    ) -> T:
        """Run ``fn`` in one write transaction (committed when this returns) that the caller's cancellation
        cannot cut off half-way.

        A SQLite file's transaction runs right here, on the event loop, when the connection is free (see
        :mod:`tickgate.store.engine` for why inline). Otherwise it runs in a shielded task of its own, and
        SQLite has one writer at a time, so awaited writes (a user's add, waiting in an HTTP request) go
        first: a ``background`` write (the batching writer's) waits while one is queued or running, or a
        :meth:`priority` section is open (bounded by ``writer_yield_max_s``). ``fn`` is synchronous so that
        a whole transaction runs in one piece, on the loop or in one hop to the writer thread;
        ``inline=False`` sends a large one (a whole-table rewrite) to the thread, off the loop."""
        self.check_open()
        if background and self._foreground:
            await self.foreground_done()
        wlock = self._wlock
        if inline and self.engines.writes_inline and wlock is not None and not wlock.locked():
            try:
                result = self.engines.write_inline(fn)
            except WriteLockBusyError:
                pass  # another process holds the write lock: wait for it on the writer thread
            else:
                self.unchecked_writes += 1
                return result

        async def run() -> T:
            if wlock is None:
                return await self.engines.run_write(fn)
            if background:
                await self.foreground_done()
                async with wlock:
                    return await self.engines.run_write(fn)
            async with self.priority(), wlock:
                return await self.engines.run_write(fn)

        self.unchecked_writes += 1
        task = asyncio.ensure_future(run())
        self._inflight.add(task)
        task.add_done_callback(self._reap)
        return await asyncio.shield(task)

    @asynccontextmanager
    async def priority(self) -> AsyncIterator[None]:
        """Hold background writes back (SQLite) while this is open: every awaited write is inside one, and a
        user's add opens one for its whole request path, so that its write finds the lock free rather than
        behind a batch that started while the add was being worked out. A background write waits at most
        ``writer_yield_max_s`` for a gap, so a stream of requests slows the writer down but never stops it."""
        if self._wlock is None:
            yield
            return
        self._foreground += 1
        self._foreground_idle.clear()
        try:
            yield
        finally:
            self._foreground -= 1
            if not self._foreground:
                self._foreground_idle.set()

    async def foreground_done(self) -> None:
        """Wait (at most ``writer_yield_max_s``) until no awaited write is queued or running."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._yield_max_s):
                while self._foreground:
                    await self._foreground_idle.wait()

    def _reap(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished write. Its error reaches the caller through the shield; if the caller was
        cancelled meanwhile, it is logged here instead of "Task exception was never retrieved"."""
        self._inflight.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            log.debug("write finished with an error", exc_info=err)


class Repository:
    """A family of queries over one part of the schema: reads and writes through the gate, times from the
    store's one clock (``now``: strictly increasing, see :meth:`tickgate.store.core.Store.now`)."""

    def __init__(self, gate: WriteGate, now: Callable[[], datetime]) -> None:
        self._gate = gate
        self._now = now


S = TypeVar("S", bound=sa.Select[Any])


def where_given(stmt: S, *conditions: tuple[sa.ColumnElement[Any], object]) -> S:
    """``stmt`` filtered on ``column == value`` for each (column, value) whose value is not None: a
    repository's optional filters, spelled once."""
    for column, value in conditions:
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt

"""The store: every read and write of the tickgate database goes through one ``Store`` object.

* **Awaited writes** (users, keys, watchlist rows, direct audit rows) commit before they return: a user's
  watchlist add is acknowledged only once it is durable.
* **Fire-and-forget writes** (planner audit events, subscription snapshots, ATM cache) go through
  ``store.writer`` (:class:`~tickgate.store.writer.StoreWriter`): ``submit_*`` is synchronous and never
  touches the database, so the feed reader and the planner path never wait for it.

A write cannot be cut off half-way by its caller's cancellation (a client that disconnects mid-request): a
SQLite file's transaction runs synchronously on the event loop, all of it or none; otherwise it runs in a
task of its own, shielded from the caller, that finishes (or rolls back) alone and that
:meth:`Store.close` waits for.

Restart recovery reads the *desired* state only: active watchlist rows (oldest use first, so re-adding
them rebuilds the planner's LRU order) plus the Tier B configuration. The ``subscriptions`` table is an
output — rewritten in full from the planner by the first snapshot after start — so a crash can never
resurrect a phantom subscription from it. No planner snapshot is persisted, for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import UpdateBase

from tickgate.clock import SYSTEM_CLOCK, Clock
from tickgate.config import Settings, StoreSettings
from tickgate.dhan.protocol import FeedMode
from tickgate.planner.types import Tier
from tickgate.store import rows as conv
from tickgate.store import schema as tbl
from tickgate.store.engine import (
    Engines,
    WriteLockBusyError,
    create_engines,
    database_url,
    head_revision,
    sqlite_enable_wal,
    sqlite_errors_wrapped,
    sqlite_init_lock,
    sqlite_path,
    upgrade,
)
from tickgate.store.types import (
    ApiKey,
    AtmEntry,
    AuditEntry,
    AuditPage,
    DuplicateError,
    JSONValue,
    NotFoundError,
    SubscriptionRow,
    User,
    WatchlistEntry,
    WatchlistState,
    utc,
)
from tickgate.store.writer import StoreWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

KEY_PREFIX = "tg_"
_PREFIX_LEN = 11  # "tg_" + 8 characters: enough to tell keys apart in a list, useless to an attacker
_DELETE_CHUNK = 500
AUDIT_PAGE_MAX = 1000


def upsert(
    dialect: str,
    table: sa.Table,
    keys: Sequence[str],
    columns: Iterable[str],
    values: dict[str, Any] | None = None,
) -> sa.Insert:
    """INSERT … ON CONFLICT (``keys``) DO UPDATE ``columns`` in ``dialect`` (both spell it the same way);
    without ``values`` the statement takes its parameters at execution (executemany)."""
    ins = (pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert)(table)
    if values is not None:
        ins = ins.values(values)
    return ins.on_conflict_do_update(
        index_elements=list(keys), set_={k: ins.excluded[k] for k in columns if k not in keys}
    )


Prepared = tuple[str, list[tuple[Any, ...]]]
"""A statement in the driver's own SQL and parameter style, and one parameter tuple per execution."""

_Plan = tuple[str, tuple[str, ...], Sequence[Callable[[Any], Any] | None]]


class DriverStatement:
    """A statement the writer runs by the hundred, prepared for the driver's ``executemany``: compiled once
    per dialect, its values put through the same type processors SQLAlchemy would apply, so both databases
    store exactly what ``conn.execute(statement, rows)`` would.

    Why: SQLAlchemy's per-row parameter handling cost several times SQLite's own work (measured:
    docs/decisions/0002-measured-tradeoffs.md), and a writer batch holds SQLite's one write lock
    meanwhile: a user's add waits behind it.
    Every statement of a writer batch is one of these (:func:`run_prepared`), on both databases."""

    def __init__(self, build: Callable[[str, tuple[str, ...]], UpdateBase], *, insert: bool = False) -> None:
        """``build(dialect name, parameter names)``; ``insert``: the names are the columns to insert."""
        self._build = build
        self._insert = insert
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}

    def prepare(self, dialect: Dialect, rows: Sequence[Mapping[str, Any]]) -> Prepared:
        """``rows`` of parameters by name (the same names in each); none: nothing to run."""
        if not rows:
            return "", []
        sql, order, procs = self._plan(dialect, tuple(rows[0]))
        memo = [None if f is None else _memoized(f) for f in procs]
        params = [
            tuple(v if f is None else f(v) for f, v in zip(memo, map(row.__getitem__, order), strict=True))
            for row in rows
        ]
        return sql, params

    def _plan(self, dialect: Dialect, names: tuple[str, ...]) -> _Plan:
        key = (dialect.name, names)
        plan = self._plans.get(key)
        if plan is None:
            stmt = self._build(dialect.name, names)
            compiled = stmt.compile(dialect=dialect, column_keys=list(names) if self._insert else None)
            order = tuple(compiled.positiontup or ())
            if sorted(order) != sorted(names):
                raise RuntimeError(f"{dialect.name}: expected positional parameters {names}, got {order}")
            binds = compiled.binds
            procs = [binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in order]
            plan = self._plans[key] = (str(compiled), order, procs)
        return plan


def _memoized(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` remembering its results for one batch: its rows share most values (a change set's
    timestamp, a chain's owners), and a type processor chain costs microseconds a call. Keyed by type as
    well as value (``1 == True``, but JSON spells them differently); unhashable values are processed."""
    seen: dict[tuple[type, Any], Any] = {}

    def memo(value: Any) -> Any:
        key = (type(value), value)
        try:
            return seen[key]
        except KeyError:
            out = seen[key] = process(value)
            return out
        except TypeError:  # a JSON list or object
            return process(value)

    return memo


def run_prepared(conn: Connection, statements: Iterable[Prepared]) -> None:
    """Prepared statements in ``conn``'s transaction: the driver's executemany, nothing else. On a plain
    ``sqlite3`` connection (a SQLite file's writer) straight on its cursor, skipping SQLAlchemy's execution
    context (it cost about as much as SQLite's own work for a 50-row batch); errors are wrapped as
    SQLAlchemy wraps them, so callers tell transient failures from refusals the same way."""
    dbapi = conn.connection.dbapi_connection
    for sql, params in statements:
        if not params:
            continue
        if not isinstance(dbapi, sqlite3.Connection):
            conn.exec_driver_sql(sql, params)
            continue
        cursor = dbapi.cursor()
        try:
            with sqlite_errors_wrapped(sql, params):
                cursor.executemany(sql, params)
        finally:
            cursor.close()


_W = tbl.watchlist
_S = tbl.subscriptions
_PUT_SUBSCRIPTIONS = DriverStatement(
    lambda d, names: upsert(d, _S, ("segment", "security_id"), names), insert=True
)
_DELETE_SUBSCRIPTION = DriverStatement(
    lambda _d, _n: sa.delete(_S).where(
        _S.c.segment == sa.bindparam("segment"), _S.c.security_id == sa.bindparam("security_id")
    )
)
_CLEAR_SUBSCRIPTIONS = DriverStatement(lambda _d, _n: sa.delete(_S))
_INSERT_AUDIT = DriverStatement(lambda _d, _n: sa.insert(tbl.subscription_log), insert=True)
_PUT_ATM = DriverStatement(
    lambda d, names: upsert(d, tbl.atm_cache, ("underlying", "expiry"), names), insert=True
)
# Only rows older than the decision are marked: a chain evicted and at once added again by its owner (a newer
# ``created``) stays active.
_MARK_WATCHLIST = DriverStatement(
    lambda _d, _n: (
        sa.update(_W)
        .where(_W.c.group_id == sa.bindparam("group"), _W.c.created <= sa.bindparam("at"))
        .values(state=sa.bindparam("state"), state_reason=sa.bindparam("reason"))
    )
)
# The hot path of a watchlist add: an upsert is not in SQLAlchemy's compiled cache (its ``excluded`` columns
# are built per statement), and compiling it on every add cost more than running it: prepared once.
_PUT_WATCHLIST = DriverStatement(
    lambda d, names: upsert(d, _W, ("group_id",), names).returning(_W.c.id), insert=True
)
_TOUCH_WATCHLIST = DriverStatement(
    lambda _d, _n: sa.update(_W).where(_W.c.id == sa.bindparam("wid")).values(last_used=sa.bindparam("at"))
)


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


def hash_key(key: str) -> str:
    """SHA-256 hex of an API key. Keys are 256-bit random tokens, so a fast unsalted hash is enough: there
    is nothing to brute-force (a slow KDF is for low-entropy passwords)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class Store:
    """The database behind tickgate (SQLite by default, PostgreSQL by URL). Open with :meth:`open`."""

    def __init__(self, engines: Engines, settings: StoreSettings, clock: Clock | None = None) -> None:
        """Use :meth:`open` (it migrates and starts the writer); this only wires the parts together."""
        self._engines = engines
        self._settings = settings
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._last_now: datetime | None = None
        # SQLite allows one writer at a time: serialise them here rather than meet SQLITE_BUSY.
        self._wlock: asyncio.Lock | None = asyncio.Lock() if engines.dialect == "sqlite" else None
        # An in-memory SQLite database lives on one connection: reads must queue behind writes too.
        self._rlock: asyncio.Lock | None = self._wlock if engines.single_connection else None
        # The subscriptions table is diffed against what was last written; one writer of it at a time.
        self._subs_lock = asyncio.Lock()
        self._foreground = 0  # awaited writes queued or running (SQLite): the writer lets them go first
        self._foreground_idle = asyncio.Event()
        self._foreground_idle.set()
        self._subs_state: dict[conv.SubKey, conv.SubSig] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._unchecked_writes = 0  # writes since the last WAL checkpoint (SQLite file)
        self._checkpointer: asyncio.Task[None] | None = None
        self.checkpoints = CheckpointStats()
        self.writer = StoreWriter(self, settings)

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
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            if self._checkpointer is not None:
                self._checkpointer.cancel()
                await asyncio.gather(self._checkpointer, return_exceptions=True)
            await self._engines.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engines.dialect

    @property
    def url(self) -> URL:
        return self._engines.url

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
        if self._closed or (self.writer.started and not self.writer.alive):
            return False
        try:
            async with asyncio.timeout(timeout):
                async with self._read() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except Exception:
            log.warning("database ping failed", exc_info=True)
            return False
        return True

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (``head_revision()`` after ``open``)."""
        from tickgate.store.engine import current_revision

        async with self._read() as conn:
            return await conn.run_sync(current_revision)

    @staticmethod
    def head_revision() -> str:
        return head_revision()

    # ------------------------------------------------------------------------------------------ plumbing

    async def _checkpoint_loop(self) -> None:
        """Checkpoint a SQLite file's WAL every ``checkpoint_interval_s`` after writes, on a worker thread
        (the writer connection never checkpoints: that would fsync on the event loop)."""
        while True:
            await asyncio.sleep(self._settings.checkpoint_interval_s)
            if self._unchecked_writes:
                await self.checkpoint()

    async def checkpoint(self) -> None:
        """One PASSIVE checkpoint now (SQLite file; nothing otherwise). A failure is counted and logged:
        the WAL keeps everything until the next one succeeds."""
        self._unchecked_writes = 0
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

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        self._check_open()
        if self._rlock is None:
            async with self._engines.read.connect() as conn:
                yield conn
        else:
            async with self._rlock, self._engines.read.connect() as conn:
                yield conn

    async def _write(
        self, fn: Callable[[Connection], T], *, background: bool = False, inline: bool = True
    ) -> T:
        """Run ``fn`` in one write transaction (committed when this returns) that the caller's cancellation
        cannot cut off half-way (see the module docstring).

        A SQLite file's transaction runs right here, on the event loop, when the connection is free (see
        :mod:`tickgate.store.engine` for why inline). Otherwise it runs in a shielded task of its own, and
        SQLite has one writer at a time, so awaited writes (a user's add, waiting in an HTTP request) go
        first: a ``background`` write (the batching writer's) waits while one is queued or running, or a
        :meth:`priority` section is open (bounded, see there). ``fn`` is synchronous so that a whole
        transaction runs in one piece, on the loop or in one hop to the writer thread; ``inline=False``
        sends a large one (a whole-table rewrite) to the thread, off the loop."""
        self._check_open()
        if background and self._foreground:
            await self._foreground_done()
        if inline and self._engines.writes_inline and self._wlock is not None and not self._wlock.locked():
            try:
                result = self._engines.write_inline(fn)
            except WriteLockBusyError:
                pass  # another process holds the write lock: wait for it on the writer thread
            else:
                self._unchecked_writes += 1
                return result

        async def run() -> T:
            if self._wlock is None:
                return await self._engines.run_write(fn)
            if background:
                await self._foreground_done()
                async with self._wlock:
                    return await self._engines.run_write(fn)
            async with self.priority(), self._wlock:
                return await self._engines.run_write(fn)

        self._unchecked_writes += 1
        task = asyncio.ensure_future(run())
        self._inflight.add(task)
        task.add_done_callback(self._reap)
        return await asyncio.shield(task)

    @asynccontextmanager
    async def priority(self) -> AsyncIterator[None]:
        """Hold the writer's batches back (SQLite) while this is open: every awaited write is inside one,
        and a user's add opens one for its whole request path, so that its write finds the lock free rather
        than behind a batch that started while the add was being worked out. The writer waits at most
        ``writer_yield_max_s`` for a gap, so a stream of requests slows it down but never stops it."""
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

    async def _foreground_done(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.writer_yield_max_s):
                while self._foreground:
                    await self._foreground_idle.wait()

    def _reap(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished write. Its error reaches the caller through the shield; if the caller was
        cancelled meanwhile, it is logged here instead of "Task exception was never retrieved"."""
        self._inflight.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            log.debug("write finished with an error", exc_info=err)

    async def _fetch(self, stmt: sa.Executable) -> list[sa.RowMapping]:
        async with self._read() as conn:
            return list((await conn.execute(stmt)).mappings())

    def _upsert(
        self,
        table: sa.Table,
        keys: Sequence[str],
        columns: Iterable[str],
        values: dict[str, Any] | None = None,
    ) -> sa.Insert:
        """:func:`upsert` in this store's dialect."""
        return upsert(self.dialect, table, keys, columns, values)

    # ------------------------------------------------------------------------------------------ users, keys

    async def create_user(self, name: str, *, admin: bool = False) -> tuple[User, str]:
        """A user and its first API key. The plaintext key is returned here, once; only its hash is stored."""
        name = name.strip()
        if not name or len(name) > 64:
            raise ValueError("user name must be 1..64 characters")
        key = new_api_key()
        at = self.now()

        def tx(conn: Connection) -> User:
            try:
                res = conn.execute(sa.insert(tbl.users).values(name=name, is_admin=admin, created=at))
            except IntegrityError:
                raise DuplicateError(f"user {name!r} exists") from None
            uid = _pk(res)
            conn.execute(sa.insert(tbl.api_keys).values(**_key_values(uid, key, at)))
            return User(uid, name, admin, at)

        return await self._write(tx), key

    async def create_api_key(self, user_id: int, key: str | None = None) -> tuple[ApiKey, str]:
        """Another key for ``user_id`` (random unless ``key`` is given, e.g. a configured admin key)."""
        if key is not None and len(key) < 16:
            raise ValueError("an API key must be at least 16 characters")
        key = key or new_api_key()
        at = self.now()

        def tx(conn: Connection) -> ApiKey:
            _require_user(conn, user_id)
            try:
                res = conn.execute(sa.insert(tbl.api_keys).values(**_key_values(user_id, key, at)))
            except IntegrityError as e:
                raise DuplicateError("this API key is already registered") from e
            return ApiKey(_pk(res), user_id, key[:_PREFIX_LEN], at, None)

        return await self._write(tx), key

    async def authenticate(self, key: str) -> User | None:
        """The user holding the (unrevoked) ``key``, else None. Looked up by hash: no plaintext compare."""
        if not key:
            return None
        stmt = (
            sa.select(tbl.users)
            .join(tbl.api_keys, tbl.api_keys.c.user_id == tbl.users.c.id)
            .where(tbl.api_keys.c.key_hash == hash_key(key), tbl.api_keys.c.revoked.is_(None))
        )
        rows = await self._fetch(stmt)
        return conv.to_user(rows[0]) if rows else None

    async def revoke_api_key(self, key_id: int, *, user_id: int | None = None) -> bool:
        """Revoke one key (of ``user_id`` when given); False when there is no such live key."""
        at = self.now()
        cond = [tbl.api_keys.c.id == key_id, tbl.api_keys.c.revoked.is_(None)]
        if user_id is not None:
            cond.append(tbl.api_keys.c.user_id == user_id)

        def tx(conn: Connection) -> int:
            return conn.execute(sa.update(tbl.api_keys).where(*cond).values(revoked=at)).rowcount

        return await self._write(tx) > 0

    async def revoke_user_keys(self, user_id: int) -> int:
        at = self.now()

        def tx(conn: Connection) -> int:
            stmt = (
                sa.update(tbl.api_keys)
                .where(tbl.api_keys.c.user_id == user_id, tbl.api_keys.c.revoked.is_(None))
                .values(revoked=at)
            )
            return conn.execute(stmt).rowcount

        return await self._write(tx)

    async def list_api_keys(self, user_id: int) -> list[ApiKey]:
        rows = await self._fetch(
            sa.select(tbl.api_keys).where(tbl.api_keys.c.user_id == user_id).order_by(tbl.api_keys.c.id)
        )
        return [conv.to_api_key(r) for r in rows]

    async def get_user(self, user_id: int) -> User | None:
        rows = await self._fetch(sa.select(tbl.users).where(tbl.users.c.id == user_id))
        return conv.to_user(rows[0]) if rows else None

    async def get_user_by_name(self, name: str) -> User | None:
        rows = await self._fetch(sa.select(tbl.users).where(tbl.users.c.name == name.strip()))
        return conv.to_user(rows[0]) if rows else None

    async def list_users(self) -> list[User]:
        return [conv.to_user(r) for r in await self._fetch(sa.select(tbl.users).order_by(tbl.users.c.id))]

    # ------------------------------------------------------------------------------------------ watchlist

    async def add_watchlist(
        self,
        user_id: int,
        symbol: str,
        *,
        exchange: str,
        group_id: str,
        mode: FeedMode,
        expiry: date | None = None,
        strikes: int | None = None,
        at: datetime | None = None,
    ) -> WatchlistEntry:
        """Insert an active watchlist row; committed when this returns. ``DuplicateError`` if the planner
        group id is taken (the caller touches the existing row instead: a duplicate add is a touch)."""
        when = utc(at) if at is not None else self.now()
        values = conv.watchlist_values(user_id, symbol, exchange, group_id, mode, expiry, strikes, when)

        def tx(conn: Connection) -> int:
            _require_user(conn, user_id)
            try:
                res = conn.execute(sa.insert(tbl.watchlist).values(values))
            except IntegrityError as e:
                raise DuplicateError(f"watchlist group {group_id!r} exists") from e
            return _pk(res)

        wid = await self._write(tx)
        return conv.to_watchlist({"id": wid, **values})

    async def get_watchlist(self, watchlist_id: int) -> WatchlistEntry | None:
        rows = await self._fetch(sa.select(tbl.watchlist).where(tbl.watchlist.c.id == watchlist_id))
        return conv.to_watchlist(rows[0]) if rows else None

    async def get_watchlist_by_group(self, group_id: str) -> WatchlistEntry | None:
        rows = await self._fetch(sa.select(tbl.watchlist).where(tbl.watchlist.c.group_id == group_id))
        return conv.to_watchlist(rows[0]) if rows else None

    async def list_watchlist(
        self, user_id: int | None = None, *, state: WatchlistState | None = None
    ) -> list[WatchlistEntry]:
        """A user's rows (everyone's with ``user_id=None``), oldest first."""
        stmt = sa.select(tbl.watchlist).order_by(tbl.watchlist.c.created, tbl.watchlist.c.id)
        if user_id is not None:
            stmt = stmt.where(tbl.watchlist.c.user_id == user_id)
        if state is not None:
            stmt = stmt.where(tbl.watchlist.c.state == state.value)
        return [conv.to_watchlist(r) for r in await self._fetch(stmt)]

    async def all_active_watchlists(self) -> list[WatchlistEntry]:
        """Restart recovery's desired Tier A: active rows, least recently used first (re-adding them in this
        order rebuilds the planner's LRU order)."""
        stmt = (
            sa.select(tbl.watchlist)
            .where(tbl.watchlist.c.state == WatchlistState.ACTIVE.value)
            .order_by(tbl.watchlist.c.last_used, tbl.watchlist.c.id)
        )
        return [conv.to_watchlist(r) for r in await self._fetch(stmt)]

    async def put_watchlist(
        self,
        user_id: int,
        symbol: str,
        *,
        exchange: str,
        group_id: str,
        mode: FeedMode,
        expiry: date | None = None,
        strikes: int | None = None,
        at: datetime | None = None,
    ) -> WatchlistEntry:
        """Insert an active row for ``group_id``, or start its existing row over (an evicted chain added
        again keeps its id and becomes active and new). One statement, committed when this returns: the
        hot path of a watchlist add. ``NotFoundError`` if the user does not exist."""
        when = utc(at) if at is not None else self.now()
        values = conv.watchlist_values(user_id, symbol, exchange, group_id, mode, expiry, strikes, when)
        sql, params = _PUT_WATCHLIST.prepare(self._engines.write_dialect, [values])

        def tx(conn: Connection) -> int:
            try:
                return int(conn.exec_driver_sql(sql, params[0]).scalar_one())
            except IntegrityError as e:  # the group id is the conflict target: only the user can be missing
                raise NotFoundError(f"no user {user_id}") from e

        wid = await self._write(tx)
        return conv.to_watchlist({"id": wid, **values})

    async def remove_watchlist(self, watchlist_id: int, user_id: int | None = None) -> WatchlistEntry | None:
        """Delete a row (only the owner's when ``user_id`` is given) and return it; None if there is none."""
        cond = [tbl.watchlist.c.id == watchlist_id]
        if user_id is not None:
            cond.append(tbl.watchlist.c.user_id == user_id)

        def tx(conn: Connection) -> WatchlistEntry | None:
            res = conn.execute(sa.delete(tbl.watchlist).where(*cond).returning(*tbl.watchlist.c))
            row = res.mappings().first()
            return conv.to_watchlist(row) if row else None

        return await self._write(tx)

    async def touch_watchlist(self, watchlist_id: int, at: datetime | None = None) -> bool:
        """Mark a row used now (LRU); False if it does not exist."""
        when = utc(at) if at is not None else self.now()

        def tx(conn: Connection) -> int:
            stmt = sa.update(tbl.watchlist).where(tbl.watchlist.c.id == watchlist_id).values(last_used=when)
            return conn.execute(stmt).rowcount

        return await self._write(tx) > 0

    async def set_watchlist_state(
        self, group_ids: Iterable[str], state: WatchlistState, *, reason: str | None = None
    ) -> int:
        """Mark the rows of these planner groups evicted (lost to capacity) or active again; returns how
        many rows changed. Evicted rows stay visible but are not re-subscribed by a restart."""
        gids = list(dict.fromkeys(group_ids))
        if not gids:
            return 0

        def tx(conn: Connection) -> int:
            n = 0
            for i in range(0, len(gids), _DELETE_CHUNK):
                stmt = (
                    sa.update(tbl.watchlist)
                    .where(tbl.watchlist.c.group_id.in_(gids[i : i + _DELETE_CHUNK]))
                    .values(state=state.value, state_reason=reason)
                )
                n += conn.execute(stmt).rowcount
            return n

        return await self._write(tx)

    async def clear_watchlists(self, exchanges: Iterable[str] | None = None) -> list[WatchlistEntry]:
        """End of day: delete every row (of these exchanges: NSE/BSE close at 15:30, MCX late evening) in
        one transaction and return them, so the caller can release their groups and log the cleanup."""
        stmt = sa.delete(tbl.watchlist)
        if exchanges is not None:
            ex = sorted({e.strip().upper() for e in exchanges})
            if not ex:
                return []
            stmt = stmt.where(tbl.watchlist.c.exchange.in_(ex))

        def tx(conn: Connection) -> list[WatchlistEntry]:
            res = conn.execute(stmt.returning(*tbl.watchlist.c))
            return sorted((conv.to_watchlist(r) for r in res.mappings()), key=lambda w: w.id)

        return await self._write(tx)

    # ------------------------------------------------------------------------------------------ subscriptions

    async def replace_subscriptions(self, rows: Iterable[SubscriptionRow]) -> int:
        """Rewrite the whole ``subscriptions`` table in one transaction (readers see the old or the new
        content, never a mix). Returns the number of rows."""
        index = conv.sub_index(rows)
        async with self._subs_lock:
            self._subs_state = None
            statements = self._subs_statements(index, None)
            await self._write(lambda conn: run_prepared(conn, statements), inline=len(index) <= 1000)
            self._subs_state = {k: sig for k, (sig, _) in index.items()}
        return len(index)

    def _subs_statements(
        self, subs: conv.SubIndex | conv.SubDelta, previous: dict[conv.SubKey, conv.SubSig] | None
    ) -> list[Prepared]:
        """A change of the subscriptions table: a delta applied by key (correct on top of whatever the table
        holds), a full table as the difference from ``previous`` (what was last written), or whole."""
        d = self._engines.write_dialect
        if isinstance(subs, conv.SubDelta):
            gone: Iterable[conv.SubKey] = subs.gone
            put = [r for _, r in subs.upserts.values()]
        elif previous is None:
            gone, put = (), [r for _, r in subs.values()]
        else:
            gone = [k for k in previous if k not in subs]
            put = [r for k, (sig, r) in subs.items() if previous.get(k) != sig]
        out = (
            []
            if isinstance(subs, conv.SubDelta) or previous is not None
            else [_CLEAR_SUBSCRIPTIONS.prepare(d, [{}])]
        )
        out.append(
            _DELETE_SUBSCRIPTION.prepare(d, [{"segment": seg, "security_id": sid} for seg, sid in gone])
        )
        out.append(_PUT_SUBSCRIPTIONS.prepare(d, [conv.sub_values(r) for r in put]))
        return out

    async def list_subscriptions(
        self, *, state: str | None = None, tier: Tier | None = None
    ) -> list[SubscriptionRow]:
        t = tbl.subscriptions
        stmt = sa.select(t).order_by(t.c.segment, t.c.security_id)
        if state is not None:
            stmt = stmt.where(t.c.state == state)
        if tier is not None:
            stmt = stmt.where(t.c.tier == tier.value)
        return [conv.to_subscription(r) for r in await self._fetch(stmt)]

    # ------------------------------------------------------------------------------------------ ATM cache

    async def upsert_atm(self, entry: AtmEntry) -> None:
        """Insert or replace the cached ATM window of (underlying, expiry)."""
        values = conv.atm_values(entry)

        statement = _PUT_ATM.prepare(self._engines.write_dialect, [values])
        await self._write(lambda conn: run_prepared(conn, [statement]))

    async def get_atm(self, underlying: str, expiry: date) -> AtmEntry | None:
        t = tbl.atm_cache
        rows = await self._fetch(sa.select(t).where(t.c.underlying == underlying, t.c.expiry == expiry))
        return conv.to_atm(rows[0]) if rows else None

    async def list_atm(self) -> list[AtmEntry]:
        t = tbl.atm_cache
        return [conv.to_atm(r) for r in await self._fetch(sa.select(t).order_by(t.c.underlying, t.c.expiry))]

    async def delete_atm_expired(self, today: date) -> int:
        """Drop cached windows of expiries before ``today`` (the daily roll)."""

        def tx(conn: Connection) -> int:
            return conn.execute(sa.delete(tbl.atm_cache).where(tbl.atm_cache.c.expiry < today)).rowcount

        return await self._write(tx)

    # ------------------------------------------------------------------------------------------ audit

    async def audit(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        action: str | Iterable[str] | None = None,
        group_id: str | None = None,
        actor: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> AuditPage:
        """The audit log newest first, filtered; keyset-paginated: pass the page's ``next_cursor`` as
        ``before`` for the next (older) page. Stable under concurrent appends, unlike an offset."""
        limit = max(1, min(int(limit), AUDIT_PAGE_MAX))
        t = tbl.subscription_log
        stmt = sa.select(t).order_by(t.c.id.desc()).limit(limit + 1)
        if since is not None:
            stmt = stmt.where(t.c.at >= utc(since))
        if until is not None:
            stmt = stmt.where(t.c.at < utc(until))
        if action is not None:
            actions = [action] if isinstance(action, str) else list(action)
            stmt = stmt.where(t.c.action.in_([a.strip().upper() for a in actions]))
        if group_id is not None:
            stmt = stmt.where(t.c.group_id == group_id)
        if actor is not None:
            stmt = stmt.where(t.c.actor == actor)
        if before is not None:
            stmt = stmt.where(t.c.id < before)
        rows = await self._fetch(stmt)
        entries = tuple(conv.to_audit(r) for r in rows[:limit])
        return AuditPage(entries, entries[-1].id if len(rows) > limit else None)

    async def audit_count(self, action: str | None = None) -> int:
        t = tbl.subscription_log
        stmt = sa.select(sa.func.count()).select_from(t)
        if action is not None:
            stmt = stmt.where(t.c.action == action.strip().upper())
        async with self._read() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def last_audit(self) -> AuditEntry | None:
        page = await self.audit(limit=1)
        return page.entries[0] if page.entries else None

    # ------------------------------------------------------------------------------------------ meta

    async def get_meta(self, key: str) -> JSONValue:
        """A small JSON value by name (e.g. when each exchange's end of day last ran), None if unset."""
        rows = await self._fetch(sa.select(tbl.meta.c.value).where(tbl.meta.c.key == key))
        return rows[0]["value"] if rows else None

    async def set_meta(self, key: str, value: JSONValue) -> None:
        values = {"key": key, "value": conv._check_json(value), "updated": self.now()}

        def tx(conn: Connection) -> None:
            conn.execute(self._upsert(tbl.meta, ("key",), values, values))

        await self._write(tx)

    # ------------------------------------------------------------------------------------------ writer hooks

    async def _write_batch(
        self,
        audit: list[conv.Row],
        atm: list[conv.Row],
        subs: conv.SubIndex | conv.SubDelta | None,
        touches: Sequence[tuple[int, datetime]] = (),
        marks: Sequence[conv.StateMark] = (),
    ) -> None:
        """One transaction of the writer: audit rows, ATM upserts and a subscriptions change together.

        The subscriptions table changes by one chain per user action, so it is never rewritten whole on
        the hot path: a :class:`~tickgate.store.rows.SubDelta` (from an incremental source) is applied by
        key; a full snapshot is written as a difference from what was last written (a full rewrite the
        first time after open, and after any failed write)."""
        # Prepared inside the transaction function: for a SQLite file that is on the loop either way; on
        # PostgreSQL it runs within run_sync, and on the writer thread when a SQLite write waits there.
        if subs is None:
            await self._write(
                lambda conn: run_prepared(conn, self._batch_statements(audit, atm, touches, marks)),
                background=True,
            )
            return
        async with self._subs_lock:
            previous = self._subs_state
            self._subs_state = None  # unknown until this commits

            def tx(conn: Connection) -> None:
                run_prepared(conn, self._batch_statements(audit, atm, touches, marks))
                run_prepared(conn, self._subs_statements(subs, previous))

            # A whole table (25,000 rows at first write) would hold the loop too long: off the loop.
            whole = not isinstance(subs, conv.SubDelta) and len(subs) > self._settings.writer_subs_chunk
            await self._write(tx, background=True, inline=not whole)
            if isinstance(subs, conv.SubDelta):
                if previous is not None:
                    for k in subs.gone:
                        previous.pop(k, None)
                    previous.update((k, sig) for k, (sig, _) in subs.upserts.items())
                self._subs_state = previous
            else:
                self._subs_state = {k: sig for k, (sig, _) in subs.items()}

    def _batch_statements(
        self,
        audit: list[conv.Row],
        atm: list[conv.Row],
        touches: Sequence[tuple[int, datetime]],
        marks: Sequence[conv.StateMark],
    ) -> list[Prepared]:
        d = self._engines.write_dialect
        return [
            _INSERT_AUDIT.prepare(d, audit),
            _TOUCH_WATCHLIST.prepare(d, [{"wid": wid, "at": utc(at)} for wid, at in touches]),
            _MARK_WATCHLIST.prepare(
                d,
                [
                    {"group": g, "at": m.at, "state": m.state, "reason": m.reason}
                    for m in marks
                    for g in m.groups
                ],
            ),
            _PUT_ATM.prepare(d, atm),
        ]


async def _migrate(engines: Engines, cfg: StoreSettings) -> None:
    async with engines.write.begin() as conn:
        await conn.run_sync(upgrade, cfg.pg_schema)


def _require_user(conn: Connection, user_id: int) -> None:
    if conn.execute(sa.select(tbl.users.c.id).where(tbl.users.c.id == user_id)).first() is None:
        raise NotFoundError(f"no user {user_id}")


def _pk(res: sa.CursorResult[Any]) -> int:
    pk = res.inserted_primary_key
    if pk is None:
        raise RuntimeError("INSERT returned no primary key")
    return int(pk[0])


def _key_values(user_id: int, key: str, at: datetime) -> dict[str, Any]:
    return {"user_id": user_id, "key_hash": hash_key(key), "prefix": key[:_PREFIX_LEN], "created": at}

"""Engines and migrations: the only place that knows SQLite and PostgreSQL differ.

SQLite (the embedded default) is set up so that "database is locked" cannot happen inside the process and
is waited out between processes:

* WAL journal (readers never block the writer, nor the writer the readers), ``synchronous=NORMAL`` (a
  committed transaction survives a killed process; only a power cut may lose the last ones — set
  ``FULL`` for that), ``busy_timeout`` (another process holding the lock is waited for), foreign keys on;
* **one writer connection** (pool of one) behind an ``asyncio.Lock`` in the store, whose transactions start
  with ``BEGIN IMMEDIATE``: the write lock is taken up front, so a transaction never has to upgrade a read
  lock to a write lock half-way (the upgrade is what fails at once with SQLITE_BUSY, whatever the timeout).
  It is a plain ``sqlite3`` connection, and a whole transaction runs **on the event loop's own thread**
  (:meth:`Engines.write_inline`): with WAL, ``synchronous=NORMAL`` and checkpoints moved off the
  connection, a commit is a few hundred microseconds of C and no fsync. Handing it to a thread cost more
  than doing it: two thread hops, and inside ``sqlite3`` the GIL is released and taken back around every
  step, each time waiting up to the switch interval for a busy event loop, and users' adds queued behind
  it (measured: docs/decisions/0002-measured-tradeoffs.md). Only when *another process* holds
  the write lock does a write go to the writer thread (:meth:`Engines.run_write`) to wait for it there:
  the loop never waits on a lock (its attempt runs with ``busy_timeout = 0``);
* WAL checkpoints (which fsync) run on a connection of their own in a worker thread
  (:meth:`Engines.checkpoint`, every ``checkpoint_interval_s``), never inside a commit on the loop;
* a separate pool of read connections with ``query_only`` on, plain deferred ``BEGIN``;
* first-time set-up (switch to WAL, migrations) under a file lock beside the database, one starter at a time.

PostgreSQL uses one ordinary pooled engine for both (MVCC handles concurrent writers).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, pool
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tickgate.config import Settings, StoreSettings

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_FILE_NAME = "tickgate.db"


def database_url(settings: Settings) -> str:
    """``settings.db_url`` (``TICKGATE_DB_URL``), else the SQLite file in the data directory."""
    if settings.db_url:
        return settings.db_url
    return f"sqlite+aiosqlite:///{settings.data_dir / SQLITE_FILE_NAME}"


def normalize_url(url: str | URL) -> URL:
    """Accept the plain forms people type (``sqlite:///x.db``, ``postgresql://…``) and pick the async
    driver this code runs on; any other backend is refused with the reason."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return u.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return u.set(drivername="postgresql+asyncpg")
    raise ValueError(
        f"unsupported database {u.render_as_string(hide_password=True)!r}: use sqlite or postgresql"
    )


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL and for an in-memory SQLite database."""
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database
    if not db or db == ":memory:" or db.startswith("file::memory:") or url.query.get("mode") == "memory":
        return None
    return Path(db)


def is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and sqlite_path(url) is None


@dataclass(frozen=True, slots=True)
class Engines:
    """``write`` takes every write transaction; ``read`` the queries (the same engine on PostgreSQL and
    for an in-memory SQLite database, which exists on one connection only). A SQLite file's writes run on
    ``sync_write`` instead (``write`` then only migrates): inline on the caller's thread, or in the one
    thread of ``write_thread`` while another process holds the file's write lock."""

    url: URL
    write: AsyncEngine
    read: AsyncEngine
    dialect: str
    single_connection: bool
    sync_write: Engine | None = None
    write_thread: ThreadPoolExecutor | None = None
    busy_timeout_ms: int = 0

    @property
    def write_dialect(self) -> Dialect:
        """The dialect of the engine that runs writes (what a prepared statement is compiled for)."""
        return (self.sync_write or self.write).dialect

    @property
    def writes_inline(self) -> bool:
        """Writes may run on the caller's thread (:meth:`write_inline`): a SQLite file."""
        return self.sync_write is not None

    def write_inline(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one transaction on this thread, committed when this returns (rolled back if it raises).

        Never waits for a lock: if another process holds the file's write lock, it raises
        :class:`WriteLockBusyError` at once (nothing was written); the caller waits with
        :meth:`run_write`."""
        if self.sync_write is None:
            raise RuntimeError("inline writes are for a SQLite file only")
        try:
            return _in_transaction(self.sync_write, fn, busy_timeout_ms=0)
        except sa.exc.OperationalError as e:
            if _is_busy(e):
                raise WriteLockBusyError(str(e.orig)) from None
            raise

    async def run_write(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one transaction, committed when this returns (rolled back if it raises); a SQLite
        file's on its writer thread, waiting up to ``busy_timeout_ms`` for another process's lock."""
        if self.sync_write is None or self.write_thread is None:
            async with self.write.begin() as conn:
                return await conn.run_sync(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.write_thread, _in_transaction, self.sync_write, fn, self.busy_timeout_ms
        )

    def checkpoint(self) -> tuple[int, int, int] | None:
        """A PASSIVE WAL checkpoint of a SQLite file on a connection of its own: copies what it can into the
        database without waiting for readers or the writer. Blocking (it fsyncs): run it in a worker
        thread. Returns SQLite's (busy, WAL frames, frames checkpointed); None if not a SQLite file."""
        path = sqlite_path(self.url)
        if path is None:
            return None
        con = sqlite3.connect(path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            busy, frames, done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            con.close()
        return int(busy), int(frames), int(done)

    async def dispose(self) -> None:
        if self.sync_write is not None and self.write_thread is not None:
            await asyncio.get_running_loop().run_in_executor(self.write_thread, self.sync_write.dispose)
            self.write_thread.shutdown(wait=False)
        await self.write.dispose()
        if self.read is not self.write:
            await self.read.dispose()


class WriteLockBusyError(Exception):
    """Another process holds a SQLite file's write lock; nothing was written."""


_BUSY_TIMEOUT = "tickgate_busy_timeout_ms"


def _in_transaction(engine: Engine, fn: Callable[[Connection], T], busy_timeout_ms: int) -> T:
    with engine.connect() as conn:
        if conn.info.get(_BUSY_TIMEOUT) != busy_timeout_ms:  # set on the driver: no autobegin
            conn.connection.dbapi_connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")  # type: ignore[union-attr]
            conn.info[_BUSY_TIMEOUT] = busy_timeout_ms
        with conn.begin():
            return fn(conn)


@contextmanager
def sqlite_errors_wrapped(sql: str, params: Any = None) -> Iterator[None]:
    """A ``sqlite3`` call made on the driver directly raises what SQLAlchemy would have raised for it
    (``OperationalError``, ``IntegrityError``…), so callers tell transient failures from refusals alike."""
    try:
        yield
    except sqlite3.Error as e:
        raise sa.exc.DBAPIError.instance(sql, params, e, sqlite3.Error) from e


def _is_busy(e: sa.exc.OperationalError) -> bool:
    code = getattr(e.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_BUSY


def _sqlite_setup(engine: Engine, cfg: StoreSettings, *, writer: bool, raw_begin: bool = False) -> None:
    """Pragmas on every new connection, and our own BEGIN (see the module docstring); ``raw_begin``: sent
    on the ``sqlite3`` connection itself (the inline writer: SQLAlchemy's statement machinery cost more
    than the BEGIN on a path every write takes), its errors wrapped as SQLAlchemy would wrap them."""
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver so BEGIN is ours (see the module docstring).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(cfg.busy_timeout_ms)}")
            cur.execute(f"PRAGMA synchronous = {cfg.sqlite_synchronous}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not writer:
                cur.execute("PRAGMA query_only = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if not raw_begin:
            conn.exec_driver_sql(begin)
            return
        with sqlite_errors_wrapped(begin):
            conn.connection.dbapi_connection.execute(begin)  # type: ignore[union-attr]


def _sqlite_engine(url: URL, cfg: StoreSettings, *, writer: bool, memory: bool) -> AsyncEngine:
    kwargs: dict[str, Any] = {}
    if memory:
        kwargs["poolclass"] = pool.StaticPool
    elif writer:
        kwargs.update(pool_size=1, max_overflow=0)
    else:
        kwargs.update(pool_size=cfg.pool_size, max_overflow=0)
    engine = create_async_engine(url, connect_args={"timeout": cfg.busy_timeout_ms / 1000}, **kwargs)
    _sqlite_setup(engine.sync_engine, cfg, writer=writer)
    return engine


def _sqlite_thread_writer(url: URL, cfg: StoreSettings) -> tuple[Engine, ThreadPoolExecutor]:
    """The writer connection of a SQLite file and the one thread that uses it."""
    engine = sa.create_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_size=1,
        max_overflow=0,
        # only the writer thread uses it; disposing it from elsewhere at close must not be refused
        connect_args={"timeout": cfg.busy_timeout_ms / 1000, "check_same_thread": False},
    )
    _sqlite_setup(engine, cfg, writer=True, raw_begin=True)

    @event.listens_for(engine, "connect")
    def _no_autocheckpoint(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # A commit that crosses the WAL's size limit would checkpoint (and fsync) on the event loop:
        # Engines.checkpoint does it on a worker thread instead.
        dbapi_conn.execute("PRAGMA wal_autocheckpoint = 0")

    return engine, ThreadPoolExecutor(max_workers=1, thread_name_prefix="tickgate-sqlite-writer")


def pg_engine(url: URL, cfg: StoreSettings) -> AsyncEngine:
    """A pooled PostgreSQL engine on ``cfg``'s schema (the store's, and the gateway's lease's)."""
    check_schema_name(cfg.pg_schema)
    connect_args: dict[str, Any] = {}
    if cfg.pg_schema:
        connect_args["server_settings"] = {"search_path": cfg.pg_schema}
    return create_async_engine(
        url,
        pool_size=cfg.pool_size,
        max_overflow=cfg.pool_size * 2,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_schema_name(schema: str | None) -> None:
    """Schema names end up in DDL (``CREATE SCHEMA``) and cannot be bound as parameters: plain words only."""
    if schema is not None and not _SCHEMA_RE.match(schema):
        raise ValueError(f"invalid PostgreSQL schema name {schema!r}")


def create_engines(url: str | URL, cfg: StoreSettings) -> Engines:
    """The engines for ``url`` (see the module docstring); creates a SQLite file's directory."""
    check_schema_name(cfg.pg_schema)
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        path = sqlite_path(u)
        if path is None:
            eng = _sqlite_engine(u, cfg, writer=True, memory=True)
            return Engines(u, eng, eng, "sqlite", single_connection=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write = _sqlite_engine(u, cfg, writer=True, memory=False)
        read = _sqlite_engine(u, cfg, writer=False, memory=False)
        sync_write, thread = _sqlite_thread_writer(u, cfg)
        return Engines(u, write, read, "sqlite", False, sync_write, thread, cfg.busy_timeout_ms)
    eng = pg_engine(u, cfg)
    return Engines(u, eng, eng, "postgresql", single_connection=False)


# ---------------------------------------------------------------------------------------------- SQLite set-up


@asynccontextmanager
async def sqlite_init_lock(db_path: Path) -> AsyncIterator[None]:
    """Serialise first-time set-up of one SQLite file across processes (and stores in one process).

    Switching a fresh file to WAL needs an exclusive lock; two starters doing it while one of them is
    already migrating deadlock until the busy timeout ("database is locked"). An ``flock`` on a sidecar
    file (never on the database itself: closing any descriptor of the database would drop SQLite's own
    POSIX locks) makes set-up one-at-a-time; the kernel releases it if the holder is killed."""
    if fcntl is None:  # pragma: no cover - not a POSIX system
        yield
        return
    fd = os.open(f"{db_path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fut = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
    try:
        await asyncio.shield(fut)
    except BaseException:
        fut.add_done_callback(lambda _f: os.close(fd))
        raise
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def sqlite_enable_wal(db_path: Path, cfg: StoreSettings) -> str:
    """Put the file in WAL mode (persistent: every later connection uses it). Returns the mode."""
    con = sqlite3.connect(db_path, timeout=cfg.busy_timeout_ms / 1000, isolation_level=None)
    try:
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    finally:
        con.close()
    if str(mode).lower() != "wal":
        raise RuntimeError(f"{db_path}: could not switch SQLite to WAL (journal_mode is {mode!r})")
    return str(mode)


# ---------------------------------------------------------------------------------------------- migrations


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped inside the package (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection, schema: str | None = None, revision: str = "head") -> None:
    """Run ``alembic upgrade`` on ``conn`` inside its (already begun) transaction, so a crash mid-way leaves
    the previous schema. Concurrent starters are serialised: SQLite by ``BEGIN IMMEDIATE``, PostgreSQL by a
    transaction-scoped advisory lock (then the loser finds the schema at head and does nothing)."""
    check_schema_name(schema)
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(f"tickgate-migrate:{schema or ''}".encode())
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        if schema:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    before = current_revision(conn)
    command.upgrade(alembic_config(conn), revision)
    after = current_revision(conn)
    if before != after:
        log.info("database schema migrated", extra={"from_revision": before, "to_revision": after})


def downgrade(conn: Connection, revision: str) -> None:
    """``alembic downgrade`` on ``conn`` (operators rolling back a release; tests of the migrations)."""
    command.downgrade(alembic_config(conn), revision)

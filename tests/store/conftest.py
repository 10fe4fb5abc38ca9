"""Store fixtures: every test taking ``db`` or ``store`` runs on SQLite *and* PostgreSQL.

PostgreSQL is ``TICKGATE_TEST_PG_URL`` (default: the machine's server, trust auth, database ``test``). Each
test gets a schema of its own (dropped afterwards), so reruns and parallel sessions never see each other.
PostgreSQL being unreachable FAILS the PostgreSQL half of the suite: CI guarantees the server, so a skip
would only hide a broken setup.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from tickgate.config import StoreSettings
from tickgate.store import Store

PG_URL = os.environ.get("TICKGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
T = TypeVar("T")


@dataclass(frozen=True)
class Db:
    kind: str
    url: str
    settings: StoreSettings
    path: Path | None = None

    def with_settings(self, **kw: Any) -> Db:
        return Db(self.kind, self.url, self.settings.model_copy(update=kw), self.path)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, on a thread of its own (any loop may be running)."""
    out: list[T] = []
    err: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def _pg_dsn() -> str:
    return make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_exec(sql: str) -> None:
    conn = await asyncpg.connect(_pg_dsn(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


_pg_error: list[str | None] = []


def pg_unreachable() -> str | None:
    """None if PostgreSQL answers ``select 1``, else why not (checked once per session)."""
    if not _pg_error:
        try:
            run_sync(_pg_exec("select 1"))
            _pg_error.append(None)
        except Exception as e:
            _pg_error.append(f"{type(e).__name__}: {e}")
        else:
            run_sync(_drop_orphan_schemas())
    return _pg_error[0]


async def _drop_orphan_schemas() -> None:
    """Schemas left by test runs that were killed before their teardown (their pid is gone)."""
    conn = await asyncpg.connect(_pg_dsn(), timeout=5)
    try:
        names = [
            r[0] for r in await conn.fetch("select nspname from pg_namespace where nspname like 'tgtest_%'")
        ]
        for name in names:
            pid = int(name.split("_")[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            except PermissionError:
                pass  # someone else's live process
    finally:
        await conn.close()


def new_pg_schema() -> str:
    return f"tgtest_{os.getpid()}_{uuid.uuid4().hex[:10]}"


def drop_pg_schema(schema: str) -> None:
    run_sync(_pg_exec(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """Where a test's database lives (not opened)."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "tickgate.db"
        yield Db("sqlite", f"sqlite+aiosqlite:///{path}", StoreSettings(), path)
        return
    yield from _pg_db()


def _pg_db() -> Iterator[Db]:
    why = pg_unreachable()
    if why is not None:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_URL} ({why}). The store suite must run on PostgreSQL too: "
            "start the server (CI's .ci/run checks it with pg_isready) or point TICKGATE_TEST_PG_URL at one."
        )
    schema = new_pg_schema()
    try:
        yield Db("postgresql", PG_URL, StoreSettings(pg_schema=schema))
    finally:
        drop_pg_schema(schema)


@pytest.fixture
async def store(db: Db) -> AsyncIterator[Store]:
    s = await Store.open(db.url, settings=db.settings)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Db:
    """SQLite only, for what only SQLite has (pragmas, its file on disk)."""
    path = tmp_path / "data" / "tickgate.db"
    return Db("sqlite", f"sqlite+aiosqlite:///{path}", StoreSettings(), path)


@pytest.fixture
def pg_db() -> Iterator[Db]:
    """PostgreSQL only, for what only PostgreSQL has (server-side connection kills)."""
    yield from _pg_db()


async def log_now(store: Store, action: str, **fields: Any) -> None:
    """Append one audit row and wait for it to be committed (the writer is the store's one audit path)."""
    store.writer.submit_log(action, **fields)
    await store.writer.flush(timeout=30)

"""Schema: migrations from empty, idempotent re-open, no drift from the code's metadata, SQLite pragmas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc

from tickgate.config import Settings
from tickgate.store import Store, database_url, head_revision, normalize_url
from tickgate.store import schema as tbl
from tickgate.store.engine import create_engines, downgrade, upgrade

from .conftest import Db, log_now

TABLES = {
    "users",
    "api_keys",
    "watchlist",
    "subscriptions",
    "atm_cache",
    "subscription_log",
    "meta",
    "last_quotes",
}


async def test_upgrade_from_empty_creates_every_table_at_head(db: Db) -> None:
    store = await Store.open(db.url, settings=db.settings)
    try:
        assert await store.schema_revision() == head_revision() == "0005"
        async with store._engines.read.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert names >= TABLES | {"alembic_version"}
        assert await store.ping()
    finally:
        await store.close()
    if db.path is not None:
        assert db.path.exists(), "the SQLite file (and its directory) is created by open"


async def test_reopen_is_idempotent_and_keeps_data(db: Db) -> None:
    s1 = await Store.open(db.url, settings=db.settings)
    user, _ = await s1.users.create("kept")
    await s1.close()
    s2 = await Store.open(db.url, settings=db.settings)
    try:
        assert await s2.schema_revision() == head_revision()
        assert await s2.users.get(user.id) == user
    finally:
        await s2.close()


async def test_migrations_match_the_metadata_the_code_queries(db: Db) -> None:
    store = await Store.open(db.url, settings=db.settings)
    try:
        async with store._engines.write.connect() as conn:

            def diff(c: sa.Connection) -> list[object]:
                mc = MigrationContext.configure(c, opts={"compare_type": True})
                return list(compare_metadata(mc, tbl.metadata))

            assert await conn.run_sync(diff) == []
    finally:
        await store.close()


async def test_concurrent_first_opens_migrate_once(db: Db) -> None:
    stores = await asyncio.gather(*(Store.open(db.url, settings=db.settings) for _ in range(4)))
    try:
        for s in stores:
            assert await s.schema_revision() == head_revision()
    finally:
        for s in stores:
            await s.close()


async def test_downgrade_to_base_and_up_again(db: Db) -> None:
    engines = create_engines(db.url, db.settings)
    try:
        async with engines.write.begin() as conn:
            await conn.run_sync(upgrade, db.settings.pg_schema)
        async with engines.write.begin() as conn:
            await conn.run_sync(downgrade, "base")
        # Nothing of ours is left behind after a downgrade…
        async with engines.write.begin() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            assert not names & TABLES
            await conn.run_sync(upgrade, db.settings.pg_schema)
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            assert names >= TABLES
    finally:
        await engines.dispose()


async def test_audit_log_is_append_only_in_the_database(store: Store) -> None:
    await log_now(store, "STARTUP", actor="test")
    for stmt in (
        sa.update(tbl.subscription_log).values(actor="tampered"),
        sa.delete(tbl.subscription_log),
    ):
        with pytest.raises(sa_exc.DBAPIError, match="append-only"):
            async with store._engines.write.begin() as conn:
                await conn.execute(stmt)
    page = await store.audit.page()
    assert [e.actor for e in page.entries] == ["test"]


async def test_sqlite_pragmas(sqlite_db: Db) -> None:
    db = sqlite_db
    store = await Store.open(db.url, settings=db.settings.model_copy(update={"busy_timeout_ms": 4321}))
    try:
        for engine in (store._engines.write, store._engines.read):
            async with engine.connect() as conn:
                got = {
                    p: (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                    for p in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
                }
            assert got == {"journal_mode": "wal", "busy_timeout": 4321, "synchronous": 1, "foreign_keys": 1}
        # The read pool cannot write, even by mistake.
        async with store._engines.read.connect() as conn:
            with pytest.raises(sa_exc.OperationalError, match="readonly"):
                await conn.execute(sa.insert(tbl.meta).values(key="x", value=1, updated=datetime.now(UTC)))
    finally:
        await store.close()


async def test_in_memory_sqlite_works_on_one_connection() -> None:
    store = await Store.open("sqlite+aiosqlite://")
    try:
        user, key = await store.users.create("mem")
        assert await store.users.authenticate(key) == user
        store.writer.submit_log("STARTUP", actor="test")
        await store.writer.flush(timeout=5)
        assert (await store.audit.page()).entries[0].action == "STARTUP"
    finally:
        await store.close()


async def test_default_url_is_sqlite_in_the_data_dir(tmp_path: object) -> None:
    from pathlib import Path

    data_dir = Path(str(tmp_path)) / "nested" / "data"
    settings = Settings(data_dir=data_dir, db_url=None)
    assert database_url(settings) == f"sqlite+aiosqlite:///{data_dir / 'tickgate.db'}"
    store = await Store.from_settings(settings)
    try:
        assert await store.ping()
        assert (data_dir / "tickgate.db").exists()
    finally:
        await store.close()
    assert not await store.ping()


def test_url_normalisation() -> None:
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql+asyncpg://u@h/d").drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError, match="unsupported database"):
        normalize_url("mysql://u@h/d")


async def test_bad_schema_name_is_refused() -> None:
    from tickgate.config import StoreSettings

    with pytest.raises(ValueError, match="schema"):
        await Store.open(
            "postgresql+asyncpg://x@127.0.0.1/test", settings=StoreSettings(pg_schema='a"; drop')
        )

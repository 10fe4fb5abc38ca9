"""Alembic environment: runs on the connection ``tickgate.store.engine.upgrade`` hands over (inside its
transaction), or — for a developer writing a new revision with the ``alembic`` command — on a connection it
opens itself to ``TICKGATE_DB_URL`` / the configured default."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from tickgate.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    from tickgate.config import Settings
    from tickgate.store.engine import create_engines, database_url

    settings = Settings()
    url = context.config.get_main_option("sqlalchemy.url") or database_url(settings)
    engines = create_engines(url, settings.store)
    try:
        async with engines.write.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engines.dispose()


if context.is_offline_mode():
    raise RuntimeError("tickgate migrations run online only (they use the live connection)")

_conn = context.config.attributes.get("connection")
if _conn is not None:
    _run(_conn)
else:
    asyncio.run(_run_standalone())

"""A PostgreSQL schema of its own for each multi-process test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from .cluster import PG


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"tgtest_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    dsn = make_url(PG).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    await conn.close()

"""Alembic migrations of the tickgate database, run programmatically by ``Store.open`` (upgrade to head)."""

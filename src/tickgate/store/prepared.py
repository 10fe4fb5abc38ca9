"""Statements the store runs by the hundred, prepared once for the driver's own ``executemany``.

Every statement of a writer batch and the watchlist add's upsert is a :class:`DriverStatement`; each
repository owns its statements, and :func:`run_prepared` runs them in a transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.dml import UpdateBase

from tickgate.store.engine import sqlite_errors_wrapped


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


def insert_new(dialect: str, table: sa.Table, keys: Sequence[str], values: dict[str, Any]) -> sa.Insert:
    """INSERT … ON CONFLICT (``keys``) DO NOTHING in ``dialect``: a row already there is kept."""
    ins = (pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert)(table)
    return ins.values(values).on_conflict_do_nothing(index_elements=list(keys))


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

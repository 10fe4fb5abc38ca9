"""Persistence (issue 6): SQLite by default, PostgreSQL by URL, through the same SQLAlchemy Core code.

``await Store.open(url)`` migrates the schema (Alembic, shipped in the package) and returns a ready store;
repositories (``store.users``, ``store.watchlists``, ``store.audit``, ...) for reads and for what must be
durable before it is acknowledged, and ``store.writer`` for what the hot path hands off without waiting
(audit events, subscription snapshots, use times, ATM cache). See ``core`` for the map.
"""

from tickgate.store.core import Store
from tickgate.store.engine import database_url, head_revision, normalize_url
from tickgate.store.planner_view import subscription_rows
from tickgate.store.types import (
    ApiKey,
    AtmEntry,
    AuditAction,
    AuditEntry,
    AuditPage,
    DuplicateError,
    NotFoundError,
    StoreError,
    SubscriptionRow,
    User,
    WatchlistEntry,
    WatchlistState,
    action_for,
)
from tickgate.store.users import hash_key
from tickgate.store.writer import StoreWriter

__all__ = [
    "ApiKey",
    "AtmEntry",
    "AuditAction",
    "AuditEntry",
    "AuditPage",
    "DuplicateError",
    "NotFoundError",
    "Store",
    "StoreError",
    "StoreWriter",
    "SubscriptionRow",
    "User",
    "WatchlistEntry",
    "WatchlistState",
    "action_for",
    "database_url",
    "hash_key",
    "head_revision",
    "normalize_url",
    "subscription_rows",
]

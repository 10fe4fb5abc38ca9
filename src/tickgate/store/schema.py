"""The tables, as SQLAlchemy Core metadata. This is what the code queries; the Alembic migrations in
``migrations/versions`` are what creates them, and a test checks the two agree (no drift).

Portable types only: the same statements run on SQLite and PostgreSQL. Times are ``UTCDateTime`` (aware
UTC in Python, UTC in the database on both), JSON is the generic ``JSON`` type.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases. SQLite has no time zones: it stores the naive UTC text
    (which sorts chronologically); PostgreSQL stores ``timestamptz``. Reads always come back aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} bound to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), never a BIGINT one.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _created() -> sa.Column[Any]:
    return sa.Column("created", UTCDateTime(), nullable=False)


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    _created(),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex of the key
    sa.Column("prefix", sa.String(16), nullable=False),  # first characters, for display
    _created(),
    sa.Column("revoked", UTCDateTime(), nullable=True),
)

watchlist = sa.Table(
    "watchlist",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("symbol", sa.String(64), nullable=False),  # the underlying's symbol
    sa.Column("exchange", sa.String(16), nullable=False),  # NSE / BSE / MCX: which EOD clears it
    sa.Column("expiry", sa.Date, nullable=True),  # None for a stock-only entry
    sa.Column("strikes", sa.Integer, nullable=True),  # strikes in the chain window
    sa.Column("mode", sa.String(8), nullable=False),  # FeedMode name
    sa.Column("group_id", sa.String(200), nullable=False, unique=True),  # the planner group
    _created(),
    sa.Column("last_used", UTCDateTime(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active / evicted
    sa.Column("state_reason", sa.Text, nullable=True),
    sa.Column("atm", sa.Float, nullable=True),  # the strike its window sits on (a restart rebuilds it there)
    sa.Index(None, "exchange"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("segment", sa.String(16), primary_key=True),  # ExchangeSegment name
    sa.Column("security_id", sa.BigInteger, primary_key=True),
    sa.Column("owners", sa.JSON, nullable=False),  # list of planner group ids
    sa.Column("tier", sa.String(1), nullable=False),
    sa.Column("connection", sa.Integer, nullable=True),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # placed / suspended
    sa.Column("updated", UTCDateTime(), nullable=False),
)

atm_cache = sa.Table(
    "atm_cache",
    metadata,
    sa.Column("underlying", sa.String(64), primary_key=True),
    sa.Column("expiry", sa.Date, primary_key=True),
    sa.Column("atm", sa.Float, nullable=False),
    sa.Column("window", sa.JSON, nullable=False),  # list of strikes
    sa.Column("ltp", sa.Float, nullable=True),
    sa.Column("computed_at", UTCDateTime(), nullable=False),
)

subscription_log = sa.Table(
    "subscription_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("group_id", sa.String(200), nullable=True),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("tier", sa.String(1), nullable=True),
    sa.Column("connection", sa.Integer, nullable=True),
    sa.Column("target", sa.Integer, nullable=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("mode", sa.String(8), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("details", sa.JSON, nullable=True),
    sa.Index(None, "at"),
    sa.Index(None, "action", "id"),
    sa.Index(None, "group_id"),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("updated", UTCDateTime(), nullable=False),
)

# The last quote of each instrument at its exchange's end of day: a restart after hours shows the day's
# last prices and previous close instead of blanks (one row per instrument, the latest day's).
last_quotes = sa.Table(
    "last_quotes",
    metadata,
    sa.Column("segment", sa.String(16), primary_key=True),  # ExchangeSegment name
    sa.Column("security_id", sa.BigInteger, primary_key=True),
    sa.Column("trading_date", sa.Date, nullable=False),
    sa.Column("ltp", sa.Float, nullable=False),
    sa.Column("prev_close", sa.Float, nullable=True),
    sa.Column("open", sa.Float, nullable=True),
    sa.Column("high", sa.Float, nullable=True),
    sa.Column("low", sa.Float, nullable=True),
    sa.Column("volume", sa.BigInteger, nullable=True),
    sa.Column("oi", sa.BigInteger, nullable=True),
    sa.Column("prev_oi", sa.BigInteger, nullable=True),
    sa.Column("saved_at", UTCDateTime(), nullable=False),
)

# Which gateway may hold the Dhan sockets (tickgate.store.lease): one row per lease, its expiry on the
# database's clock, its epoch the fencing token every takeover increments. Used on PostgreSQL only (the
# split mode refuses SQLite); the table exists on both so that one schema serves both.
gateway_lease = sa.Table(
    "gateway_lease",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# Commands a replica sent the gateway (tickgate.api.commands), by their idempotency key: the first answer
# is kept, so a retry during a failover gets that answer instead of doing the work twice.
command_log = sa.Table(
    "command_log",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("op", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)

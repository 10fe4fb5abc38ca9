"""Initial schema: users, api_keys, watchlist, subscriptions, atm_cache, subscription_log, meta.

Written by hand (a frozen copy, not an import of ``schema.py``, so later model edits cannot rewrite history);
``tests/store/test_migrations.py`` checks that head matches ``schema.metadata``.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_APPEND_ONLY_MSG = "subscription_log is append-only"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created", _TS, nullable=False),
        sa.Column("revoked", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_keys_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])

    op.create_table(
        "watchlist",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("exchange", sa.String(16), nullable=False),
        sa.Column("expiry", sa.Date, nullable=True),
        sa.Column("strikes", sa.Integer, nullable=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("group_id", sa.String(200), nullable=False),
        sa.Column("created", _TS, nullable=False),
        sa.Column("last_used", _TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_watchlist"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_watchlist_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("group_id", name="uq_watchlist_group_id"),
    )
    op.create_index("ix_watchlist_user_id", "watchlist", ["user_id"])
    op.create_index("ix_watchlist_exchange", "watchlist", ["exchange"])

    op.create_table(
        "subscriptions",
        sa.Column("segment", sa.String(16), nullable=False),
        sa.Column("security_id", sa.BigInteger, nullable=False),
        sa.Column("owners", sa.JSON, nullable=False),
        sa.Column("tier", sa.String(1), nullable=False),
        sa.Column("connection", sa.Integer, nullable=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated", _TS, nullable=False),
        sa.PrimaryKeyConstraint("segment", "security_id", name="pk_subscriptions"),
    )

    op.create_table(
        "atm_cache",
        sa.Column("underlying", sa.String(64), nullable=False),
        sa.Column("expiry", sa.Date, nullable=False),
        sa.Column("atm", sa.Float, nullable=False),
        sa.Column("window", sa.JSON, nullable=False),
        sa.Column("ltp", sa.Float, nullable=True),
        sa.Column("computed_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("underlying", "expiry", name="pk_atm_cache"),
    )

    op.create_table(
        "subscription_log",
        sa.Column("id", _BIGID, nullable=False, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_subscription_log"),
    )
    op.create_index("ix_subscription_log_at", "subscription_log", ["at"])
    op.create_index("ix_subscription_log_action_id", "subscription_log", ["action", "id"])
    op.create_index("ix_subscription_log_group_id", "subscription_log", ["group_id"])

    op.create_table(
        "meta",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("updated", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )

    # The audit log is append-only in the database itself, not only by convention of the code.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION subscription_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY_MSG}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER subscription_log_no_change BEFORE UPDATE OR DELETE ON subscription_log "
            "FOR EACH ROW EXECUTE FUNCTION subscription_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER subscription_log_no_truncate BEFORE TRUNCATE ON subscription_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION subscription_log_append_only()"
        )
    else:
        for what in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER subscription_log_no_{what.lower()} BEFORE {what} ON subscription_log "
                f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MSG}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS subscription_log_no_truncate ON subscription_log")
        op.execute("DROP TRIGGER IF EXISTS subscription_log_no_change ON subscription_log")
        op.execute("DROP FUNCTION IF EXISTS subscription_log_append_only()")
    for table in ("meta", "subscription_log", "atm_cache", "subscriptions", "watchlist", "api_keys", "users"):
        op.drop_table(table)

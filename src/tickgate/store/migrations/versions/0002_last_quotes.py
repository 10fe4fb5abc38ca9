"""The last quote of each instrument, saved at its exchange's end of day (issue 16).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "last_quotes",
        sa.Column("segment", sa.String(16), nullable=False),
        sa.Column("security_id", sa.BigInteger, nullable=False),
        sa.Column("trading_date", sa.Date, nullable=False),
        sa.Column("ltp", sa.Float, nullable=False),
        *(sa.Column(name, sa.Float, nullable=True) for name in ("prev_close", "open", "high", "low")),
        *(sa.Column(name, sa.BigInteger, nullable=True) for name in ("volume", "oi", "prev_oi")),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("segment", "security_id", name="pk_last_quotes"),
    )


def downgrade() -> None:
    op.drop_table("last_quotes")

"""Each users' chain remembers the ATM its window sits on, so that a restart rebuilds every chain on its own
window: two users' windows of one chain may sit on different strikes (hysteresis is per chain), and the
ATM cache keeps one per underlying and expiry (issue 16: a restart yields the same key set).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("watchlist") as batch:
        batch.add_column(sa.Column("atm", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("watchlist") as batch:
        batch.drop_column("atm")

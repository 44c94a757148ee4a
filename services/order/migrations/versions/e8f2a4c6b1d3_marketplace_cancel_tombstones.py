"""marketplace cancellations that arrived before their order (tombstones)

Revision ID: e8f2a4c6b1d3
Revises: d41c0e5a7b93
Create Date: 2026-12-03 09:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e8f2a4c6b1d3"
down_revision: str | None = "d41c0e5a7b93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "marketplace_tombstone",
        sa.Column("channel", sa.String(32), primary_key=True),
        sa.Column("external_id", sa.String(128), primary_key=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("marketplace_tombstone")

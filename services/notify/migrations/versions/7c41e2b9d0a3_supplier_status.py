"""supplier status from supplier-status-changed events (replaces breaker rows in watch_state)

Revision ID: 7c41e2b9d0a3
Revises: 30a2d71a4586
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '7c41e2b9d0a3'
down_revision: str | None = '30a2d71a4586'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('supplier_status',
    sa.Column('supplier_id', sa.String(length=64), nullable=False),
    sa.Column('available', sa.Boolean(), nullable=False),
    sa.Column('outages', sa.Integer(), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('supplier_id', name=op.f('pk_supplier_status'))
    )
    # breaker states scraped from the supplier service's /metrics: no longer kept
    op.execute("DELETE FROM watch_state WHERE topic LIKE 'breaker:%'")


def downgrade() -> None:
    op.drop_table('supplier_status')

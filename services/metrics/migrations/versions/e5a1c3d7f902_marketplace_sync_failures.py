"""marketplace sync failure facts

Revision ID: e5a1c3d7f902
Revises: a7c3e5f1b902
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'e5a1c3d7f902'
down_revision: str | None = 'a7c3e5f1b902'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'marketplace_sync_failure',
        sa.Column('event_id', sa.String(length=64), nullable=False),
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('platform', sa.String(length=16), nullable=False),
        sa.Column('operation', sa.String(length=16), nullable=False),
        sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('event_id', name=op.f('pk_marketplace_sync_failure')),
    )
    op.create_index(
        op.f('ix_marketplace_sync_failure_failed_at'),
        'marketplace_sync_failure',
        ['failed_at'],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f('ix_marketplace_sync_failure_failed_at'), table_name='marketplace_sync_failure'
    )
    op.drop_table('marketplace_sync_failure')

"""hold facts

Revision ID: d41f8e2c7b15
Revises: 834a39551afc
Create Date: 2026-12-03 06:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'd41f8e2c7b15'
down_revision: str | None = '834a39551afc'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('hold',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('held_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_hold'))
    )
    op.create_index(op.f('ix_hold_held_at'), 'hold', ['held_at'], unique=False)
    op.create_table('hold_release',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_hold_release'))
    )
    op.create_index(
        op.f('ix_hold_release_released_at'), 'hold_release', ['released_at'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_hold_release_released_at'), table_name='hold_release')
    op.drop_table('hold_release')
    op.drop_index(op.f('ix_hold_held_at'), table_name='hold')
    op.drop_table('hold')

"""order holds

Revision ID: a93d5b7e21c6
Revises: 7c41e2b9d0a3
Create Date: 2026-12-03 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'a93d5b7e21c6'
down_revision: str | None = '7c41e2b9d0a3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('order_hold',
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('held_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('alerted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('order_id', 'reason', 'held_at', name=op.f('pk_order_hold'))
    )
    op.create_table('order_release',
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('order_id', name=op.f('pk_order_release'))
    )
    op.create_index(
        'ix_order_hold_open', 'order_hold', ['released_at', 'alerted_at', 'held_at'], unique=False
    )


def downgrade() -> None:
    op.drop_index('ix_order_hold_open', table_name='order_hold')
    op.drop_table('order_hold')
    op.drop_table('order_release')

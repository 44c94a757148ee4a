"""waiting lines, clock alarms, tracking movement, order holds, supplier marks

Revision ID: a7c1e2d3f4b5
Revises: bffd594a87f3
Create Date: 2026-12-03 06:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'a7c1e2d3f4b5'
down_revision: str | None = 'bffd594a87f3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'waiting_line',
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('line_id', sa.String(length=80), nullable=False),
        sa.Column('reason', sa.String(length=24), nullable=False),
        sa.Column('since', sa.DateTime(timezone=True), nullable=False),
        sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('order_id', 'line_id', name=op.f('pk_waiting_line')),
    )
    op.create_index('ix_waiting_line_retry', 'waiting_line', ['retry_at'], unique=False)
    op.create_table(
        'clock_alarm',
        sa.Column('subject', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('fired_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('subject', 'kind', name=op.f('pk_clock_alarm')),
    )
    op.create_table(
        'tracking_movement',
        sa.Column('tracking_number', sa.String(length=128), nullable=False),
        sa.Column('moved_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('tracking_number', name=op.f('pk_tracking_movement')),
    )
    op.create_table(
        'order_hold',
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('held_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('parked', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('order_id', name=op.f('pk_order_hold')),
    )
    op.create_table(
        'supplier_mark',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('supplier_id', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_supplier_mark')),
    )
    op.create_index('ix_supplier_mark_supplier', 'supplier_mark', ['supplier_id', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_supplier_mark_supplier', table_name='supplier_mark')
    op.drop_table('supplier_mark')
    op.drop_table('order_hold')
    op.drop_table('tracking_movement')
    op.drop_table('clock_alarm')
    op.drop_index('ix_waiting_line_retry', table_name='waiting_line')
    op.drop_table('waiting_line')

"""supplier returns and chargebacks

Revision ID: d8b2c4e6f0a1
Revises: a7c1e2d3f4b5
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'd8b2c4e6f0a1'
down_revision: str | None = 'a7c1e2d3f4b5'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'supplier_return',
        sa.Column('return_id', sa.String(length=64), nullable=False),
        sa.Column('supplier_id', sa.String(length=64), nullable=False),
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('reason', sa.String(length=32), nullable=False),
        sa.Column('units', sa.Integer(), nullable=False),
        sa.Column('defect', sa.Boolean(), nullable=False),
        sa.Column('authorized_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('return_id', 'supplier_id', name=op.f('pk_supplier_return')),
    )
    op.create_index(
        'ix_supplier_return_supplier', 'supplier_return', ['supplier_id', 'defect'], unique=False
    )
    op.create_table(
        'supplier_chargeback',
        sa.Column('refund_id', sa.String(length=64), nullable=False),
        sa.Column('supplier_id', sa.String(length=64), nullable=False),
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('return_id', sa.String(length=64), nullable=True),
        sa.Column('amount', sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('reason', sa.String(length=32), nullable=False),
        sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('refund_id', name=op.f('pk_supplier_chargeback')),
    )
    op.create_index(
        'ix_supplier_chargeback_supplier',
        'supplier_chargeback',
        ['supplier_id', 'issued_at'],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index('ix_supplier_chargeback_supplier', table_name='supplier_chargeback')
    op.drop_table('supplier_chargeback')
    op.drop_index('ix_supplier_return_supplier', table_name='supplier_return')
    op.drop_table('supplier_return')

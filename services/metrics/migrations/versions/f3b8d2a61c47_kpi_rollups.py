"""kpi rollups, backfilled from the facts

Revision ID: f3b8d2a61c47
Revises: e5a1c3d7f902
Create Date: 2026-12-03 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'f3b8d2a61c47'
down_revision: str | None = 'e5a1c3d7f902'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORDER_INDEXED = ('cancellation', 'routing_failure', 'hold', 'hold_release', 'notice')


def upgrade() -> None:
    op.create_table(
        'kpi_rollup',
        sa.Column('dim', sa.String(length=16), nullable=False),
        sa.Column('period', sa.String(length=1), nullable=False),
        sa.Column('start', sa.String(length=10), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('metric', sa.String(length=32), nullable=False),
        sa.Column('label', sa.String(length=300), nullable=False),
        sa.Column('since', sa.String(length=10), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.Column('amount', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            'dim', 'period', 'start', 'key', 'metric', 'label', 'since',
            name=op.f('pk_kpi_rollup'),
        ),
    )
    for table in ORDER_INDEXED:
        op.create_index(op.f(f'ix_{table}_order_id'), table, ['order_id'], unique=False)
    # the facts already stored: their rollups, computed as the consumer computes them
    from services.metrics.rollup_backfill import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    for table in ORDER_INDEXED:
        op.drop_index(op.f(f'ix_{table}_order_id'), table_name=table)
    op.drop_table('kpi_rollup')

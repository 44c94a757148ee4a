"""holds and waiting lines

Revision ID: b7e3c1a90d42
Revises: 1d7e41639bca
Create Date: 2026-12-03 06:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'b7e3c1a90d42'
down_revision: str | None = '1d7e41639bca'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('customer_order', sa.Column('holds', sa.JSON(), nullable=True))
    op.add_column('order_line', sa.Column('waiting', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('order_line') as batch:
        batch.drop_column('waiting')
    with op.batch_alter_table('customer_order') as batch:
        batch.drop_column('holds')

"""waiting watch

Revision ID: b3d5f7a9c1e2
Revises: a93d5b7e21c6
Create Date: 2026-12-03 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'b3d5f7a9c1e2'
down_revision: str | None = 'a93d5b7e21c6'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'waiting_watch',
        sa.Column('order_id', sa.String(length=64), nullable=False),
        sa.Column('line_id', sa.String(length=80), nullable=False),
        sa.Column('since', sa.DateTime(timezone=True), nullable=False),
        sa.Column('alerted', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('order_id', 'line_id', name=op.f('pk_waiting_watch')),
    )


def downgrade() -> None:
    op.drop_table('waiting_watch')

"""kpi day revisions, one per day already rolled up

Revision ID: b6d1e4f2a903
Revises: f3b8d2a61c47
Create Date: 2026-12-04 00:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'b6d1e4f2a903'
down_revision: str | None = 'f3b8d2a61c47'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'kpi_day_revision',
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('revision', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('day', name=op.f('pk_kpi_day_revision')),
    )
    op.execute(
        "INSERT INTO kpi_day_revision (day, revision) "
        "SELECT DISTINCT start, 1 FROM kpi_rollup WHERE dim = 'all' AND period = 'd'"
    )


def downgrade() -> None:
    op.drop_table('kpi_day_revision')

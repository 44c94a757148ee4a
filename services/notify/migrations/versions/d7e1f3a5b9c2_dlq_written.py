"""DLQ watch: letters ever written per queue (end offsets), so alerts dedupe on arrivals

Revision ID: d7e1f3a5b9c2
Revises: c4e6a8b0d2f4
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'd7e1f3a5b9c2'
down_revision: str | None = 'c4e6a8b0d2f4'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('watch_state') as batch:
        batch.add_column(sa.Column('written', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('watch_state') as batch:
        batch.drop_column('written')

"""offer external ids: marketplace variant/product ids an offer maps

Revision ID: d41f7a2c9e10
Revises: d8b2c4e6f0a1
Create Date: 2026-12-03 08:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'd41f7a2c9e10'
down_revision: str | None = 'd8b2c4e6f0a1'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'offer_external_id',
        sa.Column('supplier_id', sa.String(length=64), nullable=False),
        sa.Column('sku', sa.String(length=64), nullable=False),
        sa.Column('external_id', sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint(
            'supplier_id', 'sku', 'external_id', name=op.f('pk_offer_external_id')
        ),
    )
    op.create_index(
        'ix_offer_external_id_external_id', 'offer_external_id', ['external_id'], unique=False
    )


def downgrade() -> None:
    op.drop_index('ix_offer_external_id_external_id', table_name='offer_external_id')
    op.drop_table('offer_external_id')

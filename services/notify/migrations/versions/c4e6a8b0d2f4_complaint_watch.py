"""complaint watch

Revision ID: c4e6a8b0d2f4
Revises: b3d5f7a9c1e2
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'c4e6a8b0d2f4'
down_revision: str | None = 'b3d5f7a9c1e2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'complaint_watch',
        sa.Column('complaint_id', sa.String(length=64), nullable=False),
        sa.Column('order_id', sa.String(length=64), nullable=True),
        sa.Column('tier', sa.String(length=16), nullable=True),
        sa.Column('filed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('respond_by', sa.DateTime(timezone=True), nullable=True),
        sa.Column('resolve_by', sa.DateTime(timezone=True), nullable=True),
        sa.Column('responded_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('resolution_alerted_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('complaint_id', name=op.f('pk_complaint_watch')),
    )
    op.create_index(
        'ix_complaint_watch_unresolved',
        'complaint_watch',
        ['resolved_at', 'resolution_alerted_at', 'resolve_by'],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index('ix_complaint_watch_unresolved', table_name='complaint_watch')
    op.drop_table('complaint_watch')

"""timeline entries by type (the ops console's open-delay read)

Revision ID: d41c0e5a7b93
Revises: 7c1e5a90b3d2
Create Date: 2026-12-03 08:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "d41c0e5a7b93"
down_revision: str | None = "7c1e5a90b3d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_order_timeline_type_time", "order_timeline", ["type", "time"])


def downgrade() -> None:
    op.drop_index("ix_order_timeline_type_time", table_name="order_timeline")

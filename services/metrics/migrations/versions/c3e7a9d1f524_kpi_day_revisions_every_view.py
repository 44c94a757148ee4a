"""kpi day revisions for every view: a revision for each day with any rollup rows

Revision ID: c3e7a9d1f524
Revises: b6d1e4f2a903
Create Date: 2026-12-04 03:30:00.000000
"""

from collections.abc import Sequence

from alembic import op


revision: str = 'c3e7a9d1f524'
down_revision: str | None = 'b6d1e4f2a903'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a day's revision now moves with any of its rollup rows (by channel and by supplier
    # too): a day with rows only there gets one, so "no revision" still means "no rows"
    op.execute(
        "INSERT INTO kpi_day_revision (day, revision) "
        "SELECT DISTINCT r.start, 1 FROM kpi_rollup AS r WHERE r.period = 'd' "
        "AND NOT EXISTS (SELECT 1 FROM kpi_day_revision AS v WHERE v.day = r.start)"
    )


def downgrade() -> None:
    pass  # the extra revisions are harmless to the schema before

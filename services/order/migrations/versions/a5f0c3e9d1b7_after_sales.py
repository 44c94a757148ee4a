"""after-sales: returns, refunds, complaints, and the order's refunded total

Revision ID: a5f0c3e9d1b7
Revises: e8f2a4c6b1d3
Create Date: 2026-12-03 08:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a5f0c3e9d1b7"
down_revision: str | None = "e8f2a4c6b1d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "customer_order",
        sa.Column(
            "refunded_total", sa.Numeric(precision=18, scale=4), nullable=False, server_default="0"
        ),
    )
    op.create_table(
        "order_return",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("supplier_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("rma", sa.String(length=128), nullable=True),
        sa.Column("return_address", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("authorized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refund_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_return")),
    )
    op.create_index(op.f("ix_order_return_order_id"), "order_return", ["order_id"])
    op.create_index("ix_order_return_created", "order_return", ["created_at", "id"])
    op.create_index("ix_order_return_status_created", "order_return", ["status", "created_at"])
    op.create_table(
        "refund",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("return_id", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("cost_bearer", sa.String(length=16), nullable=False),
        sa.Column("supplier_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund")),
        sa.UniqueConstraint("return_id", name=op.f("uq_refund_return_id")),
    )
    op.create_index(op.f("ix_refund_order_id"), "refund", ["order_id"])
    op.create_table(
        "complaint",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("responses", sa.JSON(), nullable=False),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("respond_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolve_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("responded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_complaint")),
    )
    op.create_index(op.f("ix_complaint_order_id"), "complaint", ["order_id"])
    op.create_index("ix_complaint_filed", "complaint", ["filed_at", "id"])
    op.create_index("ix_complaint_status_filed", "complaint", ["status", "filed_at"])


def downgrade() -> None:
    op.drop_table("complaint")
    op.drop_table("refund")
    op.drop_table("order_return")
    with op.batch_alter_table("customer_order") as batch:
        batch.drop_column("refunded_total")

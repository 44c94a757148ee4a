"""marketplace shops, order origins and the write-back queue

Revision ID: 7c1e5a90b3d2
Revises: b7e3c1a90d42
Create Date: 2026-12-03 06:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c1e5a90b3d2"
down_revision: str | None = "b7e3c1a90d42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "marketplace_shop",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("api_base_url", sa.String(length=500), nullable=False),
        sa.Column("webhook_secret", sa.Text(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("consumer_key", sa.Text(), nullable=True),
        sa.Column("consumer_secret", sa.Text(), nullable=True),
        sa.Column("notify_customer", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_shop")),
        sa.UniqueConstraint(
            "platform", "domain", name=op.f("uq_marketplace_shop_platform_domain")
        ),
    )
    op.create_table(
        "order_shop",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("shop_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_shop")),
    )
    op.create_index(op.f("ix_order_shop_shop_id"), "order_shop", ["shop_id"])
    op.create_table(
        "marketplace_writeback",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("shop_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_writeback")),
        sa.UniqueConstraint("key", name=op.f("uq_marketplace_writeback_key")),
    )
    op.create_index(
        op.f("ix_marketplace_writeback_order_id"), "marketplace_writeback", ["order_id"]
    )
    op.create_index(
        "ix_marketplace_writeback_due", "marketplace_writeback", ["status", "next_at"]
    )


def downgrade() -> None:
    op.drop_table("marketplace_writeback")
    op.drop_table("order_shop")
    op.drop_table("marketplace_shop")

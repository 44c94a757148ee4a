"""each shop's order numbers are its own: orders, tombstones and deliveries keyed by shop

A merchant with two WooCommerce sites (or two Shopify shops) may get #1001 from both: the
order's unique key becomes (channel, shop_id, external_id), with shop_id "" for the
storefront and the default (env-secret) shop (a NULL would not be unique). Orders that came
from a registered shop take its id from `order_shop`; tombstones and delivery ids recorded
before this change belong to no registered shop (""), as the shop was not recorded then.

Revision ID: c3d9f1a7e2b4
Revises: a5f0c3e9d1b7
Create Date: 2026-12-03 12:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3d9f1a7e2b4"
down_revision: str | None = "a5f0c3e9d1b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["channel", "shop_id", "external_id"]


def _shop_id() -> sa.Column[str]:
    return sa.Column("shop_id", sa.String(length=64), nullable=False, server_default="")


def upgrade() -> None:
    with op.batch_alter_table("customer_order") as batch:
        batch.add_column(_shop_id())
        batch.drop_constraint("uq_customer_order_channel_external_id", type_="unique")
        batch.create_unique_constraint("uq_customer_order_channel_shop_id_external_id", KEY)
    op.execute(
        "UPDATE customer_order SET shop_id = (SELECT order_shop.shop_id FROM order_shop"
        " WHERE order_shop.order_id = customer_order.id)"
        " WHERE id IN (SELECT order_id FROM order_shop)"
    )
    _primary_key("marketplace_tombstone", KEY, add=True)
    _primary_key("webhook_delivery", ["source", "shop_id", "delivery_id"], add=True)


def downgrade() -> None:
    # a registered shop's rows cannot share the old keys: they are dropped (a tombstone
    # matters for the seconds a cancellation overtakes its order; a redelivered id is
    # harmless, its effects being idempotent)
    op.execute("DELETE FROM marketplace_tombstone WHERE shop_id <> ''")
    op.execute("DELETE FROM webhook_delivery WHERE shop_id <> ''")
    _primary_key("webhook_delivery", ["source", "delivery_id"], add=False)
    _primary_key("marketplace_tombstone", ["channel", "external_id"], add=False)
    with op.batch_alter_table("customer_order") as batch:
        batch.drop_constraint("uq_customer_order_channel_shop_id_external_id", type_="unique")
        batch.create_unique_constraint(
            "uq_customer_order_channel_external_id", ["channel", "external_id"]
        )
        batch.drop_column("shop_id")


def _primary_key(table: str, columns: list[str], *, add: bool) -> None:
    """The table's primary key becomes `columns` (whatever its old key was named), with the
    shop_id column added first (`add`) or dropped after."""
    old = sa.inspect(op.get_bind()).get_pk_constraint(table).get("name")
    with op.batch_alter_table(table) as batch:
        if add:
            batch.add_column(_shop_id())
        if old:
            batch.drop_constraint(old, type_="primary")
        batch.create_primary_key(f"pk_{table}", columns)
        if not add:
            batch.drop_column("shop_id")

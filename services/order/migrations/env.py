"""Alembic environment of the order service."""

import services.order.aftersales.tables
import services.order.shops.tables  # noqa: F401  (the shop tables join the metadata)
from services.order.store import metadata
from shared.migrations import run_env

run_env(metadata)

"""Alembic environment of the order service."""

from services.order.store import metadata
from shared.migrations import run_env

run_env(metadata)

"""Alembic environment of the supplier service."""

from services.supplier.store import metadata
from shared.migrations import run_env

run_env(metadata)

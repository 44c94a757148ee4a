"""Alembic environment of the console."""

from services.console.tables import metadata
from shared.migrations import run_env

run_env(metadata)

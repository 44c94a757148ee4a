"""Alembic environment of the metrics service."""

from services.metrics.tables import metadata
from shared.migrations import run_env

run_env(metadata)

"""Alembic environment of the notify service."""

from services.notify.store import metadata
from shared.migrations import run_env

run_env(metadata)

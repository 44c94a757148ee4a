"""Developer commands: `python -m shared.devtools revision SERVICE MESSAGE` makes a migration."""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

from alembic import command

from shared.db import alembic_config


def revision(service: str, message: str) -> None:
    app = importlib.import_module(f"services.{service}.app")
    migrations: Path = app.MIGRATIONS
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/scratch.db"
        config = alembic_config(migrations, url)
        command.upgrade(config, "head")
        command.revision(config, message=message, autogenerate=True)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "revision":
        raise SystemExit(__doc__)
    revision(sys.argv[2], sys.argv[3])

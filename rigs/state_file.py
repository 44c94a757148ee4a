"""A simulator's memory on disk: one SQLite file under its state folder, one JSON row per
record, rewritten whenever it changes.

Real suppliers and shops do not forget their orders when the platform (or they) restart;
the simulators that play them keep what they were told here and reload it at start.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


class StateFile:
    """Rows `(kind, owner, key) -> JSON`, the owner being a supplier key or a shop name;
    every write is its own (WAL) transaction.

    Plain synchronous calls on the event loop, like every mutation of a simulator's state: a
    write is a fraction of a millisecond, and nothing else can interleave with it.
    """

    def __init__(self, folder: Path, filename: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / filename
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS record (kind TEXT NOT NULL, owner TEXT NOT NULL,"
            " key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, owner, key))"
        )

    def rows(self, kind: str | None = None) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Every row (of one kind) as (kind, owner, key, data), in the order first written."""
        query = "SELECT kind, owner, key, data FROM record"
        params: tuple[str, ...] = ()
        if kind is not None:
            query, params = query + " WHERE kind = ?", (kind,)
        found = self._db.execute(query + " ORDER BY rowid", params)
        return [(k, owner, key, json.loads(data)) for k, owner, key, data in found]

    def put(self, kind: str, owner: str, key: str, data: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO record (kind, owner, key, data) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, owner, key) DO UPDATE SET data = excluded.data",
            (kind, owner, key, json.dumps(data, separators=(",", ":"))),
        )

    def forget(self, owner: str) -> None:
        self._db.execute("DELETE FROM record WHERE owner = ?", (owner,))

    def close(self) -> None:
        self._db.close()

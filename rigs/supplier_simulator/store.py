"""The simulator's memory on disk: one SQLite file under the data folder, one JSON row per
supplier's control settings, order and return, rewritten whenever it changes.

Real suppliers do not forget their orders when the platform (or they) restart: with a state
folder set (`DROPSHIP_SIMULATOR_STATE_DIR`, else `DROPSHIP_DATA_DIR`) a restarted simulator
knows every order it took and carries each one on from where it stood.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

FILENAME = "supplier-simulator.db"
CONTROL, ORDER, RETURN = "control", "order", "return"


class StateFile:
    """Rows `(kind, supplier, key) -> JSON`; every write is its own (WAL) transaction.

    Plain synchronous calls on the event loop, like every mutation of the state: a write
    is a fraction of a millisecond, and nothing else can interleave with it.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / FILENAME
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS record (kind TEXT NOT NULL, supplier TEXT NOT NULL,"
            " key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, supplier, key))"
        )

    def load(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Every row: supplier -> kind -> records, in the order they were first written."""
        found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        rows = self._db.execute("SELECT kind, supplier, data FROM record ORDER BY rowid")
        for kind, supplier, data in rows:
            found[supplier][kind].append(json.loads(data))
        return found

    def put(self, kind: str, supplier: str, key: str, data: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO record (kind, supplier, key, data) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, supplier, key) DO UPDATE SET data = excluded.data",
            (kind, supplier, key, json.dumps(data, separators=(",", ":"))),
        )

    def forget(self, supplier: str) -> None:
        self._db.execute("DELETE FROM record WHERE supplier = ?", (supplier,))

    def close(self) -> None:
        self._db.close()

"""The marketplace simulator's memory on disk: one SQLite file under the data folder, one JSON
row per shop (credentials, steering, refusals), per order and per recorded call.

Real shops do not forget their orders when we restart: with a state folder set
(`DROPSHIP_MARKETPLACE_SIM_STATE_DIR`, else `DROPSHIP_DATA_DIR`) a restarted simulator knows
every fulfilment, note, refund and cancellation it took, and every call it recorded.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

FILENAME = "marketplace-simulator.db"
SHOP, ORDER, CALL = "shop", "order", "call"


class StateFile:
    """Rows `(kind, shop, key) -> JSON`; every write is its own (WAL) transaction.

    Plain synchronous calls on the event loop, like every mutation of the state: a write is
    a fraction of a millisecond, and nothing else can interleave with it.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / FILENAME
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS record (kind TEXT NOT NULL, shop TEXT NOT NULL,"
            " key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, shop, key))"
        )

    def load(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        """Every row of a kind as (shop, key, data), in the order first written."""
        rows = self._db.execute(
            "SELECT shop, key, data FROM record WHERE kind = ? ORDER BY rowid", (kind,)
        )
        return [(shop, key, json.loads(data)) for shop, key, data in rows]

    def put(self, kind: str, shop: str, key: str, data: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO record (kind, shop, key, data) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, shop, key) DO UPDATE SET data = excluded.data",
            (kind, shop, key, json.dumps(data, separators=(",", ":"))),
        )

    def close(self) -> None:
        self._db.close()

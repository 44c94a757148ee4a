"""The marketplace simulator's memory on disk: one JSON row per shop (credentials, steering,
refusals), per order and per recorded call (`rigs.state_file`).

Real shops do not forget their orders when we restart: with a state folder set
(`DROPSHIP_MARKETPLACE_SIM_STATE_DIR`, else `DROPSHIP_DATA_DIR`) a restarted simulator knows
every fulfilment, note, refund and cancellation it took, and every call it recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rigs.state_file import StateFile as _StateFile

FILENAME = "marketplace-simulator.db"
SHOP, ORDER, CALL = "shop", "order", "call"


class StateFile(_StateFile):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder, FILENAME)

    def load(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        """Every row of a kind as (shop, key, data), in the order first written."""
        return [(shop, key, data) for _, shop, key, data in self.rows(kind)]

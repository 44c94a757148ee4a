"""The supplier simulator's memory on disk: one JSON row per supplier's control settings,
order and return (`rigs.state_file`).

With a state folder set (`DROPSHIP_SIMULATOR_STATE_DIR`, else `DROPSHIP_DATA_DIR`) a
restarted simulator knows every order it took and carries each one on from where it stood.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from rigs.state_file import StateFile as _StateFile

FILENAME = "supplier-simulator.db"
CONTROL, ORDER, RETURN = "control", "order", "return"


class StateFile(_StateFile):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder, FILENAME)

    def load(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Every row: supplier -> kind -> records, in the order they were first written."""
        found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for kind, supplier, _, data in self.rows():
            found[supplier][kind].append(data)
        return found

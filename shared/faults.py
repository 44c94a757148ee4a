"""Failpoints for fault-injection tests: named places where the process can be made to die."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_armed: frozenset[str] = frozenset()


def arm(points: str) -> None:
    """Arm a comma-separated list of failpoints (from `DROPSHIP_FAULT_POINTS`)."""
    global _armed
    _armed = frozenset(p.strip() for p in points.split(",") if p.strip())
    if _armed:
        log.warning("failpoints armed", extra={"failpoints": sorted(_armed)})


def crash_point(name: str) -> None:
    """Kill the process on the spot (like `kill -9`) when `name` is armed."""
    if name in _armed:
        log.warning("failpoint hit, exiting", extra={"failpoint": name})
        os._exit(137)

"""Outgoing HTTP calls search for no module on the way (issue 15, CPU per order).

httpcore asks `sniffio` which event loop runs, several times per request (its locks,
events and shielded closes). Without `sniffio` installed each ask is a failed import:
a walk of `sys.path` costing tens of microseconds, 4 times per request; about a fifth of
a request's client CPU when measured. `sniffio` is a declared dependency for that.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from httpcore import _synchronization


class _Recorder(importlib.abc.MetaPathFinder):
    """Records every module name the import system is asked to find."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> Any:
        self.names.append(fullname)
        return None


def test_asking_for_the_event_loop_searches_for_no_module() -> None:
    recorder = _Recorder()

    async def ask() -> list[str]:
        return [_synchronization.current_async_library() for _ in range(4)]

    sys.meta_path.insert(0, recorder)
    try:
        answers = asyncio.run(ask())
    finally:
        sys.meta_path.remove(recorder)
    assert answers == ["asyncio"] * 4
    assert "sniffio" not in recorder.names, "sniffio is missing: every request searches for it"

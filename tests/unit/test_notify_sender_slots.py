"""The sender's slots: sends that finish in the same turn of the loop free their slots."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from services.notify.sender import Sender, Wakeup
from services.notify.settings import NotifySettings
from shared.testing import eventually


async def test_sends_finishing_together_free_their_slots_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots, five due sends, the poll an hour away: every finish must lead to the
    next claim. Both running sends finish in one turn, so the sender wakes before their
    tasks have left its in-flight set; counting those as busy stalled it for the hour."""
    settings = NotifySettings(data_dir=tmp_path, sender_poll_s=3600.0, sender_concurrency=2)
    due = [SimpleNamespace(id=f"n{i}", recipient_kind="ops", order_id=None) for i in range(5)]
    gate = asyncio.Event()
    finished: list[str] = []

    async def claim(limit: int) -> list[Any]:
        taken = due[:limit]
        del due[:limit]
        return taken

    async def ops(send: Any) -> None:
        await gate.wait()

    async def finish(send: Any, status: Any, **_: Any) -> None:
        finished.append(send.id)

    async with httpx.AsyncClient() as http:
        sender = Sender(lambda: None, settings, http, None, Wakeup())  # type: ignore[arg-type]
        monkeypatch.setattr(sender, "_claim", claim)
        monkeypatch.setattr(sender, "_ops", ops)
        monkeypatch.setattr(sender, "_finish", finish)
        running = asyncio.create_task(sender.run())
        try:

            async def both_slots_taken() -> bool:
                return len(sender._inflight) == 2

            await eventually(both_slots_taken, timeout=5, what="two sends under way")
            gate.set()  # both finish in the same turn of the loop, and so on two by two

            async def all_sent() -> list[str] | None:
                return finished if len(finished) == 5 else None

            sent = await eventually(all_sent, timeout=5, what="all five sent")
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert sorted(sent) == [f"n{i}" for i in range(5)]

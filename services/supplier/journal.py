"""The callback journal: signed callbacks recorded while the service is busy, applied later.

Without a journal, a callback that finds no slot or database connection in time is
answered 503 and its sender retries; a supplier gives up after its last attempt, and
under a burst many do. With one (`DROPSHIP_SUPPLIER_CALLBACK_JOURNAL_DIR`, set by
`make up` to the data folder) such a callback, already verified and parsed, is appended
to `supplier-callbacks.jsonl` and answered `202 {"status": "recorded"}` at once; a
background task applies the journal in order, through the same handlers (which dedupe
on the delivery id, so applying an entry twice after a crash changes nothing), and
remembers how far it got in `supplier-callbacks.offset`, so a restart carries on. While
entries wait, later callbacks are recorded behind them, keeping their order.

The journal is per process and on local disk: replicas without one (the PostgreSQL
deployments) keep answering 503, and the reconciler asks suppliers about what they
could not tell us either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.supplier.handlers import callbacks
from services.supplier.handlers.callbacks import Recorded, SupplierCallback, TrackingUpdate
from services.supplier.store import StockConflict, SupplierUnitOfWork
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
RECORDED = Counter(
    "dropship_supplier_callbacks_recorded",
    "Callbacks recorded in the journal while busy (applied later instead of a 503).",
)
BATCH = 50
"""Journal entries applied in one transaction."""
TRANSIENT = (OperationalError, DBAPIError, PoolTimeout, StockConflict, OSError)


class CallbackJournal:
    def __init__(self, folder: Path, *, retry_s: float = 0.5) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "supplier-callbacks.jsonl"
        self.offset_path = folder / "supplier-callbacks.offset"
        self.retry_s = retry_s
        self._wake = asyncio.Event()
        self.applied_total = 0

    @property
    def pending(self) -> bool:
        """Entries wait to be applied (a new callback must queue behind them)."""
        return self.path.exists() and self.path.stat().st_size > self._offset()

    def record_supplier(self, supplier_id: str, delivery: str, cb: SupplierCallback) -> None:
        self._append(
            {
                "kind": "supplier",
                "supplier_id": supplier_id,
                "delivery": delivery,
                "callback": cb.__dict__,
            }
        )

    def record_tracking(self, delivery: str, update: TrackingUpdate) -> None:
        when = update.occurred_at.isoformat() if update.occurred_at else None
        self._append(
            {
                "kind": "tracking",
                "delivery": delivery,
                "update": {**update.__dict__, "occurred_at": when},
            }
        )

    def _append(self, entry: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as out:  # no await: entries never interleave
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")
        RECORDED.inc()
        self._wake.set()

    def _offset(self) -> int:
        try:
            return int(self.offset_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    async def run(self, runtime: ServiceRuntime[SupplierUnitOfWork]) -> None:
        """Apply entries as they come, until cancelled."""
        while True:
            self._wake.clear()
            if not await self.apply_pending(runtime):
                with contextlib.suppress(TimeoutError):  # 3.11 wait_for can lose a cancel
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()

    async def apply_pending(self, runtime: ServiceRuntime[SupplierUnitOfWork]) -> int:
        """Apply every complete entry past the offset, in order, `BATCH` to a transaction
        (one at a time when a batch fails); returns how many."""
        if not self.path.exists():
            return 0
        offset = self._offset()
        lines = [
            line
            for line in self.path.read_bytes()[offset:].splitlines(keepends=True)
            if line.endswith(b"\n")  # the last may be being written
        ]
        for start in range(0, len(lines), BATCH):
            chunk = lines[start : start + BATCH]
            entries = [e for e in map(_parse, chunk) if e is not None]
            try:
                await callbacks.apply_recorded(runtime.uow(), entries)
            except Exception as exc:  # one entry's trouble must not hold up the others
                log.warning("journal batch not applied, one by one now: %r", exc)
                for entry in entries:
                    await self._apply_one(runtime, entry)
            offset += sum(len(line) for line in chunk)
            self.offset_path.write_text(str(offset))
        if offset and offset >= self.path.stat().st_size:  # all applied: start afresh
            self.path.unlink()
            self.offset_path.unlink(missing_ok=True)
        self.applied_total += len(lines)
        return len(lines)

    async def _apply_one(
        self, runtime: ServiceRuntime[SupplierUnitOfWork], entry: Recorded
    ) -> None:
        while True:
            try:
                await callbacks.apply_recorded(runtime.uow(), [entry])
                return
            except TRANSIENT as exc:
                log.warning("journal entry not applied yet: %r", exc)
                await asyncio.sleep(self.retry_s)
            except Exception:
                log.exception("journal entry could not be applied; skipped")
                return


def _parse(line: bytes) -> Recorded | None:
    try:
        entry = json.loads(line)
        if entry["kind"] == "supplier":
            cb = SupplierCallback(**entry["callback"])
            return Recorded(entry["delivery"], entry["supplier_id"], cb)
        raw = entry["update"]
        when = raw["occurred_at"]
        update = TrackingUpdate(
            raw["tracking_number"],
            raw["status"],
            datetime.fromisoformat(when) if when else None,
        )
        return Recorded(entry["delivery"], None, update)
    except (ValueError, KeyError, TypeError):
        log.error("unreadable journal entry skipped")
        return None

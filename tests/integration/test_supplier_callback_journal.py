"""A busy supplier service with a callback journal records callbacks at once, applies them
later (after a restart too), and applies each exactly once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from services.supplier.handlers.callbacks import SupplierCallback
from services.supplier.journal import CallbackJournal
from shared.crypto import generate_key
from shared.signing import sign_callback
from shared.testing import eventually
from tests.integration.test_supplier_faults import (
    _hold_every_connection,
    confirmations,
    supplier_service,
)
from tests.integration.test_supplier_progress_checks import emitted
from tests.support.kafka import publish_envelopes
from tests.support.supplier import add_supplier, allocations, control, placed, states


def _signed(secret: str, payload: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    return body, {
        "X-Supplier-Signature": sign_callback(secret, stamp, body),
        "X-Supplier-Timestamp": stamp,
        "X-Supplier-Delivery-Id": str(uuid.uuid4()),
    }


async def test_a_callback_to_a_busy_service_is_recorded_then_applied_once_after_a_restart(
    database_url, settings_for, simulator, order_contacts, broker, tmp_path: Path
):
    url = await database_url("supplier")
    journal = tmp_path / "journal"
    key = generate_key()

    def service():
        return supplier_service(
            lambda _: _same(url),
            settings_for,
            simulator,
            order_contacts,
            supplier_check_after_s=3600,
            supplier_callback_journal_dir=journal,
            supplier_cache_ttl_s=3600,  # the signing secret stays known with the pool taken
            pii_key=key,  # the restarted service reads the credentials it sealed
        )

    async with service() as svc:
        sid = await add_supplier(svc, "busy", offers=[("MUG", "3.00", 100, 24)])
        await control(svc, "busy", lose_callbacks=True, never_ship=True)
        event = placed(("MUG", 1, "12.50"))
        await publish_envelopes(broker.bootstrap, [event])
        [alloc] = await states(svc, event.subject, "received")
        payload = {
            "type": "accepted",
            "reference": alloc["supplier_order_id"],
            "supplier_order_ref": alloc["supplier_order_ref"] or "SIM-X",
        }
        body, headers = _signed("sim-secret-busy", payload)
        held = await _hold_every_connection(svc.runtime.engine)
        try:
            started = time.monotonic()
            recorded = await svc.client.post(
                f"/v1/webhooks/suppliers/{sid}", content=body, headers=headers
            )
            took = time.monotonic() - started
            # the same delivery again (a sender that did not hear the answer): recorded too
            again = await svc.client.post(
                f"/v1/webhooks/suppliers/{sid}", content=body, headers=headers
            )
            # recorded on disk while the pool is taken (applied, and gone, once it is free)
            assert (journal / "supplier-callbacks.jsonl").exists()
        finally:
            for conn in held:
                await conn.close()
        assert recorded.status_code == again.status_code == 202, recorded.text
        assert recorded.json() == {"status": "recorded"}
        assert took < 1.0, f"answered in {took:.2f} s"

        async def confirmed():
            [a] = await allocations(svc, event.subject)
            return a if a["state"] == "accepted" else None

        await eventually(confirmed, timeout=30, what="the recorded callback applied")
        assert await confirmations(svc, event.subject) == 1
        # applied and dedupe-d: the journal starts afresh once everything is applied
        await eventually(
            lambda: _gone(journal / "supplier-callbacks.jsonl"), what="journal emptied"
        )

    # a callback recorded just before the service died is applied when it starts again
    CallbackJournal(journal).record_supplier(
        sid,
        str(uuid.uuid4()),
        SupplierCallback(
            "dispatched",
            alloc["supplier_order_id"],
            payload["supplier_order_ref"],
            carrier="ups",
            tracking_number="1ZJOURNAL0000001",
        ),
    )
    async with service() as svc:
        await states(svc, event.subject, "dispatched")
        assert await emitted(svc, "shipment-dispatched", event.subject) == 1
        assert await confirmations(svc, event.subject) == 1


async def _same(url: str) -> str:
    return url


async def _gone(path: Path) -> bool:
    return not await asyncio.to_thread(path.exists)

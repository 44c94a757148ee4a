"""Notify looks the customers of a batch of sends up with one request to the order service.

Real parts: the order service served over HTTP (its requests recorded as they arrive),
the notify service, the broker, aiosmtpd, both databases. The notices of a test are
queued in one transaction, so the sender claims them together.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from services.notify.app import create_app as notify_app
from services.notify.handlers.events import on_shipment_delayed
from services.notify.repository import Notifications
from services.notify.settings import NotifySettings
from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from shared.crypto import generate_key
from shared.events import new_envelope
from shared.infra import free_port
from shared.testing import eventually
from tests.integration.test_notify import FAST, Stack, delayed
from tests.support import order_contacts
from tests.support.notify import Mailbox, log_of, smtp_server
from tests.support.services import in_process, served

BATCH = ("POST", "/v1/contacts:lookup")


@dataclass
class Recorder:
    """The requests an app received, as (method, path)."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def around(self, make: Callable[[Any], FastAPI]) -> Callable[[Any], FastAPI]:
        def build(settings: Any) -> FastAPI:
            app = make(settings)
            app.add_middleware(_Record, seen=self.seen)
            return app

        return build

    def contact_requests(self) -> list[tuple[str, str]]:
        return [r for r in self.seen if r == BATCH or r[1].endswith("/contact")]


class _Record:
    def __init__(self, app: ASGIApp, seen: list[tuple[str, str]]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@dataclass
class Rig:
    stack: Stack
    recorder: Recorder
    mailbox: Mailbox
    order: contextlib.AsyncExitStack | None = None
    """Holds the order service while it is up."""
    serve_order: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None

    async def order_up(self) -> None:
        assert self.order is not None and self.serve_order is not None
        self.stack.order = await self.order.enter_async_context(self.serve_order())

    async def order_down(self) -> None:
        assert self.order is not None
        await self.order.aclose()

    async def place(self, count: int) -> list[str]:
        ids = []
        for i in range(count):
            customer = {"name": f"Customer {i}", "email": f"c{i}@example.com", "locale": "en"}
            ids.append((await self.stack.place(customer=customer))["id"])
        return ids

    async def queue_together(self, order_ids: list[str]) -> None:
        """A delay notice for each order, queued in one transaction (one claim sends all)."""
        async with self.stack.notify.runtime.uow() as uow:
            for order_id in order_ids:
                event = delayed(order_id, "sup-a", "at_risk", "normal")
                await on_shipment_delayed(new_envelope(event), event, uow)
            await uow.commit()

    async def settled(self, order_ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = {}
        for order_id in order_ids:
            found = await log_of(self.stack.notify.client, order_id)
            if len(found) != 1 or found[0]["status"] in ("pending", "sending"):
                return {}
            rows[order_id] = found[0]
        return rows


@contextlib.asynccontextmanager
async def rig(
    database_url: Any, settings_for: Any, broker: Any, **overrides: Any
) -> AsyncIterator[Rig]:
    recorder, order_port = Recorder(), free_port()
    order_settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=order_port,
        consumers_enabled=False,
        pii_key=generate_key(),
    )

    def serve_order() -> contextlib.AbstractAsyncContextManager[Any]:
        return served(recorder.around(order_app), order_settings, order_port)

    with smtp_server() as (mailbox, smtp_port):
        values = {
            **FAST,
            "digest_window_s": 0.0,
            "order_url": f"http://127.0.0.1:{order_port}",
            "smtp_url": f"smtp://127.0.0.1:{smtp_port}",
            **overrides,
        }
        settings = settings_for(NotifySettings, await database_url("notify"), **values)
        async with (
            in_process(notify_app, settings) as svc,
            contextlib.AsyncExitStack() as order,
        ):
            await svc.runtime.bus.wait_connected()
            r = Rig(Stack(None, svc, broker.bootstrap), recorder, mailbox, order, serve_order)  # type: ignore[arg-type]
            await r.order_up()
            yield r


async def test_a_batch_of_notices_asks_the_order_service_once(database_url, settings_for, broker):
    async with rig(database_url, settings_for, broker) as r:
        ids = await r.place(5)
        r.recorder.seen.clear()
        await r.queue_together(ids)
        rows = await eventually(lambda: r.settled(ids), what="five notices sent")
        assert r.recorder.contact_requests() == [BATCH]
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert sorted(rcpt for rcpts in r.mailbox.recipients for rcpt in rcpts) == [
        f"c{i}@example.com" for i in range(5)
    ]


async def test_the_order_service_down_during_a_batch_loses_nothing_and_sends_once(
    database_url, settings_for, broker
):
    async with rig(database_url, settings_for, broker) as r:
        ids = await r.place(4)
        await r.order_down()  # notify keeps running
        await r.queue_together(ids)

        async def all_failed() -> bool:
            rows = [await log_of(r.stack.notify.client, i) for i in ids]
            return all(
                found and found[0]["attempts"] >= 1 and found[0]["last_error"] for found in rows
            )

        await eventually(all_failed, what="every send of the batch failed its lookup")
        for order_id in ids:
            (row,) = await log_of(r.stack.notify.client, order_id)
            assert row["status"] in ("pending", "sending")
            assert "order service unreachable" in row["last_error"]
        assert r.mailbox.raw == []
        r.recorder.seen.clear()
        await r.order_up()
        rows = await eventually(lambda: r.settled(ids), what="sent once the order service is back")
        assert set(r.recorder.contact_requests()) == {BATCH}  # looked up again, in batches
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert sorted(rcpt for rcpts in r.mailbox.recipients for rcpt in rcpts) == [
        f"c{i}@example.com" for i in range(4)
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_unknown_order_fails_only_its_own_notice(database_url, settings_for, broker):
    async with rig(database_url, settings_for, broker) as r:
        ids = await r.place(3)
        ghost = "ord_" + "0" * 32
        r.recorder.seen.clear()
        await r.queue_together([*ids, ghost])
        rows = await eventually(lambda: r.settled([*ids, ghost]), what="four notices settled")
        assert r.recorder.contact_requests() == [BATCH]
    assert [rows[i]["status"] for i in ids] == ["sent"] * 3
    assert rows[ghost]["status"] == "skipped"
    assert "unknown to the order service" in rows[ghost]["last_error"]
    assert len(r.mailbox.raw) == 3


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_older_order_service_is_asked_order_by_order(database_url, settings_for, broker):
    port = free_port()

    def older(_: Any) -> FastAPI:
        app = order_contacts.create_app(lookup=False)  # only GET /v1/orders/{id}/contact
        app.state.runtime = None
        return app

    with smtp_server() as (mailbox, smtp_port):
        values = {
            **FAST,
            "digest_window_s": 0.0,
            "customer_daily_cap": 10,  # the stand-in gives every order the same customer
            "order_url": f"http://127.0.0.1:{port}",
            "smtp_url": f"smtp://127.0.0.1:{smtp_port}",
        }
        settings = settings_for(NotifySettings, await database_url("notify"), **values)
        recorder = Recorder()
        async with (
            in_process(notify_app, settings) as svc,
            served(recorder.around(older), None, port),
        ):
            ids = [f"ord_old{i}" for i in range(3)]
            r = Rig(Stack(None, svc, broker.bootstrap), recorder, mailbox)  # type: ignore[arg-type]
            await r.queue_together(ids)
            rows = await eventually(lambda: r.settled(ids), what="sent one by one")
            asked = recorder.contact_requests()
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert asked[0] == BATCH  # answered 404: each order on its own from then on
    assert sorted(asked[1:]) == [("GET", f"/v1/orders/{i}/contact") for i in ids]
    assert len(mailbox.raw) == 3


class Claims:
    """Every `claim_due` of the sender: how many sends each took."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken: list[int] = []
        original = Notifications.claim_due

        async def counted(repo: Notifications, *args: Any) -> Any:
            got = await original(repo, *args)
            self.taken.append(len(got))
            return got

        monkeypatch.setattr(Notifications, "claim_due", counted)


async def test_a_send_finishing_claims_again_only_if_more_may_be_due(
    database_url, settings_for, broker, monkeypatch
):
    """The poll is an hour away: only the queueing commit and the sends drive claims (the
    claim path: with the hand-off on, notices queued due are claimed as they are queued)."""
    claims = Claims(monkeypatch)
    values = {"sender_poll_s": 3600.0, "send_handoff": False}
    async with rig(database_url, settings_for, broker, **values) as r:
        ids = await r.place(5)
        start = len(claims.taken)
        await r.queue_together(ids)
        rows = await eventually(lambda: r.settled(ids), what="five notices sent")
        assert claims.taken[start:] == [5], "one claim took all five; finishing claimed nothing"
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(r.mailbox.raw) == 5


async def test_with_every_slot_taken_a_finished_send_claims_the_next(
    database_url, settings_for, broker, monkeypatch
):
    claims = Claims(monkeypatch)
    values = {"sender_poll_s": 3600.0, "sender_concurrency": 2, "send_handoff": False}
    async with rig(database_url, settings_for, broker, **values) as r:
        ids = await r.place(5)
        await r.queue_together(ids)
        rows = await eventually(lambda: r.settled(ids), what="five notices, two at a time")
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert sorted(rcpt for rcpts in r.mailbox.recipients for rcpt in rcpts) == [
        f"c{i}@example.com" for i in range(5)
    ]
    assert sum(claims.taken) == 5 and max(claims.taken) <= 2

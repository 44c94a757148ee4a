"""Notify handlers driven through a fake unit of work: supplier outages, ack, retry, errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notify import domain
from services.notify.domain import (
    Alert,
    AlertKind,
    AlertNotFound,
    NotDead,
    Notification,
    NotificationNotFound,
    Policy,
    Status,
    SupplierWatch,
)
from services.notify.errors import HTTP_ERRORS
from services.notify.handlers import commands
from services.notify.handlers.events import on_supplier_status_changed
from shared.events import SupplierAvailability, SupplierStatusChanged, new_envelope

T0 = datetime(2026, 11, 30, 9, tzinfo=UTC)
UP, DOWN = SupplierAvailability.AVAILABLE, SupplierAvailability.UNAVAILABLE


class FakeSuppliers:
    def __init__(self) -> None:
        self.rows: dict[str, SupplierWatch] = {}

    async def get(self, supplier_id: str) -> SupplierWatch:
        return replace(self.rows.get(supplier_id) or SupplierWatch(supplier_id))

    async def save(self, watch: SupplierWatch) -> None:
        self.rows[watch.supplier_id] = replace(watch)


class FakeAlerts:
    def __init__(self) -> None:
        self.rows: dict[str, Alert] = {}

    async def add(self, alert: Alert) -> bool:
        if any(a.dedupe_key == alert.dedupe_key for a in self.rows.values()):
            return False
        self.rows[alert.id] = alert
        return True

    async def get(self, alert_id: str, *, for_update: bool = False) -> Alert | None:
        return self.rows.get(alert_id)

    async def acknowledge(self, alert_id: str, by: str, now: datetime) -> bool:
        alert = self.rows.get(alert_id)
        if alert is None or alert.acked_at is not None:
            return False
        self.rows[alert_id] = replace(alert, acked_at=now, acked_by=by)
        return True


class FakeNotifications:
    def __init__(self) -> None:
        self.queued: list[dict[str, Any]] = []
        self.rows: dict[str, Notification] = {}

    async def queue(self, **values: Any) -> bool:
        key = (values["dedupe_key"], values["channel"], values["target"])
        if any((q["dedupe_key"], q["channel"], q["target"]) == key for q in self.queued):
            return False
        self.queued.append(values)
        return True

    async def get(self, notification_id: str) -> Notification | None:
        return self.rows.get(notification_id)

    async def requeue(self, notification_id: str) -> bool:
        found = self.rows.get(notification_id)
        if found is None or found.status is not Status.DEAD:
            return False
        self.rows[notification_id] = replace(found, status=Status.PENDING, attempts=0)
        return True


class FakeUnitOfWork:
    """What the handlers use of `NotifyUnitOfWork`, in memory."""

    def __init__(self) -> None:
        self.policy = Policy(ops_channels=(("slack", "slack-0"), ("wecom", "cn-ops")))
        self.suppliers = FakeSuppliers()
        self.alerts = FakeAlerts()
        self.notifications = FakeNotifications()
        self.commits = 0

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def commit(self) -> None:
        self.commits += 1


async def status(uow: FakeUnitOfWork, what: SupplierAvailability, at: datetime) -> None:
    event = SupplierStatusChanged(
        supplier_id="sup-a", status=what, reason="breaker_open", changed_at=at
    )
    await on_supplier_status_changed(new_envelope(event), event, uow)


def test_a_supplier_watch_counts_outages_and_ignores_repeats_and_stale_changes():
    watch = SupplierWatch("sup-a")
    assert watch.record(DOWN, T0) is True
    assert watch.record(DOWN, T0 + timedelta(seconds=5)) is False  # the same outage
    assert watch.record(UP, T0 - timedelta(seconds=1)) is False  # overtaken: ignored
    assert not watch.available
    assert watch.record(UP, T0 + timedelta(seconds=10)) is False
    assert watch.record(DOWN, T0 + timedelta(seconds=20)) is True
    assert watch.outages == 2


async def test_ops_hear_of_each_supplier_outage_once_on_every_channel():
    uow = FakeUnitOfWork()
    await status(uow, DOWN, T0)
    await status(uow, DOWN, T0)  # a redelivery with another id
    await status(uow, DOWN, T0 + timedelta(seconds=1))
    [alert] = uow.alerts.rows.values()
    assert alert.kind is AlertKind.SUPPLIER_BREAKER_OPEN
    assert alert.title == "Supplier sup-a is failing: its circuit breaker opened"
    assert sorted(q["target"] for q in uow.notifications.queued) == ["cn-ops", "slack-0"]

    await status(uow, UP, T0 + timedelta(seconds=2))
    await status(uow, DOWN, T0 + timedelta(seconds=3))
    assert len(uow.alerts.rows) == 2
    assert len(uow.notifications.queued) == 4


async def test_an_acknowledgement_is_kept_and_an_unknown_alert_is_not_found():
    uow = FakeUnitOfWork()
    await status(uow, DOWN, T0)
    [alert_id] = uow.alerts.rows
    first = await commands.acknowledge(uow, alert_id, "li.wei")
    again = await commands.acknowledge(uow, alert_id, "someone")
    assert first.acked_by == again.acked_by == "li.wei"
    with pytest.raises(AlertNotFound, match="alert nope not found"):
        await commands.acknowledge(uow, "nope", "x")


async def test_only_a_dead_notification_is_retried():
    uow = FakeUnitOfWork()
    dead = Notification(
        id="n1",
        dedupe_key="k",
        channel="email",
        target="customer",
        recipient_kind="customer",
        order_id="o1",
        kind="order_cancelled",
        reason="",
        alert_id=None,
        severity=None,
        template="order_cancelled",
        locale=None,
        status=Status.DEAD,
        attempts=8,
        next_attempt_at=T0,
        last_error="gave up",
        details={},
        created_at=T0,
        sent_at=None,
    )
    uow.notifications.rows = {"n1": dead, "n2": replace(dead, id="n2", status=Status.SENT)}
    retried = await commands.retry(uow, "n1")
    assert (retried.status, retried.attempts, uow.commits) == (Status.PENDING, 0, 1)
    with pytest.raises(NotDead, match="notification is sent; only dead"):
        await commands.retry(uow, "n2")
    with pytest.raises(NotificationNotFound):
        await commands.retry(uow, "n3")


def test_every_notify_error_has_an_http_mapping():
    errors = [
        cls
        for cls in vars(domain).values()
        if isinstance(cls, type) and issubclass(cls, domain.NotifyError)
    ]
    assert set(errors) - {domain.NotifyError} == set(HTTP_ERRORS)

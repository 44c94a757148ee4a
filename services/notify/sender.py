"""The sender: delivers queued notifications outside any transaction, and watches for trouble.

It claims due rows under a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so replicas
share the work), looks the customer up, renders, sends, and records the outcome with
its `notification-sent` event in one new transaction. A crash before the outcome is
recorded leaves the lease to expire and the row is sent again — with the same
Message-ID, the same `.eml` name or the same SMS `reference`, so the far side can tell.

Two smaller loops live here too: escalation of unacknowledged alerts, and the DLQ
watch that alerts when a dead-letter queue grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter

from services.notify import handlers
from services.notify.channels import (
    AlertMessage,
    Mailer,
    PermanentSendError,
    TransientSendError,
    build_email,
    send_alert,
    send_sms,
)
from services.notify.contacts import ContactBook, OrderUnknown
from services.notify.domain import CAPPED_KINDS, Kind, Status
from services.notify.rendering import Renderer
from services.notify.settings import NotifySettings, OpsWebhook
from services.notify.store import NotifyUnitOfWork
from shared import faults
from shared.bus import DLQ_SUFFIX, EVENT_TOPICS
from shared.db import aware
from shared.events import NotificationSent
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


SENT = Counter(
    "dropship_notifications_total",
    "Notifications that reached a final state.",
    ["recipient_kind", "channel", "kind", "status"],
)
SEND_FAILURES = Counter(
    "dropship_notification_send_failures_total",
    "Send attempts that failed (and will be retried or dead-lettered).",
    ["channel", "permanent"],
)


class Wakeup:
    """Set by a unit of work that queued sends; the sender waits on it between polls."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()


class Skip(Exception):
    """Nothing to send to; the notification ends `skipped` (or `suppressed`) with a reason."""

    def __init__(self, reason: str, status: Status = Status.SKIPPED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Sender:
    def __init__(
        self,
        runtime: ServiceRuntime[NotifyUnitOfWork],
        settings: NotifySettings,
        http: httpx.AsyncClient,
        mailer: Mailer,
        wakeup: Wakeup,
        renderer: Renderer | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.http = http
        self.mailer = mailer
        self.wakeup = wakeup
        self.renderer = renderer or Renderer()
        self.contacts = ContactBook(
            http, settings.order_url, settings.service_token.get_secret_value()
        )
        self.hooks: dict[str, OpsWebhook] = {
            hook.name or hook.kind: hook for hook in settings.ops_channels
        }
        self.retry = settings.retry_policy
        self.limit = settings.sender_concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._hash_key = hashlib.sha256(
            b"notify-recipient:" + settings.service_token.get_secret_value().encode()
        ).digest()
        self._mail_domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"

    async def run(self) -> None:
        try:
            while True:
                self.wakeup.event.clear()
                free = self.limit - len(self._inflight)
                rows = await self._claim(free) if free > 0 else []
                for row in rows:
                    task = asyncio.create_task(self._perform(row))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                if len(rows) < free or free == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.wakeup.event.wait(), self.settings.sender_poll_s
                        )
        finally:
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _claim(self, limit: int) -> list[Any]:
        async with self.runtime.uow() as uow:
            rows = await uow.claim_due(
                datetime.now(UTC), timedelta(seconds=self.settings.send_lease_s), limit
            )
            await uow.commit()
        return rows

    async def _perform(self, row: Any) -> None:
        try:
            if row.recipient_kind == "customer":
                locale, recipient = await self._customer(row)
            else:
                locale, recipient = None, None
                await self._ops(row)
        except Skip as skip:
            await self._finish(row, skip.status, error=skip.reason)
        except OrderUnknown as exc:
            await self._finish(row, Status.SKIPPED, error=str(exc))
        except PermanentSendError as exc:
            SEND_FAILURES.labels(row.channel, "true").inc()
            log.warning("send failed for good", extra={"notification": row.id, "error": str(exc)})
            await self._finish(row, Status.DEAD, error=str(exc))
        except TransientSendError as exc:
            SEND_FAILURES.labels(row.channel, "false").inc()
            await self._retry_later(row, str(exc), exc.retry_after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            SEND_FAILURES.labels(row.channel, "false").inc()
            log.exception("send crashed", extra={"notification": row.id})
            await self._retry_later(row, f"internal error: {type(exc).__name__}", None)
        else:
            await self._finish(row, Status.SENT, locale=locale, recipient_hash=recipient)
        finally:
            self.wakeup()  # a slot is free: claim the next due send now, not at the next poll

    # -- customers --------------------------------------------------------------------------
    async def _customer(self, row: Any) -> tuple[str, str]:
        contact = await self.contacts.fetch(row.order_id)
        if contact.redacted:
            raise Skip("customer_redacted")
        address = contact.email if row.channel == "email" else contact.phone
        if not address:
            raise Skip("no_email" if row.channel == "email" else "no_phone")
        recipient = self._recipient_hash(contact.email or contact.phone or "")
        kind = Kind(row.kind)
        async with self.runtime.uow() as uow:  # one read for the cap and the facts
            if kind in CAPPED_KINDS:
                await self._check_cap(uow, recipient, row.dedupe_key)
            context = await self._context(uow, row, kind)
        context["customer_name"] = contact.name
        rendered = self.renderer.render(kind, contact.locale, context)
        faults.crash_point("notify.before_send")
        if row.channel == "email":
            message = build_email(
                rendered,
                to_email=address,
                to_name=contact.name,
                mail_from=self.settings.mail_from,
                message_id=row.id,
                domain=self._mail_domain,
            )
            await self.mailer.send(message, row.id)
        else:
            if not self.settings.sms_webhook_url:
                raise Skip("sms_not_configured")
            await send_sms(
                self.http,
                self.settings.sms_webhook_url,
                to=address,
                text=rendered.sms,
                reference=row.id,
            )
        faults.crash_point("notify.after_send")
        return rendered.locale, recipient

    def _recipient_hash(self, identity: str) -> str:
        """A keyed hash of the customer's address: caps count per customer, no PII stored."""
        return hmac.new(self._hash_key, identity.strip().lower().encode(), "sha256").hexdigest()

    async def _check_cap(self, uow: NotifyUnitOfWork, recipient: str, dedupe_key: str) -> None:
        since = datetime.now(UTC) - timedelta(days=1)
        if await uow.notice_sent_to(recipient, dedupe_key):
            return  # the e-mail of this notice went out; its SMS is the same notice
        if await uow.sent_to_recipient_since(recipient, since) >= self.settings.customer_daily_cap:
            raise Skip("daily_cap", Status.SUPPRESSED)

    async def _context(self, uow: NotifyUnitOfWork, row: Any, kind: Kind) -> dict[str, Any]:
        parts: list[dict[str, Any]] = list(row.details.get("parts", []))
        fact = await uow.order_fact(row.order_id)
        for part in parts:
            # supplier-confirmed travels on another topic and may have come after the delay
            if not part.get("line_ids") and part.get("supplier_id"):
                found = await uow.share_lines(row.order_id, part["supplier_id"])
                part["line_ids"] = found or []
        lines = {line["line_id"]: line for line in (fact.lines if fact else [])}
        line_ids: list[str] = []
        for part in parts:
            line_ids.extend(i for i in part.get("line_ids", []) if i not in line_ids)
        context: dict[str, Any] = {
            "merchant": self.settings.merchant_name,
            "support_email": self.settings.support_email,
            "order_ref": (fact.external_id if fact and fact.external_id else row.order_id),
            "reason": row.reason,
            "items": [
                {"sku": lines[i]["sku"], "quantity": lines[i]["quantity"]}
                for i in line_ids
                if i in lines
            ],
            "all_lines": bool(lines) and set(lines) <= set(line_ids),
        }
        if kind is Kind.SHIPMENT_DELAYED:
            dates = [
                datetime.fromisoformat(p["expected_by"]) for p in parts if p.get("expected_by")
            ]
            context["expected_by"] = max(dates) if dates else None
        elif kind is Kind.SHIPMENT_DISPATCHED:
            context["carrier"] = parts[0]["carrier"]
            context["tracking_number"] = parts[0]["tracking_number"]
        elif kind is Kind.ORDER_CANCELLED:
            context["cancel_reason"] = parts[0].get("cancel_reason") if parts else None
        elif kind is Kind.ORDER_ROUTING_FAILED:
            context["routing_reason"] = parts[0].get("routing_reason") if parts else None
            if not lines:
                context["all_lines"] = True
        return context

    # -- ops ----------------------------------------------------------------------------------
    async def _ops(self, row: Any) -> None:
        hook = self.hooks.get(row.target)
        if hook is None:
            raise PermanentSendError(f"ops channel {row.target!r} is no longer configured")
        async with self.runtime.uow() as uow:
            alert = await uow.alert(row.alert_id)
        if alert is None:
            raise PermanentSendError("alert not found")
        escalations = int(row.details.get("escalations", 0))
        if alert.acked_at is not None and escalations > 0:
            raise Skip("acknowledged")
        base = (self.settings.public_url or "").rstrip("/")
        message = AlertMessage(
            alert_id=alert.id,
            kind=alert.kind,
            severity=row.severity or alert.severity,
            title=alert.title,
            lines=list(alert.details.get("lines", [])),
            order_id=alert.order_id,
            escalations=escalations,
            ack_url=f"{base}/v1/alerts/{alert.id}/ack",
            raised_at=(aware(alert.raised_at) or datetime.now(UTC)).isoformat(),
        )
        await send_alert(self.http, hook, message)

    # -- outcomes -----------------------------------------------------------------------------
    async def _finish(
        self,
        row: Any,
        status: Status,
        *,
        error: str | None = None,
        locale: str | None = None,
        recipient_hash: str | None = None,
    ) -> None:
        async with self.runtime.uow() as uow:
            if not await uow.finish(
                row.id,
                status,
                attempt=row.attempts + 1,  # the claim counted this attempt
                error=error,
                locale=locale,
                recipient_hash=recipient_hash,
            ):
                log.warning("send outcome dropped: lease lost", extra={"notification": row.id})
                return
            uow.emit(
                NotificationSent(
                    order_id=row.order_id or f"alert:{row.alert_id}",
                    kind=row.kind,
                    channel=row.channel,
                    recipient_kind=row.recipient_kind,
                    status=status.value,
                )
            )
            await uow.commit()
        SENT.labels(row.recipient_kind, row.channel, row.kind, status.value).inc()

    async def _retry_later(self, row: Any, error: str, retry_after: float | None) -> None:
        attempts = row.attempts + 1  # the claim counted this attempt
        now = datetime.now(UTC)
        at = self.retry.next_attempt(now, attempts, retry_after)
        if at is None:
            log.error(
                "notification dead-lettered after retries",
                extra={"notification": row.id, "attempts": attempts, "error": error},
            )
            await self._finish(
                row, Status.DEAD, error=f"gave up after {attempts} attempts: {error}"
            )
            return
        async with self.runtime.uow() as uow:
            await uow.reschedule(row.id, attempts, at, error)
            await uow.commit()


async def escalation_loop(runtime: ServiceRuntime[NotifyUnitOfWork], interval_s: float) -> None:
    while True:
        await handlers.escalate_overdue(runtime.uow())
        await asyncio.sleep(interval_s)


async def read_dlq_depths(consumer: AIOKafkaConsumer) -> dict[str, int]:
    """Messages currently held by each `<topic>.dlq` (end minus beginning offsets)."""
    topics = [topic + DLQ_SUFFIX for topic in EVENT_TOPICS]
    await consumer._client.force_metadata_update()
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    if not partitions:
        return {}
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.beginning_offsets(partitions)
    depths: dict[str, int] = {}
    for tp in partitions:
        depths[tp.topic] = depths.get(tp.topic, 0) + ends[tp] - starts[tp]
    return depths


BREAKER_LINE = re.compile(
    r'^dropship_supplier_breaker_open\{supplier_id="([^"]+)"\} ([0-9.]+)$', re.M
)


async def read_open_breakers(http: httpx.AsyncClient, supplier_url: str) -> dict[str, bool]:
    """Which suppliers' circuit breakers are open, from the supplier service's `/metrics`."""
    response = await http.get(f"{supplier_url.rstrip('/')}/metrics")
    response.raise_for_status()
    return {sid: float(value) >= 1 for sid, value in BREAKER_LINE.findall(response.text)}


async def watch(
    runtime: ServiceRuntime[NotifyUnitOfWork], http: httpx.AsyncClient, interval_s: float
) -> None:
    """Alert when a dead-letter queue grows or a supplier's circuit breaker opens."""
    settings = runtime.settings
    assert isinstance(settings, NotifySettings)
    await runtime.bus.wait_connected()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=runtime.settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        while True:
            try:
                depths = await read_dlq_depths(consumer)
            except Exception:
                log.warning("could not read DLQ depths", exc_info=True)
            else:
                await handlers.record_dlq_depths(runtime.uow(), depths)
            if settings.supplier_url:
                try:
                    breakers = await read_open_breakers(http, settings.supplier_url)
                except (httpx.HTTPError, ValueError):
                    log.info("supplier service metrics unavailable", exc_info=True)
                else:
                    await handlers.record_breakers(runtime.uow(), breakers)
            await asyncio.sleep(interval_s)
    finally:
        await consumer.stop()

"""The sender: delivers queued notifications outside any transaction.

It takes the sends handed over by the transactions that queued (and claimed) them
(`handoff`), and claims other due rows under a lease (PostgreSQL: `FOR UPDATE SKIP
LOCKED`, so replicas share the work); looks the customers of the sends taken together up
together (one request to the order service, `contacts.ContactBatch`), renders, sends,
and records the outcome with its `notification-sent` event; outcomes of sends finishing
within `outcome_linger_ms` of each other share one transaction (`batcher.Batcher`). A
crash before the outcome is recorded leaves the lease to expire and the row is sent
again — with the same Message-ID, the same `.eml` name or the same SMS `reference`, so
the far side can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

import httpx
from prometheus_client import Counter

from services.notify.batcher import Batcher
from services.notify.channel_config import OpsWebhook
from services.notify.channels import (
    AlertMessage,
    Mailer,
    PermanentSendError,
    TransientSendError,
    send_alert,
    send_sms,
)
from services.notify.contacts import ContactBatch, ContactBook, OrderUnknown
from services.notify.domain import CAPPED_KINDS, Kind, Notification, OrderFact, Status
from services.notify.handoff import HandOff
from services.notify.mime import build_email
from services.notify.rendering import Renderer, notice_context
from services.notify.settings import NotifySettings
from services.notify.store import NotifyUnitOfWork
from shared import faults
from shared.events import NotificationSent
from shared.idle import Backoff
from shared.logging import log_context

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
    """Set by a unit of work that queued sends; the sender waits on it between polls.

    Called, it asks for a claim (rows are due that only a claim finds); `event.set()`
    alone wakes the sender to take handed-over sends.
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.claim = False

    def __call__(self) -> None:
        self.claim = True
        self.event.set()


@dataclass(frozen=True)
class Outcome:
    """What became of one send: a final status, or (`retry_at`) another attempt later."""

    send: Notification
    status: Status
    error: str | None = None
    locale: str | None = None
    recipient_hash: str | None = None
    retry_at: datetime | None = None


class Skip(Exception):
    """Nothing to send to; the notification ends `skipped` (or `suppressed`) with a reason."""

    def __init__(self, reason: str, status: Status = Status.SKIPPED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Prepared:
    """What a customer send needs before it goes: its parts and order fact, or why not."""

    parts: list[dict[str, Any]]
    fact: OrderFact | None
    skip: Skip | None = None


class Sender:
    """Claims due sends and performs up to `sender_concurrency` of them at once."""

    def __init__(
        self,
        uows: Callable[[], NotifyUnitOfWork],
        settings: NotifySettings,
        http: httpx.AsyncClient,
        mailer: Mailer,
        wakeup: Wakeup,
        renderer: Renderer | None = None,
        *,
        hand_off: HandOff | None = None,
    ) -> None:
        self.uows = uows
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
        self._backlog = False
        """A claim is owed (the last filled every free slot, or none was free): claim again
        as a slot frees."""
        if hand_off is None:  # (not `or`: an empty hand-off is falsy)
            hand_off = HandOff(lambda: None, timedelta(0), 0, enabled=False)
        self.hand_off = hand_off
        self.hand_off.running = self._running
        self._outcomes: Batcher[Outcome, bool] = Batcher(
            self._write_outcomes, settings.outcome_linger_ms / 1000, max_size=self.limit
        )
        # sends looked up together reach their cap check in one turn of the loop: no linger
        self._prepares: Batcher[tuple[Notification, str], Prepared] = Batcher(
            self._prepare_many, 0.0, max_size=self.limit
        )
        self._hash_key = hashlib.sha256(
            b"notify-recipient:" + settings.service_token.get_secret_value().encode()
        ).digest()
        self._mail_domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"

    def _running(self) -> int:
        # a send that just finished woke us before its done-callback left the set:
        # count only the sends still running, or a freed slot would go unclaimed
        return sum(not task.done() for task in self._inflight)

    async def run(self) -> None:
        poll = Backoff(self.settings.sender_poll_s, self.settings.idle_poll_backoff)
        claim = True  # at start: rows a previous process left due or leased
        try:
            while True:
                self.wakeup.event.clear()
                claim = claim or self.wakeup.claim or self._backlog
                self.wakeup.claim = False
                free = self.limit - self._running()
                sends = self.hand_off.take(free) if free > 0 else []
                free -= len(sends)
                claimed = await self._claim(free) if claim and free > 0 else []
                # owed: no slot was free for the claim, or it filled every free one
                self._backlog = claim and (free <= 0 or len(claimed) == free)
                claim = False
                sends += claimed
                contacts = self._contacts_of(sends)
                for send in sends:
                    with log_context(order_id=send.order_id):  # the task copies the context
                        task = asyncio.create_task(self._perform(send, contacts))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                if self._backlog and claimed:
                    continue  # every slot taken now: the loop waits below on its next turn
                wait = poll.found(bool(sends or self._inflight or len(self.hand_off)))
                with contextlib.suppress(TimeoutError):  # 3.11 wait_for can lose a cancel
                    async with asyncio.timeout(wait):
                        await self.wakeup.event.wait()
                if self.wakeup.event.is_set():
                    poll.woken()
                else:
                    claim = True  # the poll: retries, digests, leases run out
        finally:
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
            await self._prepares.close()
            await self._outcomes.close()

    async def _claim(self, limit: int) -> list[Notification]:
        async with self.uows() as uow:
            claimed = await uow.notifications.claim_due(
                datetime.now(UTC), timedelta(seconds=self.settings.send_lease_s), limit
            )
            await uow.commit()
        return claimed

    def _contacts_of(self, claimed: list[Notification]) -> ContactBatch:
        """One contact lookup for the customers of every send claimed together."""
        orders = (s.order_id for s in claimed if s.recipient_kind == "customer" and s.order_id)
        return ContactBatch(self.contacts, orders)

    async def _perform(self, send: Notification, contacts: ContactBatch) -> None:
        try:
            if send.recipient_kind == "customer":
                locale, recipient = await self._customer(send, contacts)
            else:
                locale, recipient = None, None
                await self._ops(send)
        except Skip as skip:
            await self._finish(send, skip.status, error=skip.reason)
        except OrderUnknown as exc:
            await self._finish(send, Status.SKIPPED, error=str(exc))
        except PermanentSendError as exc:
            SEND_FAILURES.labels(send.channel, "true").inc()
            log.warning("send failed for good", extra={"notification": send.id, "error": str(exc)})
            await self._finish(send, Status.DEAD, error=str(exc))
        except TransientSendError as exc:
            SEND_FAILURES.labels(send.channel, "false").inc()
            await self._retry_later(send, str(exc), exc.retry_after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            SEND_FAILURES.labels(send.channel, "false").inc()
            log.exception("send crashed", extra={"notification": send.id})
            await self._retry_later(send, f"internal error: {type(exc).__name__}", None)
        else:
            await self._finish(send, Status.SENT, locale=locale, recipient_hash=recipient)
        finally:
            if self._backlog:  # a slot is free: claim the next due send now, not at the next poll
                self.wakeup()
            elif len(self.hand_off):  # a slot is free for a send handed over meanwhile
                self.wakeup.event.set()

    # -- customers --------------------------------------------------------------------------
    async def _customer(self, send: Notification, contacts: ContactBatch) -> tuple[str, str]:
        if send.order_id is None:
            raise PermanentSendError("a customer notice names no order")
        contact = await contacts.get(send.order_id)
        if contact.redacted:
            raise Skip("customer_redacted")
        address = contact.email if send.channel == "email" else contact.phone
        if not address:
            raise Skip("no_email" if send.channel == "email" else "no_phone")
        recipient = self._recipient_hash(contact.email or contact.phone or "")
        kind = Kind(send.kind)
        prepared = await self._prepares.submit((send, recipient))
        if prepared.skip is not None:
            raise prepared.skip
        context = notice_context(
            kind,
            send,
            prepared.parts,
            prepared.fact,
            merchant=self.settings.merchant_name,
            support_email=self.settings.support_email,
        )
        context["customer_name"] = contact.name
        rendered = self.renderer.render(kind, contact.locale, context)
        faults.crash_point("notify.before_send")
        if send.channel == "email":
            message = build_email(
                rendered,
                to_email=address,
                to_name=contact.name,
                mail_from=self.settings.mail_from,
                message_id=send.id,
                domain=self._mail_domain,
            )
            await self.mailer.send(message, send.id)
        else:
            if not self.settings.sms_webhook_url:
                raise Skip("sms_not_configured")
            await send_sms(
                self.http,
                self.settings.sms_webhook_url,
                to=address,
                text=rendered.sms,
                reference=send.id,
            )
        faults.crash_point("notify.after_send")
        return rendered.locale, recipient

    async def _prepare_many(self, sends: Sequence[tuple[Notification, str]]) -> list[Prepared]:
        """Cap reservations, parts and order facts of customer sends about to go, in one
        transaction (by recipient: replicas take the per-customer cap locks in one order)."""
        prepared: list[Prepared | None] = [None] * len(sends)
        async with self.uows() as uow:
            for i in sorted(range(len(sends)), key=lambda i: sends[i][1]):
                send, recipient = sends[i]
                if Kind(send.kind) in CAPPED_KINDS:
                    try:
                        await self._check_cap(uow, recipient, send)
                    except Skip as skip:
                        prepared[i] = Prepared([], None, skip)
                        continue
                parts = await self._parts(uow, send)
                fact = await uow.orders.get(send.order_id or "")
                prepared[i] = Prepared(parts, fact)
            await uow.commit()  # the reservations against the cap
        return [p for p in prepared if p is not None]

    def _recipient_hash(self, identity: str) -> str:
        """A keyed hash of the customer's address: caps count per customer, no PII stored."""
        return hmac.new(self._hash_key, identity.strip().lower().encode(), "sha256").hexdigest()

    async def _check_cap(self, uow: NotifyUnitOfWork, recipient: str, send: Notification) -> None:
        since = datetime.now(UTC) - timedelta(days=1)
        cap = self.settings.customer_daily_cap
        if not await uow.notifications.reserve_under_cap(send, recipient, since, cap):
            raise Skip("daily_cap", Status.SUPPRESSED)

    @staticmethod
    async def _parts(uow: NotifyUnitOfWork, send: Notification) -> list[dict[str, Any]]:
        """The notice's parts, with the lines of suppliers whose confirmation came late."""
        parts: list[dict[str, Any]] = []
        for part in send.details.get("parts", []):
            # supplier-confirmed travels on another topic and may have come after the delay
            if not part.get("line_ids") and part.get("supplier_id") and send.order_id:
                found = await uow.orders.share_lines(send.order_id, part["supplier_id"])
                part = {**part, "line_ids": found or []}
            parts.append(part)
        return parts

    # -- ops ----------------------------------------------------------------------------------
    async def _ops(self, send: Notification) -> None:
        hook = self.hooks.get(send.target)
        if hook is None:
            raise PermanentSendError(f"ops channel {send.target!r} is no longer configured")
        alert = None
        if send.alert_id is not None:
            async with self.uows() as uow:
                alert = await uow.alerts.get(send.alert_id)
        if alert is None:
            raise PermanentSendError("alert not found")
        escalations = int(send.details.get("escalations", 0))
        if alert.acked_at is not None and escalations > 0:
            raise Skip("acknowledged")
        base = (self.settings.public_url or "").rstrip("/")
        message = AlertMessage(
            alert_id=alert.id,
            kind=alert.kind.value,
            severity=send.severity or alert.severity.value,
            title=alert.title,
            lines=alert.lines,
            order_id=alert.order_id,
            escalations=escalations,
            ack_url=f"{base}/v1/alerts/{alert.id}/ack",
            raised_at=alert.raised_at.isoformat(),
        )
        await send_alert(self.http, hook, message)

    # -- outcomes -----------------------------------------------------------------------------
    async def _finish(
        self,
        send: Notification,
        status: Status,
        *,
        error: str | None = None,
        locale: str | None = None,
        recipient_hash: str | None = None,
    ) -> None:
        outcome = Outcome(send, status, error, locale, recipient_hash)
        if not await self._outcomes.submit(outcome):
            log.warning("send outcome dropped: lease lost", extra={"notification": send.id})
            return
        SENT.labels(send.recipient_kind, send.channel, send.kind, status.value).inc()
        log.info(
            "notification %s",
            status.value,
            extra={"notification": send.id, "kind": send.kind, "channel": send.channel},
        )

    async def _retry_later(self, send: Notification, error: str, retry_after: float | None) -> None:
        at = self.retry.next_attempt(datetime.now(UTC), send.attempts, retry_after)
        if at is None:
            log.error(
                "notification dead-lettered after retries",
                extra={"notification": send.id, "attempts": send.attempts, "error": error},
            )
            await self._finish(
                send, Status.DEAD, error=f"gave up after {send.attempts} attempts: {error}"
            )
            return
        await self._outcomes.submit(Outcome(send, Status.PENDING, error, retry_at=at))

    async def _write_outcomes(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """The outcomes of sends that finished together, in one transaction (rows in id
        order, so two replicas' batches lock alike); per outcome, whether it was written
        (False: the lease was lost to another claim, see `Notifications.finish`)."""
        written = [False] * len(outcomes)
        async with self.uows() as uow:
            for i in sorted(range(len(outcomes)), key=lambda i: outcomes[i].send.id):
                o = outcomes[i]
                if o.retry_at is not None:
                    await uow.notifications.reschedule(o.send, o.retry_at, o.error or "")
                    written[i] = True
                    continue
                written[i] = await uow.notifications.finish(
                    o.send,
                    o.status,
                    error=o.error,
                    locale=o.locale,
                    recipient_hash=o.recipient_hash,
                )
                if written[i]:
                    uow.emit(
                        NotificationSent(
                            order_id=o.send.order_id or f"alert:{o.send.alert_id}",
                            kind=o.send.kind,
                            channel=o.send.channel,
                            recipient_kind=o.send.recipient_kind,
                            status=o.status.value,
                        )
                    )
            await uow.commit()
        return written

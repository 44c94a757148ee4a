"""Order repositories: the aggregate to and from rows, the timeline, idempotency keys, webhooks."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.domain import (
    Address,
    Allocation,
    Contact,
    LineStage,
    Order,
    OrderLine,
    Shipment,
)
from services.order.pii import PiiCipher
from services.order.tables import (
    allocation,
    customer_order,
    idempotency_key,
    order_line,
    order_timeline,
    shipment,
    webhook_delivery,
)
from shared.db import aware, dialect_insert
from shared.events import Envelope

REDACTED = "[redacted]"


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class OrderFilter:
    status: str | None = None
    channel: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def encode_cursor(created_at: datetime, order_id: str) -> str:
    raw = json.dumps({"c": created_at.isoformat(), "i": order_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        created = datetime.fromisoformat(data["c"])
        return (aware(created) or created), str(data["i"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this API returned") from exc


class OrderRepository:
    def __init__(self, session: AsyncSession, cipher: PiiCipher, dialect: str) -> None:
        self.session = session
        self.cipher = cipher
        self.dialect = dialect

    # -- writing ------------------------------------------------------------------------
    async def add(self, order: Order) -> None:
        c, s, enc = order.customer, order.shipping, self.cipher.encrypt
        await self.session.execute(
            customer_order.insert(),
            dict(
                id=order.id,
                channel=order.channel,
                external_id=order.external_id,
                currency=order.currency,
                status=order.status.value,
                delayed=order.delayed,
                customer_name=enc(c.name, "customer_name"),
                email=enc(c.email, "email"),
                email_index=self.cipher.email_index(c.email),
                phone=enc(c.phone, "phone"),
                locale=c.locale,
                ship_line1=enc(s.line1, "ship_line1"),
                ship_line2=enc(s.line2, "ship_line2"),
                ship_city=s.city,
                ship_region=s.region,
                ship_postal_code=s.postal_code,
                ship_country=s.country,
                state=self._state(order),
                created_at=order.created_at,
                updated_at=order.created_at,
            ),
        )
        await self.session.execute(
            order_line.insert(),
            [
                {
                    "id": ln.line_id,
                    "order_id": order.id,
                    "position": i,
                    "sku": ln.sku,
                    "quantity": ln.quantity,
                    "unit_price": ln.unit_price,
                    "stage": int(ln.stage),
                }
                for i, ln in enumerate(order.lines, start=1)
            ],
        )

    async def save(self, order: Order) -> None:
        """Write back what the aggregate changed (it was loaded with `get(for_update=True)`)."""
        await self.session.execute(
            update(customer_order)
            .where(customer_order.c.id == order.id)
            .values(
                status=order.status.value,
                delayed=order.delayed,
                state=self._state(order),
                cancelled_at=order.cancelled_at,
                cancel_reason=order.cancel_reason,
                updated_at=datetime.now(UTC),
            )
        )
        for ln in order.lines:
            await self.session.execute(
                update(order_line)
                .where(order_line.c.id == ln.line_id)
                .values(
                    stage=int(ln.stage),
                    supplier_id=ln.supplier_id,
                    unit_cost=ln.unit_cost,
                    routing_failed=ln.routing_failed,
                )
            )
        insert = dialect_insert(self.dialect)
        for a in order.allocations:
            await self.session.execute(
                insert(allocation)
                .values(
                    order_id=order.id,
                    supplier_id=a.supplier_id,
                    supplier_order_ref=a.supplier_order_ref,
                    line_ids=a.line_ids,
                    currency=a.currency,
                    ship_by=a.ship_by,
                    confirmed_at=a.confirmed_at,
                )
                .on_conflict_do_nothing()
            )
        for sh in order.shipments:
            stmt = insert(shipment).values(
                order_id=order.id,
                supplier_id=sh.supplier_id,
                carrier=sh.carrier,
                tracking_number=sh.tracking_number,
                line_ids=sh.line_ids,
                dispatched_at=sh.dispatched_at,
                delivered_at=sh.delivered_at,
            )
            await self.session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[shipment.c.order_id, shipment.c.tracking_number],
                    set_={"delivered_at": stmt.excluded.delivered_at},
                )
            )

    @staticmethod
    def _state(order: Order) -> dict[str, Any]:
        return {
            "delayed_suppliers": sorted(order.delayed_suppliers),
            "early_deliveries": {k: v.isoformat() for k, v in order.early_deliveries.items()},
            "released_suppliers": sorted(order.released_suppliers),
        }

    async def redact(self, email: str) -> int:
        """Erase name, e-mail, phone and street of every order of this customer."""
        indexes = self.cipher.email_indexes(email)
        result = await self.session.execute(
            update(customer_order)
            .where(customer_order.c.email_index.in_(indexes))
            .values(
                customer_name=None,
                email=None,
                email_index=None,
                phone=None,
                ship_line1=None,
                ship_line2=None,
                redacted_at=datetime.now(UTC),
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- reading ------------------------------------------------------------------------
    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        query = select(customer_order).where(customer_order.c.id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else await self._load(row)

    async def get_by_external(
        self, channel: str, external_id: str, *, for_update: bool = False
    ) -> Order | None:
        query = select(customer_order).where(
            customer_order.c.channel == channel, customer_order.c.external_id == external_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else await self._load(row)

    async def list(
        self, flt: OrderFilter, limit: int, cursor: str | None
    ) -> tuple[list[Order], str | None]:
        query = select(customer_order)
        conditions = []
        if flt.status:
            conditions.append(customer_order.c.status == flt.status)
        if flt.channel:
            conditions.append(customer_order.c.channel == flt.channel)
        if flt.created_from:
            conditions.append(customer_order.c.created_at >= flt.created_from)
        if flt.created_to:
            conditions.append(customer_order.c.created_at < flt.created_to)
        if cursor:
            created, last_id = decode_cursor(cursor)
            conditions.append(
                or_(
                    customer_order.c.created_at < created,
                    and_(customer_order.c.created_at == created, customer_order.c.id < last_id),
                )
            )
        if conditions:
            query = query.where(*conditions)
        query = query.order_by(
            customer_order.c.created_at.desc(), customer_order.c.id.desc()
        ).limit(limit + 1)
        rows = (await self.session.execute(query)).all()
        orders = [await self._load(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = orders[-1]
            next_cursor = encode_cursor(last.created_at, last.id)
        return orders, next_cursor

    async def _load(self, row: Any) -> Order:
        lines = (
            await self.session.execute(
                select(order_line)
                .where(order_line.c.order_id == row.id)
                .order_by(order_line.c.position)
            )
        ).all()
        allocs = (
            await self.session.execute(
                select(allocation).where(allocation.c.order_id == row.id).order_by(allocation.c.id)
            )
        ).all()
        ships = (
            await self.session.execute(
                select(shipment).where(shipment.c.order_id == row.id).order_by(shipment.c.id)
            )
        ).all()
        dec = self.cipher.decrypt
        state = row.state or {}
        redacted = row.redacted_at is not None
        return Order(
            id=row.id,
            channel=row.channel,
            external_id=row.external_id,
            currency=row.currency,
            customer=Contact(
                name=REDACTED if redacted else (dec(row.customer_name, "customer_name") or ""),
                email=REDACTED if redacted else (dec(row.email, "email") or ""),
                phone=None if redacted else dec(row.phone, "phone"),
                locale=row.locale,
            ),
            shipping=Address(
                line1=REDACTED if redacted else (dec(row.ship_line1, "ship_line1") or ""),
                line2=None if redacted else dec(row.ship_line2, "ship_line2"),
                city=row.ship_city,
                region=row.ship_region,
                postal_code=row.ship_postal_code,
                country=row.ship_country,
            ),
            lines=[
                OrderLine(
                    line_id=ln.id,
                    sku=ln.sku,
                    quantity=ln.quantity,
                    unit_price=Decimal(ln.unit_price),
                    stage=LineStage(ln.stage),
                    supplier_id=ln.supplier_id,
                    unit_cost=None if ln.unit_cost is None else Decimal(ln.unit_cost),
                    routing_failed=ln.routing_failed,
                )
                for ln in lines
            ],
            created_at=aware(row.created_at) or row.created_at,
            cancelled_at=aware(row.cancelled_at),
            cancel_reason=row.cancel_reason,
            delayed=row.delayed,
            delayed_suppliers=set(state.get("delayed_suppliers", [])),
            released_suppliers=set(state.get("released_suppliers", [])),
            early_deliveries={
                k: datetime.fromisoformat(v) for k, v in state.get("early_deliveries", {}).items()
            },
            allocations=[
                Allocation(
                    a.supplier_id,
                    a.supplier_order_ref,
                    list(a.line_ids),
                    a.currency,
                    aware(a.ship_by) or a.ship_by,
                    aware(a.confirmed_at) or a.confirmed_at,
                )
                for a in allocs
            ],
            shipments=[
                Shipment(
                    s.supplier_id,
                    s.carrier,
                    s.tracking_number,
                    list(s.line_ids),
                    aware(s.dispatched_at) or s.dispatched_at,
                    aware(s.delivered_at),
                )
                for s in ships
            ],
            redacted=redacted,
        )


@dataclass(frozen=True)
class TimelineEntry:
    type: str
    time: datetime
    source: str
    data: dict[str, Any]
    note: str | None


class Timeline:
    """Every event that touched an order, in event-time order."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, envelope: Envelope, note: str | None = None) -> None:
        await self.session.execute(
            order_timeline.insert(),
            dict(
                order_id=envelope.subject,
                event_id=envelope.id,
                type=envelope.type,
                time=envelope.time,
                source=envelope.source,
                data=envelope.data,
                note=note,
            ),
        )

    async def of(self, order_id: str) -> list[TimelineEntry]:
        rows = await self.session.execute(
            select(order_timeline)
            .where(order_timeline.c.order_id == order_id)
            .order_by(order_timeline.c.time, order_timeline.c.id)
        )
        return [
            TimelineEntry(r.type, aware(r.time) or r.time, r.source, r.data, r.note) for r in rows
        ]


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    status_code: int | None
    body: Any


class IdempotencyKeys:
    """`Idempotency-Key`s and the first response given for each (kept at least 24 h)."""

    RETENTION = timedelta(hours=48)

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def claim(
        self, scope: str, key: str, request_hash: str, response: Any
    ) -> StoredResponse | None:
        """Reserve the key with the response it will answer; the earlier use if there was one."""
        stmt = dialect_insert(self.dialect)(idempotency_key).on_conflict_do_nothing()
        result = await self.session.execute(
            stmt,
            {
                "scope": scope,
                "key": key,
                "request_hash": request_hash,
                "status_code": response.status_code,
                "response": response.body,
                "created_at": datetime.now(UTC),
            },
        )
        if getattr(result, "rowcount", 0) == 1:
            return None
        row = (
            await self.session.execute(
                select(idempotency_key).where(
                    idempotency_key.c.scope == scope, idempotency_key.c.key == key
                )
            )
        ).one()
        return StoredResponse(row.request_hash, row.status_code, row.response)

    async def purge(self) -> int:
        cutoff = datetime.now(UTC) - self.RETENTION
        result = await self.session.execute(
            delete(idempotency_key).where(idempotency_key.c.created_at < cutoff)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class WebhookDeliveries:
    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def first_time(self, source: str, delivery_id: str, topic: str) -> bool:
        """Record a delivery id; False when it was seen before (a redelivery)."""
        stmt = (
            dialect_insert(self.dialect)(webhook_delivery)
            .values(
                source=source, delivery_id=delivery_id, topic=topic, received_at=datetime.now(UTC)
            )
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        return getattr(result, "rowcount", 0) == 1

    async def count(self) -> int:
        return int(
            await self.session.scalar(select(func.count()).select_from(webhook_delivery)) or 0
        )

    async def seen(self, source: str, delivery_id: str) -> bool:
        found = await self.session.scalar(
            select(webhook_delivery.c.delivery_id).where(
                webhook_delivery.c.source == source, webhook_delivery.c.delivery_id == delivery_id
            )
        )
        return found is not None


_PII_COLUMNS = ("customer_name", "email", "phone", "ship_line1", "ship_line2")


async def rotate_pii_batch(session: AsyncSession, cipher: PiiCipher, limit: int) -> int:
    """Re-encrypt up to `limit` orders whose PII is not under the active key."""
    prefix = f"v1.{cipher.active_kid}.%"
    stale = or_(
        *(
            and_(customer_order.c[col].is_not(None), customer_order.c[col].not_like(prefix))
            for col in _PII_COLUMNS
        )
    )
    rows = (
        await session.execute(
            select(customer_order.c.id, *(customer_order.c[c] for c in _PII_COLUMNS))
            .where(stale)
            .limit(limit)
            .with_for_update()
        )
    ).all()
    for row in rows:
        plain = {col: cipher.decrypt(getattr(row, col), col) for col in _PII_COLUMNS}
        values: dict[str, Any] = {col: cipher.encrypt(plain[col], col) for col in _PII_COLUMNS}
        if plain["email"] is not None:
            values["email_index"] = cipher.email_index(plain["email"])
        await session.execute(
            update(customer_order).where(customer_order.c.id == row.id).values(**values)
        )
    return len(rows)

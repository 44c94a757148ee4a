"""Orders repository: load, add, save, list, redact and re-encrypt Order aggregates."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.aftersales.redaction import redact_texts
from services.order.domain import Order
from services.order.errors import InvalidCursor
from services.order.pii import PiiCipher
from services.order.repository import loads, one_trip
from services.order.repository.changes import ORDER_COLUMNS, Changes, Loaded
from services.order.repository.rows import (
    PII_COLUMNS,
    CustomerContact,
    address_values,
    contact_from_row,
    line_values,
    order_values,
    reencrypted,
)
from services.order.repository.timeline import insert_entries
from services.order.tables import allocation, customer_order, order_line, shipment
from shared.db import aware, dialect_insert

_UPDATE_LINE = (
    update(order_line)
    .where(order_line.c.id == bindparam("b_id"))
    .values(
        stage=bindparam("stage"),
        supplier_id=bindparam("supplier_id"),
        unit_cost=bindparam("unit_cost"),
        routing_failed=bindparam("routing_failed"),
        waiting=bindparam("waiting"),
    )
)
"""One statement for every moved line of an order (executemany, `changes.line_columns`)."""


_UPDATE_ORDER = (
    update(customer_order)
    .where(customer_order.c.id == bindparam("b_id"))
    .values({name: bindparam(name) for name in (*ORDER_COLUMNS, "updated_at")})
)
"""The moved `customer_order` columns of many orders (executemany, `changes.order_columns`)."""


@dataclass
class _Deferred:
    """What `save` would have written since the last flush, the latest row per key."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    allocations: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    shipments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


@functools.cache
def _child_writes(dialect: str) -> tuple[Any, Any]:
    """The allocation insert and the shipment upsert of `dialect`, built once: executed with
    a list of rows (one executemany each), they stay in SQLAlchemy's compiled cache, which
    a multi-row `.values([...])` would not."""
    insert = dialect_insert(dialect)
    new_allocations = insert(allocation).on_conflict_do_nothing()
    stmt = insert(shipment)
    upsert_shipments = stmt.on_conflict_do_update(
        index_elements=[shipment.c.order_id, shipment.c.tracking_number],
        set_={"delivered_at": stmt.excluded.delivered_at},
    )
    return new_allocations, upsert_shipments


@dataclass(frozen=True)
class OrderFilter:
    status: str | None = None
    channel: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    external_id: str | None = None
    shop_id: str | None = None
    """A registered shop's orders only (with `external_id`: that shop's order number)."""
    waiting: bool | None = None
    """True: orders with a line waiting for a supplier; False: orders with none."""
    delayed: bool | None = None
    email_indexes: tuple[str, ...] | None = None
    """Blind indexes of one customer e-mail (under every key): that customer's orders."""


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
        raise InvalidCursor() from exc


def _contacts(ship_to: bool) -> Any:
    """`OrderRepository.contacts`' query: built once per shape, the ids one expanding
    parameter (notify asks for every notice, the supplier for every placement)."""
    c = customer_order.c
    columns = [c.id, c.customer_name, c.email, c.phone, c.locale, c.redacted_at]
    if ship_to:
        columns += [c.ship_line1, c.ship_line2, c.ship_city, c.ship_region]
        columns += [c.ship_postal_code, c.ship_country]
    return select(*columns).where(c.id.in_(bindparam("p_ids", expanding=True)))


_CONTACTS = {ship_to: _contacts(ship_to) for ship_to in (False, True)}


class OrderRepository:
    """Order aggregates in `customer_order` and its child tables (PII encrypted at rest)."""

    def __init__(self, session: AsyncSession, dialect: str, *, cipher: PiiCipher) -> None:
        self.session = session
        self.dialect = dialect
        self.cipher = cipher
        self._loaded: dict[str, Loaded] = {}
        """The orders loaded for update (or without PII) in this transaction, as loaded or
        last saved: what `save` compares with."""
        self._locked: dict[str, dict[int, list[Any]]] = {}
        """Rows of orders `lock_many` locked and loaded without PII, not yet handed out."""
        self._deferred = _Deferred()
        """What `save` kept and `flush` has not written yet."""
        self._defer = False
        """`defer_writes` was called: `save` keeps its rows until `flush`."""
        self._live: dict[str, Order] = {}
        """Orders loaded without PII for update and saved since the last `flush` (deferring):
        the next such `get` of one hands out the same aggregate, as its unwritten rows left it,
        instead of flushing, locking and loading it again. `flush` forgets them (after it,
        anyone may read and write those rows by other means); writing the kept rows before
        the lean load of another order (`_write_kept`) does not."""

    # -- writing ------------------------------------------------------------------------
    async def add(self, order: Order) -> None:
        await self.flush()
        await self.session.execute(customer_order.insert(), order_values(order, self.cipher))
        await self.session.execute(order_line.insert(), line_values(order))

    async def add_many(self, orders: Sequence[Order]) -> None:
        """New orders together: one statement for their `customer_order` rows, one for all
        their lines (each an executemany)."""
        await self.flush()
        if not orders:
            return
        await self.session.execute(
            customer_order.insert(), [order_values(o, self.cipher) for o in orders]
        )
        await self.session.execute(order_line.insert(), [v for o in orders for v in line_values(o)])

    async def external_taken(
        self, keys: Collection[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        """Which `(channel, shop_id or "", external_id)` keys are taken already (one query)."""
        await self.flush()
        if not keys:
            return set()
        c = customer_order.c
        rows = await self.session.execute(
            select(c.channel, c.shop_id, c.external_id).where(
                tuple_(c.channel, c.shop_id, c.external_id).in_(list(keys))
            )
        )
        return {(r.channel, r.shop_id, r.external_id) for r in rows}

    def defer_writes(self) -> None:
        """From now on `save` keeps what it would write, and `flush` writes it for every
        order saved since, one statement per table. This repository's reads flush first,
        and the unit of work flushes before it commits; SQL of anyone else's that reads the
        order tables in this transaction must `flush` before."""
        self._defer = True

    async def flush(self, timeline: Sequence[dict[str, Any]] = ()) -> None:
        """Write what `save` kept, and the `timeline` rows (`Timeline.take`) if given: one
        statement per table (an executemany for many rows); on PostgreSQL, where two or more
        tables have rows, one statement for all (`one_trip`: one round trip)."""
        self._live.clear()
        await self._write_kept(timeline)

    async def _write_kept(self, timeline: Sequence[dict[str, Any]] = ()) -> None:
        kept = self._deferred
        parts = [kept.orders, kept.lines, kept.allocations, kept.shipments, timeline]
        if not any(parts):
            return
        self._deferred = _Deferred()
        if self.dialect == "postgresql" and sum(1 for p in parts if p) > 1:
            orders, lines, allocations, shipments = (
                list(rows.values())
                for rows in (kept.orders, kept.lines, kept.allocations, kept.shipments)
            )
            await self.session.execute(
                one_trip.STATEMENT,
                one_trip.parameters(orders, lines, allocations, shipments, timeline),
            )
            return
        if kept.orders:
            await self.session.execute(_UPDATE_ORDER, list(kept.orders.values()))
        if kept.lines:
            await self.session.execute(_UPDATE_LINE, list(kept.lines.values()))
        new_allocations, upsert_shipments = _child_writes(self.dialect)
        if kept.allocations:
            await self.session.execute(new_allocations, list(kept.allocations.values()))
        if kept.shipments:
            await self.session.execute(upsert_shipments, list(kept.shipments.values()))
        if timeline:
            await insert_entries(self.session, timeline)

    async def save(self, order: Order) -> None:
        """Write back what the aggregate changed since it was loaded (`get(for_update=True)`):
        `customer_order` if its columns moved, the lines that moved (one executemany), the
        new allocations and the new or delivered shipments (one statement each). Never PII.
        With `defer_writes`, kept until `flush` (the latest row of each wins)."""
        before = self._loaded.get(order.id)
        self._keep(order.id, Changes.since(order, before))
        if not self._defer:
            await self.flush()
        elif before is not None and not before.pii:
            self._live[order.id] = order
        self._loaded[order.id] = Loaded.of(order, pii=before is None or before.pii)

    def _keep(self, order_id: str, changes: Changes) -> None:
        kept = self._deferred
        if changes.order is not None:
            kept.orders[order_id] = {
                **changes.order,
                "updated_at": datetime.now(UTC),
                "b_id": order_id,
            }
        for line in changes.lines:
            kept.lines[line["b_id"]] = line
        for row in changes.allocations:
            kept.allocations[(order_id, row["supplier_order_ref"])] = row
        for row in changes.shipments:
            kept.shipments[(order_id, row["tracking_number"])] = row

    async def save_address(self, order: Order) -> None:
        """Write the order's (changed) shipping address and phone."""
        await self.flush()
        loaded = self._loaded.get(order.id)
        if loaded is not None and not loaded.pii:
            raise ValueError(f"order {order.id} was loaded without its PII: not writing it")
        await self.session.execute(
            update(customer_order)
            .where(customer_order.c.id == order.id)
            .values(**address_values(order, self.cipher))
        )

    async def redact(self, email: str) -> int:
        """Erase name, e-mail, phone and street of every order of this customer (and their
        words in its returns and complaints)."""
        await self.flush()
        await redact_texts(self.session, self.cipher, email)  # while the e-mail index stands
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

    async def reencrypt_stale(self, limit: int) -> int:
        """Re-encrypt up to `limit` orders whose PII is not under the active key."""
        await self.flush()
        prefix = f"v1.{self.cipher.active_kid}.%"
        stale = or_(
            *(
                and_(customer_order.c[col].is_not(None), customer_order.c[col].not_like(prefix))
                for col in PII_COLUMNS
            )
        )
        rows = (
            await self.session.execute(
                select(customer_order.c.id, *(customer_order.c[c] for c in PII_COLUMNS))
                .where(stale)
                .limit(limit)
                .with_for_update()
            )
        ).all()
        for row in rows:
            await self.session.execute(
                update(customer_order)
                .where(customer_order.c.id == row.id)
                .values(**reencrypted(row, self.cipher))
            )
        return len(rows)

    # -- reading ------------------------------------------------------------------------
    async def get(
        self, order_id: str, *, for_update: bool = False, pii: bool = True
    ) -> Order | None:
        """The order; with `pii=False` its PII columns are neither read nor decrypted (name,
        e-mail, phone and street blank): what applying a supplier event needs."""
        return await self._one("id", {"order_id": order_id}, for_update, pii)

    async def lock_many(self, order_ids: Collection[str]) -> None:
        """Lock the orders, then load them without PII, in two statements for all of them
        (PostgreSQL: the locks in id order; SQLite's transaction holds the database), where
        a `get(for_update=True, pii=False)` of each took two. Each is handed out once, to
        the next such `get` of it in this transaction (after that, the aggregate `save`
        kept, until a `flush`): so call it before anything in the transaction has written
        those orders."""
        if not order_ids:
            return
        params: dict[str, Any] = {"order_ids": sorted(set(order_ids))}
        if self.dialect == "postgresql":
            params["order_ids"] = list(await self.session.scalars(loads.lock("ids"), params))
            if not params["order_ids"]:
                return
        rows = await self.session.execute(loads.load("ids", False), params)
        self._locked.update(loads.group(rows))

    async def contacts(
        self, order_ids: Collection[str], *, ship_to: bool = False
    ) -> list[CustomerContact]:
        """The customer contacts of the orders that exist among `order_ids` (with their
        ship-to addresses if `ship_to`), in one query."""
        await self.flush()
        if not order_ids:
            return []
        query = _CONTACTS[ship_to]
        rows = (await self.session.execute(query, {"p_ids": sorted(set(order_ids))})).all()
        return [contact_from_row(row, self.cipher, ship_to=ship_to) for row in rows]

    async def get_by_external(
        self, channel: str, external_id: str, shop_id: str | None, *, for_update: bool = False
    ) -> Order | None:
        """The order `shop_id` (None: the storefront or the default shop) knows as
        `external_id`: each shop's order numbers are its own."""
        key = {"channel": channel, "shop_id": shop_id or "", "external_id": external_id}
        return await self._one("external", key, for_update)

    async def list(
        self, flt: OrderFilter, limit: int, cursor: str | None
    ) -> tuple[list[Order], str | None]:
        """Newest first, `limit` at most, after `cursor`; the cursor of the next page or None."""
        await self.flush()
        conditions: list[ColumnElement[bool]] = []
        if flt.status:
            conditions.append(customer_order.c.status == flt.status)
        if flt.channel:
            conditions.append(customer_order.c.channel == flt.channel)
        if flt.created_from:
            conditions.append(customer_order.c.created_at >= flt.created_from)
        if flt.created_to:
            conditions.append(customer_order.c.created_at < flt.created_to)
        if flt.external_id:
            conditions.append(customer_order.c.external_id == flt.external_id)
        if flt.shop_id:
            conditions.append(customer_order.c.shop_id == flt.shop_id)
        if flt.delayed is not None:
            conditions.append(customer_order.c.delayed.is_(flt.delayed))
        if flt.waiting is not None:
            waits = (
                select(order_line.c.id)
                .where(
                    order_line.c.order_id == customer_order.c.id, order_line.c.waiting.is_not(None)
                )
                .exists()
            )
            conditions.append(waits if flt.waiting else ~waits)
        if flt.email_indexes is not None:
            conditions.append(customer_order.c.email_index.in_(flt.email_indexes))
        if cursor:
            created, last_id = decode_cursor(cursor)
            conditions.append(
                or_(
                    customer_order.c.created_at < created,
                    and_(customer_order.c.created_at == created, customer_order.c.id < last_id),
                )
            )
        query = select(customer_order)
        if conditions:
            query = query.where(*conditions)
        query = query.order_by(
            customer_order.c.created_at.desc(), customer_order.c.id.desc()
        ).limit(limit + 1)
        rows = (await self.session.execute(query)).all()
        page = rows[:limit]
        kids = loads.group(
            await self.session.execute(loads.children("ids"), {"order_ids": [r.id for r in page]})
            if page
            else []
        )
        orders = [loads.assemble(r, kids.get(r.id), self.cipher) for r in page]
        next_cursor = None
        if len(rows) > limit:
            last = orders[-1]
            next_cursor = encode_cursor(last.created_at, last.id)
        return orders, next_cursor

    async def _one(
        self, key: loads.Key, params: dict[str, Any], for_update: bool, pii: bool = True
    ) -> Order | None:
        """The order `key` names, in one round trip (two on PostgreSQL for update: the lock
        first, see `loads`); none when `lock_many` has it or this transaction saved it
        (`_live`)."""
        if for_update and not pii and key == "id":
            live = self._live.get(params["order_id"])
            if live is not None:
                return live
            kinds = self._locked.pop(params["order_id"], None)
            if kinds is not None:
                order = loads.assemble(kinds[loads.ORDER][0], kinds, None)
                self._loaded[order.id] = Loaded.of(order, pii=False)
                return order
            await self._write_kept()
        else:
            await self.flush()
        if for_update and self.dialect == "postgresql":
            order_id = (await self.session.execute(loads.lock(key), params)).scalar()
            if order_id is None:
                return None
            key, params = "id", {"order_id": order_id}
        rows = await self.session.execute(loads.load(key, pii), params)
        found = loads.orders(rows, self.cipher if pii else None)
        if not found:
            return None
        order = found[0]
        if for_update or not pii:  # what save() compares with; save_address() refuses lean
            self._loaded[order.id] = Loaded.of(order, pii=pii)
        return order

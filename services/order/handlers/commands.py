"""Order commands: place, cancel, hold, release, re-address, redact, housekeeping; one unit of
work each, domain results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError

from services.order.addresses import address_problems
from services.order.domain import Address, Order, PlaceOrder
from services.order.errors import (
    DuplicateExternalOrder,
    IdempotencyConflict,
    InvalidAddress,
    OrderNotFound,
)
from services.order.store import OrderUnitOfWork
from shared.events import EventData, OrderHeld, OrderPlaced, OrderReleased

R = TypeVar("R")


@dataclass(frozen=True)
class Idempotency:
    """An `Idempotency-Key` claim: per merchant `scope`, with the request's fingerprint.

    The first result is stored as `snapshot(order)` in the same transaction as the order,
    and a retry with the same key and body is answered with exactly that snapshot.
    """

    scope: str
    key: str
    request_hash: str
    snapshot: Callable[[Order], dict[str, Any]]


@dataclass(frozen=True)
class Placed:
    """An order was placed; `created` is False when it existed already (same external id)."""

    order: Order
    created: bool


@dataclass(frozen=True)
class Replayed:
    """A retry under an `Idempotency-Key`: the first result, as it was stored."""

    snapshot: dict[str, Any]


async def place_order(
    cmd: PlaceOrder, uow: OrderUnitOfWork, *, idempotency: Idempotency | None = None
) -> Placed | Replayed:
    """Create a storefront order once.

    - Same Idempotency-Key and body: `Replayed` with the first result, nothing created.
    - Same key, other body: `IdempotencyConflict`.
    - An order with the same channel + external_id (+ shop): `DuplicateExternalOrder`.
    """

    async def attempt() -> Placed | Replayed:
        # in memory: its first result is known before any write
        order = Order.place(cmd, holds=uow.intake.holds_for(cmd))
        async with uow:
            if idempotency is not None:
                # one statement reserves the key and stores the result; a concurrent twin
                # waits on the key's unique index and then finds this one
                earlier = await uow.idempotency.claim(
                    idempotency.scope,
                    idempotency.key,
                    idempotency.request_hash,
                    idempotency.snapshot(order),
                )
                if earlier is not None:
                    if earlier.request_hash != idempotency.request_hash:
                        raise IdempotencyConflict()
                    return Replayed(earlier.result)
            existing = await _existing(cmd, uow)
            if existing is not None:
                raise DuplicateExternalOrder(existing.id)
            await _add(order, uow)
        return Placed(order, created=True)

    return await _external_id_decides_races(cmd, attempt)


async def accept_order(cmd: PlaceOrder, uow: OrderUnitOfWork) -> Placed:
    """Create a marketplace order once: the existing order when its external id is known."""

    async def attempt() -> Placed:
        order = Order.place(cmd, holds=uow.intake.holds_for(cmd))
        async with uow:
            existing = await _existing(cmd, uow)
            if existing is not None:
                return Placed(existing, created=False)
            await _add(order, uow)
        return Placed(order, created=True)

    return await _external_id_decides_races(cmd, attempt)


async def _external_id_decides_races(cmd: PlaceOrder, attempt: Callable[[], Awaitable[R]]) -> R:
    try:
        return await attempt()
    except IntegrityError:
        # A concurrent request created the same external order first: answer as if
        # this one had arrived second (the unique constraint decided the race).
        if cmd.external_id is None:
            raise
        return await attempt()


async def _existing(cmd: PlaceOrder, uow: OrderUnitOfWork) -> Order | None:
    if cmd.external_id is None:
        return None
    return await uow.orders.get_by_external(cmd.channel, cmd.external_id, cmd.shop_id)


async def _add(order: Order, uow: OrderUnitOfWork) -> None:
    await uow.orders.add(order)
    await _record_events(order, uow)
    await uow.commit()


async def _record_events(order: Order, uow: OrderUnitOfWork) -> None:
    await record_changes(order, uow)


async def record_changes(order: Order, uow: OrderUnitOfWork) -> None:
    """The aggregate's new events to the outbox (via `emit`), them and its notes to the timeline."""
    for note in order.notes:
        await uow.timeline.record(order.id, note)
    order.notes.clear()
    for event in order.events:
        envelope = uow.emit(event, time=happened_at(event))
        await uow.timeline.add(envelope)
    order.events.clear()


def happened_at(event: EventData) -> datetime | None:
    """The envelope's time: when the aggregate says it happened, so the timeline reads in order."""
    if isinstance(event, OrderPlaced):
        return event.placed_at
    if isinstance(event, OrderHeld):
        return event.held_at
    if isinstance(event, OrderReleased):
        return event.released_at
    return None


async def hold_order(order_id: str, note: str, uow: OrderUnitOfWork) -> Order:
    """Hold by hand (`manual`): not routed until released; repeating it changes nothing."""
    async with uow:
        order = await _for_update(order_id, uow)
        if order.hold(note):
            await uow.orders.save(order)
            await record_changes(order, uow)
            await uow.commit()
    return order


async def release_order(order_id: str, uow: OrderUnitOfWork) -> Order:
    """Lift the `manual` and `high_value` holds (`NotOnHold`, `AddressFixRequired`)."""
    async with uow:
        order = await _for_update(order_id, uow)
        order.release()
        await uow.orders.save(order)
        await record_changes(order, uow)
        await uow.commit()
    return order


async def change_address(
    order_id: str,
    address: Address,
    phone: str | None,
    uow: OrderUnitOfWork,
    *,
    name: str | None = None,
) -> Order:
    """Ship to a new address (and recipient `name`): `InvalidAddress` (nothing changed) unless
    the country's rules accept it and the order has a recipient; a valid one lifts the
    `address_invalid` hold."""
    problems = address_problems(address, phone)
    if problems:
        raise InvalidAddress([(p.field, p.rule) for p in problems])
    async with uow:
        order = await _for_update(order_id, uow)
        order.change_address(address, phone, name=name)
        await uow.orders.save(order)
        await uow.orders.save_address(order)
        await record_changes(order, uow)
        await uow.commit()
    return order


async def _for_update(order_id: str, uow: OrderUnitOfWork) -> Order:
    order = await uow.orders.get(order_id, for_update=True)
    if order is None:
        raise OrderNotFound(order_id)
    return order


async def cancel_order(order_id: str, reason: str, uow: OrderUnitOfWork) -> Order:
    """Cancel while nothing has shipped (`CannotCancel` after); repeating it changes nothing."""
    async with uow:
        order = await uow.orders.get(order_id, for_update=True)
        if order is None:
            raise OrderNotFound(order_id)
        if order.cancel(reason):
            await uow.orders.save(order)
            await _record_events(order, uow)
            await uow.commit()
    return order


async def cancel_external(
    channel: str, shop_id: str | None, external_id: str, reason: str, uow: OrderUnitOfWork
) -> Order | None:
    """Cancel the order the shop knows as `external_id`; None if there is none."""
    async with uow:
        order = await uow.orders.get_by_external(channel, external_id, shop_id, for_update=True)
        if order is None:
            return None
        if order.cancel(reason):
            await uow.orders.save(order)
            await _record_events(order, uow)
            await uow.commit()
    return order


async def redact_customer(email: str, uow: OrderUnitOfWork) -> int:
    """Erase a customer's PII from every order of theirs; how many orders were redacted."""
    async with uow:
        count = await uow.orders.redact(email)
        await uow.commit()
    return count


async def purge_expired(uow: OrderUnitOfWork) -> int:
    """Forget idempotency keys past their retention; how many were forgotten."""
    async with uow:
        purged = await uow.idempotency.purge()
        await uow.commit()
    return purged


async def rotate_pii(uow: OrderUnitOfWork, batch: int = 500) -> int:
    """Re-encrypt every order's PII under the active key; returns how many orders changed."""
    total = 0
    while True:
        async with uow:
            done = await uow.orders.reencrypt_stale(batch)
            await uow.commit()
        total += done
        if done < batch:
            return total

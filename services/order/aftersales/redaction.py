"""Erasing a customer's words from their after-sales records (part of customer redaction)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.aftersales.tables import complaint, order_return
from services.order.pii import PiiCipher
from services.order.tables import customer_order

REDACTED = "[redacted]"


async def redact_texts(session: AsyncSession, cipher: PiiCipher, email: str) -> None:
    """Erase the customer's words from the after-sales records of their orders (a return's
    note, a complaint's summary, responses and resolution); ids, statuses and money stay."""
    orders = select(customer_order.c.id).where(
        customer_order.c.email_index.in_(cipher.email_indexes(email))
    )
    await session.execute(
        update(order_return).where(order_return.c.order_id.in_(orders)).values(note=None)
    )
    rows = await session.execute(
        select(complaint.c.id, complaint.c.responses).where(complaint.c.order_id.in_(orders))
    )
    for row in rows.all():
        await session.execute(
            update(complaint)
            .where(complaint.c.id == row.id)
            .values(
                summary=cipher.encrypt(REDACTED, "complaint.summary"),
                resolution=None,
                responses=[
                    {**r, "message": cipher.encrypt(REDACTED, "complaint.message")}
                    for r in row.responses
                ],
            )
        )

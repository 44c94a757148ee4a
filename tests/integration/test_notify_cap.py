"""The per-customer daily cap at the repository, on SQLite and PostgreSQL: one statement
checks and reserves (`Notifications.reserve_under_cap`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.notify.domain import Status
from services.notify.store import NotifyUnitOfWork
from shared.db import create_engine, migrate_async, session_factory

MIGRATIONS = Path(__file__).parents[2] / "services" / "notify" / "migrations"
CUSTOMER = "recipient-hash-of-ann"


async def test_a_full_cap_holds_back_a_new_notice_but_not_the_other_channel_of_a_sent_one(
    database_url,
):
    url = await database_url("notify")
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)
    uows = lambda: NotifyUnitOfWork(session_factory(engine))  # noqa: E731
    now = datetime.now(UTC)
    since = now - timedelta(days=1)
    try:
        async with uows() as uow:
            for key, channel in (("a", "email"), ("a", "sms"), ("b", "email"), ("c", "email")):
                await uow.notifications.queue(
                    dedupe_key=key,
                    channel=channel,
                    target="customer",
                    recipient_kind="customer",
                    order_id="o-1",
                    kind="shipment_dispatched",
                    reason=key,
                    template="",
                    details={},
                    not_before=now - timedelta(seconds=1),
                )
            await uow.commit()
        async with uows() as uow:
            claimed = await uow.notifications.claim_due(datetime.now(UTC), timedelta(minutes=5), 9)
            await uow.commit()
        send = {(s.dedupe_key, s.channel): s for s in claimed}

        async def reserve(key: str, channel: str, cap: int, *, attempts: int = 0) -> bool:
            s = send[key, channel]
            if attempts:
                s = replace(s, attempts=attempts)
            async with uows() as uow:
                reserved = await uow.notifications.reserve_under_cap(s, CUSTOMER, since, cap)
                await uow.commit()
            return reserved

        async def sent(key: str, channel: str) -> None:
            async with uows() as uow:
                assert await uow.notifications.finish(
                    send[key, channel], Status.SENT, recipient_hash=CUSTOMER
                )
                await uow.commit()

        assert await reserve("a", "email", cap=2)
        await sent("a", "email")
        assert await reserve("b", "email", cap=2)
        await sent("b", "email")
        # two notices today: a third is held back, whichever its channel
        assert not await reserve("c", "email", cap=2)
        # notice a's text message is the same notice as its e-mail: it goes, even with the
        # cap now at 1 (b alone fills it)
        assert await reserve("a", "sms", cap=1)
        # a send whose lease passed to another claim (its attempt number) reserves nothing
        assert not await reserve("c", "email", cap=9, attempts=7)
        assert await reserve("c", "email", cap=9)
    finally:
        await engine.dispose()

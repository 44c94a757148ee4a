"""An infrastructure outage never dead-letters: only a message's own failures use attempts."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy.exc

from shared.events import new_envelope
from shared.failures import is_infrastructure_failure
from tests.unit.test_platform import make_bus, placed, publish


def _outage(kind: str) -> BaseException:
    if kind == "operational":
        return sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "x"))
    if kind == "interface":
        return sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection is closed"))
    if kind == "asyncpg":
        return asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
    if kind == "shutdown":
        return asyncpg.exceptions.AdminShutdownError("terminating connection")
    return ConnectionRefusedError(111, "Connect call failed")


@pytest.mark.parametrize("kind", ["operational", "interface", "asyncpg", "shutdown", "oserror"])
async def test_an_outage_longer_than_every_attempt_is_waited_out_not_dead_lettered(kind):
    failures = 25  # far more than max_attempts

    async def handler(envelope, data, uow):
        nonlocal failures
        if failures:
            failures -= 1
            raise _outage(kind)
        uow.record(data.order_id)

    bus, store = make_bus(handler, max_attempts=2)
    await publish(bus, new_envelope(placed()).to_bytes())
    await bus.drain()
    assert failures == 0
    assert store["effects"] == {"ord_1"}
    assert bus.messages("order-placed.dlq") == []


async def test_the_messages_own_failures_still_dead_letter_after_an_outage():
    outcomes = iter([_outage("operational")] * 5 + [ValueError("bad sku")] * 3)

    async def handler(envelope, data, uow):
        raise next(outcomes)

    bus, _ = make_bus(handler, max_attempts=3)
    await publish(bus, new_envelope(placed()).to_bytes())
    await bus.drain()
    [letter] = bus.messages("order-placed.dlq")
    assert dict(letter.headers)["dlq.attempts"] == b"3"
    assert dict(letter.headers)["dlq.error_type"] == b"ValueError"


def test_bad_data_errors_are_not_outages():
    data_error = sqlalchemy.exc.DataError("INSERT", {}, ValueError("value too long"))
    integrity = sqlalchemy.exc.IntegrityError("INSERT", {}, ValueError("duplicate key"))
    assert not is_infrastructure_failure(data_error)
    assert not is_infrastructure_failure(integrity)
    assert not is_infrastructure_failure(ValueError("bad"))
    wrapped = RuntimeError("handler failed")
    wrapped.__cause__ = _outage("asyncpg")
    assert is_infrastructure_failure(wrapped)

"""The order service's domain errors: each one maps to a status and code, in one table."""

from __future__ import annotations

import pytest

from services.order import errors, marketplaces
from services.order.api import DOMAIN_ERRORS


def _subclasses(cls: type[Exception]) -> list[type[Exception]]:
    found: list[type[Exception]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _mapping(cls: type[Exception]) -> tuple[int, str] | None:
    for base in cls.__mro__:
        if base in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[base].status, DOMAIN_ERRORS[base].code
    return None


@pytest.mark.parametrize("cls", _subclasses(errors.OrderError), ids=lambda c: c.__name__)
def test_every_domain_error_has_a_status(cls: type[Exception]) -> None:
    assert _mapping(cls) is not None, f"{cls.__name__} is missing from api.DOMAIN_ERRORS"


def test_the_documented_codes() -> None:
    assert _mapping(errors.OrderNotFound) == (404, "not_found")
    assert _mapping(errors.CannotCancel) == (409, "already_shipped")
    assert _mapping(errors.IdempotencyConflict) == (409, "idempotency_key_reused")
    assert _mapping(errors.DuplicateExternalOrder) == (409, "duplicate_external_id")
    assert _mapping(errors.InvalidCursor) == (422, "validation_error")
    assert _mapping(marketplaces.MarketplacePayloadError) == (422, "validation_error")
    assert errors.OrderNotFound("ord_1").details == {"order_id": "ord_1"}
    assert errors.DuplicateExternalOrder("ord_2").details == {"order_id": "ord_2"}

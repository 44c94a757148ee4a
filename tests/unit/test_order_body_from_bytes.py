"""`POST /v1/orders` validates from the body's bytes: it must accept exactly what FastAPI's
dict path accepts, as the same order (the Idempotency-Key fingerprint included)."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from services.order.api import order_fingerprint
from services.order.schemas import OrderIn
from tests.integration.test_order_api import BAD_INPUTS, with_change
from tests.support.data import order_body

PRICES = ["12.50", "12.5", 12.5, 100.0, 100, "100", 1e2, 4.10, 0.07, 0.3, 999999.99, "0"]
RAW_VARIANTS = [
    b'{"a": 1',  # not JSON
    b"",
    b"null",
    b"[]",
    b'"order"',
    b"NaN",
]


def _dict_path(raw: bytes) -> OrderIn | None:
    try:
        return OrderIn.model_validate(json.loads(raw))
    except (ValidationError, ValueError):
        return None


def _bytes_path(raw: bytes) -> OrderIn | None:
    try:
        return OrderIn.model_validate_json(raw)
    except ValidationError:
        return None


def _fingerprint(body: OrderIn) -> str:
    """The fingerprint as keys have always been stored (a change would 409 their retries)."""
    return hashlib.sha256(
        json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()


BODIES = (
    [json.dumps(with_change(p, v)).encode() for p, v, _ in BAD_INPUTS]
    + [json.dumps(order_body(price=p)).encode() for p in PRICES]  # type: ignore[arg-type]
    + [json.dumps(order_body(external_id="web-1", quantity=3)).encode()]
    + [json.dumps(order_body(), ensure_ascii=False).replace("Ann Lee", "李安").encode()]
    + [json.dumps(order_body()).replace('"quantity": 2', '"quantity": 2.0').encode()]
    + [json.dumps(order_body()).replace('"quantity": 2', '"quantity": true').encode()]
    + [json.dumps(order_body()).replace('"12.50"', "1e400").encode()]
    + RAW_VARIANTS
)


@pytest.mark.parametrize("raw", BODIES, ids=[r[:60].decode(errors="replace") for r in BODIES])
def test_bytes_accept_what_the_dict_path_accepts_as_the_same_order(raw: bytes) -> None:
    from_bytes, from_dict = _bytes_path(raw), _dict_path(raw)
    if from_bytes is None:
        return  # refused from bytes: FastAPI's own path answers (its 422, as before)
    assert from_dict is not None, "accepted from bytes, refused by FastAPI's path"
    assert _fingerprint(from_bytes) == _fingerprint(from_dict)
    assert order_fingerprint(from_bytes) == order_fingerprint(from_dict)
    assert from_bytes.to_command() == from_dict.to_command()


def test_the_fingerprint_is_the_one_keys_were_always_stored_with() -> None:
    """Bodies spelled differently that validate to the same order share one fingerprint,
    the very hash keys stored by every earlier release hold."""
    respelled = [
        json.dumps(dict(reversed(order_body().items())), indent=1).encode(),
        json.dumps(order_body(price="12.5")).encode(),
        json.dumps(order_body(price=12.5)).encode(),
    ]
    valid = [b for raw in BODIES + respelled if (b := _bytes_path(raw)) is not None]
    assert len(valid) > 10
    for body in valid:
        assert order_fingerprint(body) == _fingerprint(body)
    assert order_fingerprint(valid[-2]) == order_fingerprint(valid[-1])


def test_every_bad_input_is_refused_from_bytes_too() -> None:
    for path, value, _ in BAD_INPUTS:
        assert _bytes_path(json.dumps(with_change(path, value)).encode()) is None, path

"""Shipping addresses and phones against the destination country's rules (maintained data)."""

from __future__ import annotations

import pytest

from services.order.addresses import address_problems
from services.order.domain import Address


def problems(phone: str | None = None, **fields: str) -> list[str]:
    values = {"line1": "1 Main St", "city": "Town", "postal_code": "", "country": "US"} | fields
    return [str(p) for p in address_problems(Address(**values), phone)]


@pytest.mark.parametrize(
    ("fields", "phone"),
    [
        ({"region": "NY", "postal_code": "10001"}, "+1 212 555 0123"),
        ({"region": "Colorado", "postal_code": "80202-1234"}, None),
        ({"country": "CN", "region": "广东省", "city": "广州市", "postal_code": "510620"}, None),
        ({"country": "CN", "region": "Guangdong", "city": "Guangzhou", "postal_code": "510620"},
         "+86 138 0013 8000"),
        ({"country": "DE", "city": "Berlin", "postal_code": "10435"}, "+49 30 12345678"),
        ({"country": "GB", "city": "London", "postal_code": "SW1A 1AA"}, None),
        ({"country": "HK", "region": "Kowloon", "city": "Mong Kok"}, None),  # no postal codes
    ],
)  # fmt: skip
def test_real_addresses_pass(fields: dict[str, str], phone: str | None) -> None:
    assert problems(phone, **fields) == []


def test_each_problem_names_the_field_and_the_rule() -> None:
    assert problems(postal_code="10001") == ["shipping_address.region: required"]
    assert problems(region="IL", postal_code="10001") == ["shipping_address.postal_code: format"]
    assert problems(country="DE", city="Berlin", postal_code="1043") == [
        "shipping_address.postal_code: format"
    ]
    assert problems(country="GB", city="London", postal_code="12345") == [
        "shipping_address.postal_code: format"
    ]
    assert problems("12", country="DE", city="Berlin", postal_code="10435") == [
        "phone: not a possible phone number for the country"
    ]

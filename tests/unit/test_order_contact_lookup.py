"""The contact lookup's input rules and answer shape, without a database."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.order.domain import Contact
from services.order.repository import CustomerContact
from services.order.schemas import CONTACT_LOOKUP_MAX, ContactLookupIn, render_contacts


@pytest.mark.parametrize(
    ("ids", "where"),
    [
        ([], ("order_ids",)),
        ([f"ord_{i}" for i in range(CONTACT_LOOKUP_MAX + 1)], ("order_ids",)),
        (["ord_1", "ord 2"], ("order_ids", 1)),
        (["", "ord_2"], ("order_ids", 0)),
        (["ord_1", "a/b"], ("order_ids", 1)),
    ],
)
def test_bad_ids_name_their_place(ids, where):
    with pytest.raises(ValidationError) as caught:
        ContactLookupIn(order_ids=ids)
    assert [e["loc"] for e in caught.value.errors()] == [where]


def test_the_most_ids_allowed_pass():
    ids = [f"ord_{i:032x}" for i in range(CONTACT_LOOKUP_MAX)]
    assert ContactLookupIn(order_ids=ids).order_ids == ids


def test_the_answer_keeps_the_asked_order_once_and_lists_the_unknown():
    ann = CustomerContact("ord_a", Contact("Ann", "ann@example.com", "+1 212", "en"), False)
    gone = CustomerContact("ord_g", Contact("[redacted]", "[redacted]", None, "zh-CN"), True)
    answer = render_contacts(["ord_g", "ord_x", "ord_a", "ord_g"], [ann, gone])
    assert answer == {
        "items": [
            {
                "order_id": "ord_g",
                "name": None,
                "email": None,
                "phone": None,
                "locale": "zh-CN",
                "redacted": True,
            },
            {
                "order_id": "ord_a",
                "name": "Ann",
                "email": "ann@example.com",
                "phone": "+1 212",
                "locale": "en",
                "redacted": False,
            },
        ],
        "unknown": ["ord_x"],
    }

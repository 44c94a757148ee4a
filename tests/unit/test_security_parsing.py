"""Callbacks and CSV imports past the parsers' limits are refused as bad input, not a 500."""

from __future__ import annotations

import csv

import pytest

from services.supplier.csv_import import COLUMNS, parse_offers
from services.supplier.schemas import CallbackIn
from services.supplier.webhooks import _parse
from shared.http import Unprocessable, check_api_key, check_bearer, secrets_equal


def test_a_csv_field_over_the_csv_modules_limit_is_a_problem_not_a_crash():
    huge = "x" * (csv.field_size_limit() + 10)
    raw = (",".join(COLUMNS) + "\n" + f"SKU-1,sup_a,{huge},1.00,EUR,1,24\n").encode()
    parsed = parse_offers(raw, {"sup_a"})
    assert parsed.offers == []
    assert parsed.problems and "field larger than field limit" in parsed.summary
    assert "nothing imported" in parsed.summary


def test_a_callback_nested_past_the_json_parser_is_unprocessable():
    with pytest.raises(Unprocessable, match="nested too deeply"):
        _parse(CallbackIn, b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("presented", ["ключ", "clé-🔑", "\udcff"])
def test_non_ascii_credentials_compare_as_wrong_ones(presented):
    assert not secrets_equal(presented, "dev-api-key")
    assert secrets_equal("ключ", "ключ")
    with pytest.raises(Exception, match="X-API-Key"):
        check_api_key(presented, frozenset({"dev-api-key"}))
    with pytest.raises(Exception, match="service token"):
        check_bearer(f"Bearer {presented}", "dev-service-token")

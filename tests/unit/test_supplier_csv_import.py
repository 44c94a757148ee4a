"""Offer files parsed without I/O: offers, or every bad row's line and column."""

from __future__ import annotations

from decimal import Decimal

from services.supplier.csv_import import CsvProblem, parse_offers

HEADER = "sku,supplier_id,supplier_sku,unit_cost,currency,stock,lead_time_hours\n"
KNOWN = {"sup_a", "sup_b"}


def parse(text: str) -> tuple[list[tuple[str, str, Decimal, int]], list[tuple[int, str | None]]]:
    parsed = parse_offers(text.encode(), KNOWN)
    return (
        [(o.supplier_id, o.sku, o.unit_cost, o.stock) for o in parsed.offers],
        [(p.line, p.column) for p in parsed.problems],
    )


def test_a_good_file_gives_its_offers_with_a_bom_and_padded_cells() -> None:
    text = "\ufeff" + HEADER + "MUG, sup_a ,S-MUG,3.50,USD,10,24\nMUG,sup_b,B-MUG,4,USD,0,48\n"
    assert parse(text) == (
        [("sup_a", "MUG", Decimal("3.50"), 10), ("sup_b", "MUG", Decimal("4"), 0)],
        [],
    )


def test_every_bad_row_is_named_by_line_and_column_and_nothing_is_kept() -> None:
    text = HEADER + (
        "MUG,sup_a,S-MUG,3.50,USD,10,24\n"
        "TEA,sup_a,S-TEA,abc,USD,10,24\n"
        "CUP,sup_nobody,S-CUP,1.00,USD,10,24\n"
        "BOWL,sup_a,S-BOWL,1.00,USD,-4,24\n"
        "MUG,sup_a,S-MUG,3.50,USD,10,24\n"
        "PEN,sup_a,S-PEN,1.123456,USD,1,1\n"
        "CAP,sup_a,S-CAP,1,USD,1,1,extra\n"
    )
    parsed = parse_offers(text.encode(), KNOWN)
    assert parsed.offers == []
    assert [(p.line, p.column) for p in parsed.problems] == [
        (3, "unit_cost"),
        (4, "supplier_id"),
        (5, "stock"),
        (6, "sku"),
        (7, "unit_cost"),
        (8, None),
    ]
    assert parsed.problems[3].reason == "duplicate of line 2"
    assert parsed.summary.startswith("line 3, column unit_cost: ")
    assert parsed.summary.endswith("; nothing imported")


def test_file_level_problems() -> None:
    not_utf8 = parse_offers(b"\xff\xfe\x00", KNOWN)
    assert not_utf8.problems == [CsvProblem(0, None, "not UTF-8")]
    wrong_header = parse_offers(b"sku,cost\nA,1\n", KNOWN)
    assert [(p.line, p.column) for p in wrong_header.problems] == [(1, None)]
    assert wrong_header.summary.startswith("header must be sku,supplier_id,")
    empty = parse_offers(HEADER.encode(), KNOWN)
    assert empty.problems == [CsvProblem(2, None, "no rows")]
    assert empty.problems[0].as_detail() == {"line": 2, "column": None, "reason": "no rows"}

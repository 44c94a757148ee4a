"""Offer files (CSV) parsed and checked row by row, without I/O.

The file is `sku,supplier_id,supplier_sku,unit_cost,currency,stock,lead_time_hours`
(UTF-8, an optional BOM). Every row is checked and every problem reported with its line
(the header is line 1) and column; a file with any problem imports nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from services.supplier.domain import Offer, cost_precision_error
from services.supplier.schemas import OfferIn

COLUMNS = [
    "sku",
    "supplier_id",
    "supplier_sku",
    "unit_cost",
    "currency",
    "stock",
    "lead_time_hours",
]


@dataclass(frozen=True)
class CsvProblem:
    line: int  # 0: the file as a whole
    column: str | None
    reason: str

    def as_detail(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "reason": self.reason}


@dataclass
class ParsedCsv:
    offers: list[Offer] = field(default_factory=list)
    problems: list[CsvProblem] = field(default_factory=list)
    summary: str = ""
    """One sentence on what is wrong (empty when nothing is)."""


def parse_offers(raw: bytes, known_suppliers: Container[str]) -> ParsedCsv:
    """The file's offers, or the problems of every bad row (and no offers)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return ParsedCsv(
            problems=[CsvProblem(0, None, "not UTF-8")], summary="the file is not UTF-8"
        )
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _parse_rows(reader, known_suppliers)
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        return ParsedCsv(
            problems=[CsvProblem(reader.line_num, None, str(exc))],
            summary=f"line {reader.line_num}: {exc}; nothing imported",
        )


def _parse_rows(reader: csv.DictReader[str], known_suppliers: Container[str]) -> ParsedCsv:
    header = [h.strip() for h in (reader.fieldnames or [])]
    if header != COLUMNS:
        expected = ",".join(COLUMNS)
        return ParsedCsv(
            problems=[CsvProblem(1, None, f"expected header {expected}, got {','.join(header)}")],
            summary=f"header must be {expected}",
        )
    parsed = ParsedCsv()
    seen: dict[tuple[str, str], int] = {}
    for number, record in enumerate(reader, start=2):
        offer = _row(number, record, known_suppliers, parsed.problems)
        if offer is None:
            continue
        key = (offer.supplier_id, offer.sku)
        if key in seen:
            parsed.problems.append(CsvProblem(number, "sku", f"duplicate of line {seen[key]}"))
        seen.setdefault(key, number)
        parsed.offers.append(offer)
    if parsed.problems:
        first = parsed.problems[0]
        parsed.offers = []
        parsed.summary = (
            f"line {first.line}, column {first.column}: {first.reason}; nothing imported"
        )
    elif not parsed.offers:
        parsed.problems = [CsvProblem(2, None, "no rows")]
        parsed.summary = "the file has no rows"
    return parsed


def _row(
    number: int,
    record: dict[str | Any, str | Any],
    known_suppliers: Container[str],
    problems: list[CsvProblem],
) -> Offer | None:
    """One row's offer, its problems appended to `problems`."""
    if None in record:
        problems.append(CsvProblem(number, None, "more cells than columns"))
        return None
    cells = {str(k).strip(): str(v or "").strip() for k, v in record.items()}
    supplier_id = cells["supplier_id"]
    if supplier_id not in known_suppliers:
        problems.append(CsvProblem(number, "supplier_id", f"unknown supplier {supplier_id!r}"))
    try:
        item = OfferIn.model_validate({k: v for k, v in cells.items() if k != "supplier_id"})
    except ValidationError as exc:
        problems += [CsvProblem(number, str(e["loc"][0]), e["msg"]) for e in exc.errors()]
        return None
    offer = item.to_offer(supplier_id)
    if err := cost_precision_error(offer):
        problems.append(CsvProblem(number, "unit_cost", err))
    return offer

"""KPI rollups: deltas applied batch by batch, in any order and repeated, add up to the
rollups of the final facts; histogram percentiles stay within the stated error."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics import rollup, rollup_report
from services.metrics.handlers import fact_rows
from services.metrics.rollup_repository import FACT_KEYS, _new_by_order
from services.metrics.rows import Rows
from tests.support.metrics_streams import random_history

Store = dict[str, dict[str, list[Any]]]


def _apply(facts: Store, rollups: dict[rollup.RollupRow, list[int]], batch: list[Any]) -> bool:
    """One consumer batch in memory, as `RollupRepository.apply` then the fact insert do it
    (the stored facts handed over only for the tables the changed parts read); True if it
    changed any rollup."""
    rows: Rows = defaultdict(list)
    for envelope in batch:
        fact_rows(envelope, envelope.payload(), rows)
    new = _new_by_order(rows)
    _, reads = rollup.parts_reading({table for order in new.values() for table in order})
    existing = {
        o: {table: r for table, r in facts.get(o, {}).items() if table in reads} for o in new
    }
    change = rollup.batch_delta(existing, new, FACT_KEYS)
    for order_id, order_rows in new.items():
        facts[order_id] = rollup.merge_facts(facts.get(order_id, {}), order_rows, FACT_KEYS)
    for row, (value, amount) in rollup.rollup_rows(change).items():
        got = rollups.setdefault(row, [0, 0])
        got[0] += value
        got[1] += amount
    return bool(change)


def _nonzero(rows: dict[rollup.RollupRow, list[int]]) -> dict[rollup.RollupRow, list[int]]:
    return {k: v for k, v in rows.items() if v[0] or v[1]}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    orders=st.integers(1, 12),
    batch=st.integers(1, 25),
    order_seed=st.integers(0, 2**32),
)
def test_deltas_in_any_order_and_batching_add_up_to_the_final_facts(
    seed: int, orders: int, batch: int, order_seed: int
) -> None:
    events = random_history(random.Random(seed), orders)
    random.Random(order_seed).shuffle(events)
    facts: Store = {}
    rollups: dict[rollup.RollupRow, list[int]] = {}
    for start in range(0, len(events), batch):
        _apply(facts, rollups, events[start : start + batch])
    cells: rollup.Contribution = {}
    for order in facts.values():
        for cell, (value, amount) in rollup.contribution(order).items():
            got = cells.setdefault(cell, [0, 0])
            got[0] += value
            got[1] += amount
    assert _nonzero(rollups) == _nonzero(rollup.rollup_rows(cells))
    # every event delivered again, in one batch or one by one: nothing changes
    assert not _apply(facts, rollups, events)
    assert not any(_apply(facts, rollups, [e]) for e in events[:10])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(10**9), 10**10), min_size=1, max_size=300))
def test_histogram_percentiles_are_within_the_stated_error(samples: list[int]) -> None:
    sums: dict[tuple[str, str], list[int]] = {}
    for ms in samples:
        got = sums.setdefault(("latency", str(rollup.bin_of(ms))), [0, 0])
        got[0] += 1
        got[1] += ms
    got_pcts = rollup_report.percentiles(sums, "latency")
    assert got_pcts["count"] == len(samples)
    ordered = sorted(samples)
    for q in (50, 95):
        exact = ordered[max(1, math.ceil(Fraction(q, 100) * len(ordered))) - 1] / 1000
        reported = got_pcts[f"p{q}"]
        assert abs(reported - exact) <= rollup.PERCENTILE_ERROR * abs(exact) + 0.001


def test_equal_samples_give_exact_percentiles() -> None:
    sums = {("cycle", str(rollup.bin_of(600_000))): [3, 1_800_000]}
    assert rollup_report.percentiles(sums, "cycle") == {"p50": 600.0, "p95": 600.0, "count": 3}


def test_an_item_reads_its_cells_by_metric() -> None:
    sums = {
        ("orders", ""): [3, 0],
        ("orders_ccy", "USD"): [3, 0],
        ("gmv", "USD"): [30_000_000, 0],
        ("confirmed_orders", ""): [2, 0],
        ("failed_orders", ""): [1, 0],
        ("latency", str(rollup.bin_of(1_000))): [2, 2_000],
        ("delayed_by", "late"): [1, 0],
        ("due", ""): [4, 0],
        ("delayed", ""): [1, 0],
    }
    cells = rollup_report.by_metric(sums)
    got = rollup_report.item("all", cells, False)
    assert got["orders"] == 3
    assert got["gmv"] == {"USD": "30.00"} and got["aov"] == {"USD": "10.00"}
    assert got["confirmation_rate"] == round(2 / 3, 6)
    assert got["confirmation_latency_s"] == {"p50": 1.0, "p95": 1.0, "count": 2}
    assert got["cycle_time_s"] == {"p50": None, "p95": None, "count": 0}
    assert got["delay_rate_by_reason"] == {"late": 0.25}
    assert got["notices"] == [] and got["cancellations"] == 0
    # the bins the query found give the same percentiles as every bin
    found = {"latency@count": [("", 2, 0)], "latency@p50": [("", 2, 2_000)]}
    found["latency@p95"] = found["latency@p50"]
    same = rollup_report.item("all", {**cells, **found}, False)
    assert same == got
    by_supplier = rollup_report.item("s1", cells, True)
    assert by_supplier["orders"] == 0 and by_supplier["cancellations"] is None
    assert rollup_report.items({"x": {"orders": [("", 0, 0)]}}, False) == []

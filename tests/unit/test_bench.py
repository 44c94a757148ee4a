"""The benchmark harness and scenarios: every module imports, the statistics and parsing hold."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pkgutil
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

import bench.harness
import bench.scenarios
from bench.harness import cli, profile, report
from bench.harness.generator import ProcResult, build_request, order_body
from bench.harness.load import merge
from bench.harness.procs import log_summary
from bench.harness.stats import fmt_ms, p50_p99, percentile, rounded, summary, timeline
from bench.scenarios import SCENARIOS
from bench.scenarios._stack_report import cost_table

pytestmark = pytest.mark.unit

MODULES = sorted(
    m.name
    for pkg in (bench.harness, bench.scenarios)
    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".")
)


@pytest.mark.parametrize("name", MODULES)
def test_every_harness_and_scenario_module_imports(name: str) -> None:
    module = importlib.import_module(name)
    assert (module.__doc__ or "").strip(), f"{name} opens without a docstring"


def test_every_scenario_module_is_offered_by_the_cli() -> None:
    public = {n.rsplit(".", 1)[1] for n in MODULES if n.startswith("bench.scenarios.")}
    assert set(SCENARIOS) == {n for n in public if not n.startswith("_")}
    assert set(SCENARIOS) >= {"pipeline", "intake", "routing", "notify", "metrics", "stack"}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_help_of_every_scenario(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parser(SCENARIOS).parse_args([name, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert f"python -m bench {name}" in text
    assert "--results FILE" in text and "--json" in text


def test_scenario_defaults_parse() -> None:
    ap = cli.parser(SCENARIOS)
    intake = ap.parse_args(["intake", "--rates", "10,20.5", "--backends", "sqlite"])
    assert intake.rates == [10.0, 20.5] and intake.backends == ["sqlite"]
    routing = ap.parse_args(["routing"])
    assert routing.rates == [100.0, 200.0] and routing.timeout == 10.0
    assert ap.parse_args(["notify", "--rates", ""]).rates == []
    assert ap.parse_args(["stack", "--no-baselines"]).baselines is False


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.backends("sqlite,oracle")
    assert cli.backends(" postgresql , sqlite ") == ["postgresql", "sqlite"]
    with pytest.raises(argparse.ArgumentTypeError):
        cli.floats("10,fast")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(3).shuffle(values)
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert percentile([], 50) is None


def test_failures_count_as_slowest() -> None:
    values = [1.0] * 98 + [math.inf, math.inf]
    assert percentile(values, 50) == 1.0
    assert percentile(values, 99) == math.inf
    assert fmt_ms(percentile(values, 99), 5.0) == ">5000"
    assert fmt_ms(math.inf, 60.0, limit_in_s=True) == ">60s"


def test_summaries_and_formatting() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert summary(values) == {"p50": 20.0, "p90": 40.0, "p99": 40.0, "max": 40.0}
    assert p50_p99(values) == {"p50": 20.0, "p99": 40.0}
    assert summary([]) == {"p50": None, "p90": None, "p99": None, "max": None}
    assert [fmt_ms(v) for v in (None, 1.234, 1234.5)] == ["-", "1.2", "1234"]
    assert timeline([100.1, 100.2, 102.5], 100.0) == "2 0 1"
    assert rounded({"a": 1.23456, "b": [math.inf, 2], 3: (0.5,)}) == {
        "a": 1.23,
        "b": [None, 2],
        "3": [0.5],
    }


def _proc(latencies: list[float], statuses: dict[int, int], errors: dict[str, int]) -> ProcResult:
    return ProcResult(
        scheduled=len(latencies) + sum(errors.values()),
        sent_in_window=len(latencies),
        latencies=latencies,
        statuses=statuses,
        errors=errors,
        late=[0.001, 0.002],
        wait_ms=[0.0],
        last_ok=11.0,
        max_open=4,
        cpu_s=0.5,
        ended=12.0,
        placed={},
        retry_after={503: 1},
        by_second={(0, 201): len(latencies)},
    )


def test_generator_processes_merge_with_failures_as_slowest() -> None:
    a = _proc([0.010] * 9, {201: 9}, {})
    b = _proc([0.020] * 9, {201: 9, 503: 1}, {"timeout": 1, "connect": 2})
    result = merge([a, b], rate=2.0, duration=10.0, start=1.0, timeout=5.0, opened=8)
    assert result.ok == 18 and result.failed == 1
    assert result.statuses == {201: 18, 503: 1}
    assert result.p50_ms == pytest.approx(20.0) and result.max_ms == math.inf  # 10th of 19
    assert result.ok_per_s == pytest.approx(18 / 10.0)
    assert result.retry_after == {503: 2} and result.by_second == {(0, 201): 18}
    assert result.late_max_ms == pytest.approx(2.0)
    assert "placed" not in result.figures()


def test_generated_orders_are_valid_requests() -> None:
    body = order_body(random.Random(1), 7)
    assert 1 <= len(body["lines"]) <= 3
    assert len({ln["sku"] for ln in body["lines"]}) == len(body["lines"])
    raw = build_request("h:1", "/v1/orders", "k", "run-7", body)
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/orders HTTP/1.1")
    assert b"Idempotency-Key: run-7" in head
    assert f"Content-Length: {len(payload)}".encode() in head


def test_profile_summary_groups_samples(tmp_path: Path) -> None:
    stacks = tmp_path / "worker.folded"
    stacks.write_text(
        "main (app.py:1);relay (shared/outbox.py:9) 3\n"
        "main (app.py:1);execute (sqlalchemy/engine/base.py:5);fetch (asyncpg/proto.py:1) 1\n"
        "_worker (concurrent/futures/thread.py:81) 5\n"
    )
    rules: profile.Rules = (("outbox relay", ("shared/outbox.py",)),)
    lines = profile.summarise(stacks, rules)
    text = "\n".join(lines)
    assert "4 samples" in lines[0] and "5 more of idle thread-pool workers" in text
    assert " 75.0%  outbox relay" in text
    assert " 25.0%  db, caller hidden" in text and "db: asyncpg driver" in text


def test_log_summary_counts_warnings(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text(
        '{"level": "warning", "message": "callback shed"}\n'
        '{"level": "INFO", "message": "fine"}\n'
        '{"level": "WARNING", "message": "callback shed"}\n'
        "ERROR: plain text from uvicorn\n"
    )
    assert log_summary(log) == [
        "     2 x WARNING callback shed ",
        "     1 x ERROR: plain text from uvicorn",
    ]


def test_row_flags_name_what_went_wrong() -> None:
    quiet = report.flags(late_p99_ms=1.0, achieved=100.0, rate=100.0, left=0, what="X")
    assert quiet == ["late p99 1.0 ms"]
    loud = report.flags(late_p99_ms=9.0, achieved=50.0, rate=100.0, left=3, what="ORDERS")
    assert loud[:3] == ["BELOW OFFERED", "PUBLISHER LAGGED", "STARTED WITH 3 EARLIER ORDERS"]


def test_the_cost_model_divides_each_service_counters_by_the_accepted_orders() -> None:
    step = SimpleNamespace(
        label="20/s",
        load=SimpleNamespace(ok=10),
        costs={
            "order": {"db_transactions": 40, "db_statements": 200, "http_requests": 20},
            "supplier": {"db_transactions": 60, "db_statements": 300, "http_requests": 30},
            "notify": {"db_statements": 100, "gc_seconds": 0.5},
        },
    )
    overload = SimpleNamespace(label="overload 400/s", load=SimpleNamespace(ok=10), costs={"x": {}})
    rows = cost_table([step, overload])  # type: ignore[list-item]
    assert rows[-1] == (
        "| 20/s | **10.0** (4.0 / 6.0 / 0.0 / 0.0) | **60.0** (20.0 / 30.0 / 10.0 / 0.0) "
        "| **5.0** (2.0 / 3.0 / 0.0 / 0.0) | **50.0** (0.0 / 0.0 / 50.0 / 0.0) |"
    )
    assert not any("overload" in r for r in rows)


def test_mail_scenario_times_both_builders(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(SCENARIOS, ["mail", "--count", "20", "--repeat", "1", "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert [r["way"] for r in results] == [
        "EmailMessage + flatten (before)",
        "mime.build_email, 8bit parts",
        "mime.build_email, 7-bit server",
    ]
    assert all(r["us_per_mail"] > 0 and r["bytes"] > 1000 for r in results)

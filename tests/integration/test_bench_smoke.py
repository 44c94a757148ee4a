"""The pipeline benchmark runs for real, briefly: outbox, relay, tansu and a consumer on SQLite."""

from __future__ import annotations

import json

import pytest

from bench.harness.cli import main
from bench.scenarios import SCENARIOS

pytestmark = pytest.mark.integration


def test_pipeline_scenario_measures_every_path(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pipeline", "--backends", "sqlite", "--events", "200", "--batch", "50"]
    assert main(SCENARIOS, [*argv, "--timeout", "60", "--json"]) == 0
    out = capsys.readouterr().out
    assert "dropship event pipeline benchmark" in out
    results = json.loads(out.strip().splitlines()[-1])["results"]
    paths = {r["path"]: r for r in results}
    assert set(paths) == {
        "outbox commit, alone",
        "outbox commit, in pipeline",
        "relay: commit -> broker ack",
        "pipeline: commit -> consume",
        "raw aiokafka: produce",
        "raw aiokafka: send -> consume",
    }
    for row in results:
        assert row["events"] == 200, row
        assert row["events_per_s"] > 0, row
    assert paths["pipeline: commit -> consume"]["p99_ms"] is not None


def test_relay_scenario_counts_statements_and_hands_over(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["relay", "--backends", "sqlite", "--events", "40", "--rate", "400"]
    argv += ["--relay-linger-ms", "20"]  # batches by design, not by luck under load
    assert main(SCENARIOS, [*argv, "--linger-ms", "2"]) == 0
    out = capsys.readouterr().out
    assert "dropship outbox relay cost" in out
    sqlite = next(line.split() for line in out.splitlines() if line.startswith("sqlite"))
    assert float(sqlite[2]) < 2.0, "relay statements per event"
    assert sqlite[-1].endswith("%") and int(sqlite[-1][:-1]) > 50, "most events handed over"
    assert sum(line.startswith("sqlite") for line in out.splitlines()) == 2  # + the broker run

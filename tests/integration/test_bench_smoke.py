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

"""The benchmarks, one small module each; `SCENARIOS` is what `python -m bench` offers."""

from bench.harness.cli import Scenario
from bench.scenarios import intake, metrics, notify, pipeline, routing

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        pipeline.SCENARIO,
        intake.SCENARIO,
        routing.SCENARIO,
        notify.SCENARIO,
        metrics.SCENARIO,
    )
}

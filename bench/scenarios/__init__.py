"""The benchmarks, one module each; `SCENARIOS` is what `python -m bench` offers.

Modules starting with `_` hold a scenario's larger parts (its rig, its report).
"""

from bench.harness.cli import Scenario
from bench.scenarios import (
    downstream,
    idle,
    intake,
    kpis,
    load,
    mail,
    metrics,
    notify,
    order_events,
    pipeline,
    relay,
    routing,
    stack,
)

SCENARIOS: dict[str, Scenario] = {
    s.SCENARIO.name: s.SCENARIO
    for s in (
        pipeline,
        relay,
        intake,
        routing,
        notify,
        metrics,
        kpis,
        order_events,
        stack,
        load,
        idle,
        downstream,
        mail,
    )
}

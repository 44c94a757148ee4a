"""Open-model load on any order endpoint: POST orders on a fixed timetable, latency from due.

    .venv/bin/python -m bench load --url http://127.0.0.1:8001/v1/orders --rate 300 --duration 15

Order i is due at start + i/rate whatever happened before (no coordinated omission);
`late` says how far the generator itself ran behind its timetable.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.harness.cli import Scenario
from bench.harness.generator import LoadOptions
from bench.harness.load import run_load
from bench.harness.report import Output
from bench.harness.stats import fmt_ms


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8001/v1/orders")
    ap.add_argument("--rate", type=float, required=True, help="requests per second offered")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of timetable")
    ap.add_argument("--procs", type=int, default=2, help="generator processes (default 2)")
    ap.add_argument("--conns", type=int, default=32, help="connections opened before the start")
    ap.add_argument("--max-conns", type=int, default=256, help="connection cap, all processes")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds before a request fails")
    ap.add_argument("--api-key", default="dev-api-key")
    ap.add_argument("--run-id", default=f"lg{int(time.time())}", help="Idempotency-Key prefix")
    ap.add_argument("--seed", type=int, default=1)


async def run(args: argparse.Namespace) -> int:
    opts = LoadOptions(
        args.procs, args.conns, args.max_conns, args.timeout, args.api_key, args.seed
    )
    r = await asyncio.to_thread(run_load, args.url, args.rate, args.duration, opts, args.run_id)
    out = Output(args.results)

    def ms(v: float | None) -> str:
        return fmt_ms(v, r.timeout_s)

    out(
        f"offered {r.offered_per_s:g}/s for {r.duration_s:g}s: sent {r.sent_per_s:.1f}/s, "
        f"2xx {r.ok_per_s:.1f}/s ({r.ok}/{r.scheduled})",
        "latency from due time: "
        + "  ".join(
            f"{q} {ms(v)} ms"
            for q, v in zip(
                ("p50", "p90", "p99", "max"), (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms), strict=True
            )
        ),
        f"statuses {r.statuses}  errors {r.errors}",
        f"generator: late p99 {ms(r.late_p99_ms)} ms, max {ms(r.late_max_ms)} ms; "
        f"connection wait p99 {ms(r.conn_wait_p99_ms)} ms; "
        f"connections {r.conns_opened} -> {r.conns_max}; "
        f"cpu {r.gen_cpu_s / max(r.wall_s, 1e-9):.2f} cores",
    )
    if args.json:
        out.json({}, [r.figures()])
    out.save()
    return 0


SCENARIO = Scenario("load", __doc__ or "", options, run)

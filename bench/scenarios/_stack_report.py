"""The whole-stack benchmark's markdown: step tables, resources, callbacks, goals."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.harness.load import LoadResult
from bench.harness.stats import fmt_ms, percentile

SERVICES = ("order", "supplier", "notify", "metrics", "simulator")
CONSUMERS = ("order", "supplier", "notify", "metrics")


@dataclass
class Step:
    """One arrival rate on the running stack: what the generator, /proc and /metrics saw."""

    label: str
    rate: float
    seconds: float
    load: LoadResult
    cpu: dict[str, float]
    rss_kb: dict[str, int]
    events: dict[str, float | None]
    wall_from: datetime
    wall_to: datetime
    load1: tuple[float, float]
    confirm_ms: list[float] = field(default_factory=list)
    unsettled: int = 0
    routing_failed: int = 0
    drain_s: float | None = None
    topics: dict[str, dict[str, float]] = field(default_factory=dict)
    webhook: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds from the step's first order until the system was quiet again (`split`)."""
    costs: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per service, its cost counters over the same window as `cpu_s`."""


def fmt(v: float | None, limit_s: float | None = None) -> str:
    return fmt_ms(v, limit_s, limit_in_s=True)


def step_tables(steps: list[Step], args: argparse.Namespace) -> list[str]:
    out = [
        "| step | offered/s | sent/s | 201/s | 201 in time | 429 | 503 (Retry-After) | other | "
        "timeouts (late 201) | "
        "intake p50 ms | intake p99 ms | confirmed | placed→confirmed p50 ms | p99 ms | "
        "not confirmed | drained after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        st, ld = s.load.statuses, s.load
        other = {k: v for k, v in st.items() if k not in (201, 429, 503)}
        conf = [x for x in s.confirm_ms if not math.isinf(x)]
        out.append(
            f"| {s.label} | {s.rate:g} | {ld.sent_per_s:.0f} | {ld.ok_per_s:.0f} | "
            f"{ld.ok} | {st.get(429, 0)} | {st.get(503, 0)} ({ld.retry_after.get(503, 0)}) | "
            f"{sum(other.values()) or '-'}{' ' + str(other) if other else ''} | "
            f"{ld.failed} ({st.get(201, 0) - ld.ok}) | "
            f"{fmt(ld.p50_ms, args.timeout)} | {fmt(ld.p99_ms, args.timeout)} | "
            f"{len(conf)} | {fmt(percentile(s.confirm_ms, 50), args.drain)} | "
            f"{fmt(percentile(s.confirm_ms, 99), args.drain)} | "
            f"{s.unsettled + s.routing_failed} | "
            f"{'-' if s.drain_s is None else f'{s.drain_s:.1f} s'} |"
        )
    out += [
        "",
        "Resources during each step's load window (cores = CPU seconds per second; RSS = peak "
        "MB during the step; events/s = `dropship_events_consumed_total` delta over the window):",
        "",
    ]
    procs = [*SERVICES, "broker", "postgres", "launcher"]
    out.append(
        "| step | "
        + " | ".join(f"{p} cpu" for p in procs)
        + " | generator cpu | machine busy | other | load1 | "
        + " | ".join(f"{p} RSS" for p in (*SERVICES, "broker"))
        + " | "
        + " | ".join(f"{p} ev/s" for p in CONSUMERS)
        + " |"
    )
    out.append("|---|" + "---:|" * (len(procs) + 4 + len(SERVICES) + 1 + len(CONSUMERS)))
    for s in steps:
        gen = s.load.gen_cpu_s / max(s.load.wall_s, 1e-9)
        ours = sum(s.cpu.get(p, 0.0) for p in procs) + gen
        events = (("?" if s.events.get(p) is None else f"{s.events[p]:.0f}") for p in CONSUMERS)
        out.append(
            f"| {s.label} | "
            + " | ".join(f"{s.cpu.get(p, 0.0):.2f}" for p in procs)
            + f" | {gen:.2f} | {s.cpu['machine']:.2f} | {max(0.0, s.cpu['machine'] - ours):.2f}"
            + f" | {s.load1[1]:.2f} | "
            + " | ".join(f"{s.rss_kb.get(p, 0) / 1024:.0f}" for p in (*SERVICES, "broker"))
            + " | "
            + " | ".join(events)
            + " |"
        )
    out += [
        "",
        "Supplier callback (webhook) acknowledgement, as the simulator timed its POSTs:",
        "",
    ]
    out.append("| step | kind | deliveries | first-try p50 ms | p99 ms | retried | failed |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for s in steps:
        for kind, w in s.webhook.items():
            out.append(
                f"| {s.label} | {kind} | {w['n']} | {fmt(w['p50'])} | {fmt(w['p99'])} | "
                f"{w['retried']} | {w['failed']} |"
            )
    return out


PER_ORDER = ("order", "supplier", "notify", "metrics", "broker", "postgres")


def idle_line(idle: dict[str, float]) -> str:
    """The idle window's cores: system under test, rig, and the busiest processes."""
    wall = idle["wall"]
    parts = [f"{n} {idle[n] / wall:.3f}" for n in (*PER_ORDER, "console", "launcher")]
    rig = ", ".join(f"{n} {idle[n] / wall:.3f}" for n in ("simulator", "marketplace_sim", "bench"))
    return (
        f"system under test **{idle['sut'] / wall:.3f} cores** ({', '.join(parts)}); "
        f"rig {idle['rig'] / wall:.3f} cores ({rig}); over {wall:.0f} s with no order"
    )


def per_order_table(steps: list[Step], idle_sut: float) -> list[str]:
    """CPU per accepted order, from the first order until everything drained."""
    out = [
        "CPU per order, counted from the step's first order until the system under test was "
        "back at its idle cost (every confirmation in, then CPU quiet for a second): system "
        "under test = the services, tansu, PostgreSQL and the launcher; rig = simulators, "
        "load generator and this bench's consumer (per-process /proc utime+stime).",
        "",
        "| step | orders (201) | window s | system ms/order | net of idle ms/order | rig "
        "ms/order | " + " | ".join(f"{p} ms" for p in PER_ORDER) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(PER_ORDER),
    ]
    for s in steps:
        c, n = s.cpu_s, s.load.ok or 0
        if not c or not n or s.label.startswith("overload"):
            continue
        rig = c["rig"] + c.get("generator", 0.0)
        net = c["sut"] - idle_sut * c["wall"]
        out.append(
            f"| {s.label} | {n} | {c['wall']:.1f} | {c['sut'] / n * 1000:.1f} | "
            f"{net / n * 1000:.1f} | {rig / n * 1000:.1f} | "
            + " | ".join(f"{c[p] / n * 1000:.1f}" for p in PER_ORDER)
            + " |"
        )
    return out


COST_KINDS = (("db_transactions", "transactions"), ("db_statements", "round trips"))


def cost_table(steps: list[Step]) -> list[str]:
    """The cost model: per accepted order and service, database transactions, database
    round trips (statements) and HTTP requests received, over the per-order CPU window."""
    out = [
        "Cost model per order (same window; from each service's `/metrics`: "
        "`dropship_db_transactions_total`, `dropship_db_statements_total`, "
        "`dropship_http_requests_total`; garbage collection: `dropship_gc_seconds_total`):",
        "",
        "| step | "
        + " | ".join(f"{label}: {' / '.join(CONSUMERS)}" for _, label in COST_KINDS)
        + " | HTTP requests received: "
        + " / ".join(CONSUMERS)
        + " | GC ms: "
        + " / ".join(CONSUMERS)
        + " |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in steps:
        n = s.load.ok or 0
        if not s.costs or not n or s.label.startswith("overload"):
            continue

        def cell(kind: str, s: Step = s, n: int = n) -> str:
            scale = 1000 if kind == "gc_seconds" else 1  # GC in ms per order
            per = [s.costs.get(c, {}).get(kind, 0.0) * scale / n for c in CONSUMERS]
            return f"**{sum(per):.1f}** (" + " / ".join(f"{v:.1f}" for v in per) + ")"

        kinds = (*(k for k, _ in COST_KINDS), "http_requests", "gc_seconds")
        out.append(f"| {s.label} | " + " | ".join(cell(k) for k in kinds) + " |")
    return out


def overload_lines(steps: list[Step]) -> list[str]:
    out = []
    for s in steps:
        if not s.label.startswith(("overload", "probe")):
            continue
        per = s.load.by_second
        cells = []
        for sec in sorted({sec for sec, _ in per}):
            counts = {st: n for (x, st), n in per.items() if x == sec}
            cells.append(f"{sec}s:" + "/".join(f"{st}x{n}" for st, n in sorted(counts.items())))
        out.append(
            f"- {s.label}, answers by second of the timetable: "
            + (", ".join(cells) or "none answered")
        )
    return out


def goal_lines(steps: list[Step]) -> list[str]:
    """Issue 7's goals next to this run's figures."""
    if not steps:
        return []
    best = max(steps, key=lambda s: s.load.ok_per_s)
    at200 = next((s for s in steps if s.rate == 200), None)
    out = [
        "| goal (issue 7) | this run | met |",
        "|---|---|---|",
        f"| intake ≥ 700 orders/s on PostgreSQL | {best.load.ok_per_s:.0f} 201/s in time "
        f"(step {best.label}) | {'yes' if best.load.ok_per_s >= 700 else 'no'} |",
    ]
    if at200 is None:
        return [*out, "| (no 200/s step: the other goals are not measured) | | |"]
    p99 = percentile(at200.confirm_ms, 99)
    out.append(
        f"| p99 placed→supplier-confirmed ≤ 250 ms at 200 orders/s | {fmt(p99)} ms "
        f"| {'yes' if p99 is not None and p99 <= 250 else 'no'} |"
    )
    ack = at200.webhook.get("callback")
    if ack:
        worse = ack["retried"] + ack["failed"]
        ok = ack["p99"] is not None and ack["p99"] <= 50 and not worse
        out.append(
            f"| webhook acknowledgement p99 ≤ 50 ms at 200/s | {fmt(ack['p99'])} ms first try, "
            f"{ack['retried']} retried of {ack['n']} | {'yes' if ok else 'no'} |"
        )
    return out


def markdown(
    args: argparse.Namespace,
    machine: dict[str, str],
    command: str,
    steps: list[Step],
    base_rows: list[tuple[str, str, str]],
    notes: list[str],
    span: tuple[datetime, datetime],
    idle: dict[str, float] | None = None,
) -> list[str]:
    ship = "default (1 s)" if args.ship_after_s is None else f"{args.ship_after_s:g} s"
    out = [
        f"run {span[0]:%Y-%m-%d %H:%M}-{span[1]:%H:%M} UTC; "
        + "; ".join(f"{k} {v}" for k, v in machine.items()),
        f"command: `{command}`",
        f"settings: {args.seconds:g} s per rate, simulator latency {args.latency_ms:g} ms, "
        f"simulator ship_after_s {ship}, "
        f"intake timeout {args.timeout:g} s, generator {args.gen_procs} procs / "
        f"{args.max_conns} conns max, log level {args.log_level or 'default (INFO)'}, "
        f"max in-flight {args.max_inflight or 'default (64)'}, access log "
        f"{'on' if args.access_log else 'off'}"
        + (f", env {' '.join(args.env)}" if args.env else ""),
        "",
        ("Idle: " + idle_line(idle)) if idle else "Idle: not measured (`--idle 0`)",
        "",
        *per_order_table(steps, getattr(args, "idle_sut", 0.0)),
        "",
        *cost_table(steps),
        "",
        *step_tables(steps, args),
        "",
        *overload_lines(steps),
        "",
        *goal_lines(steps),
    ]
    if base_rows:
        out += ["", "Baselines, same run, stack stopped:", "", "| baseline | throughput | detail |"]
        out.append("|---|---:|---|")
        out += [f"| {a} | {b} | {c} |" for a, b, c in base_rows]
    if notes:
        out += ["", "notes: " + "; ".join(notes)]
    return out

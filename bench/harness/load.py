"""Load on a fixed timetable (open model, in generator processes) or closed-loop with wrk.

`run_load` spreads the timetable over `bench.harness.generator` processes and merges
what they measured; `run_wrk` runs wrk with a Lua script for the closed-loop capacity.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing as mp
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.harness.clock import perf
from bench.harness.generator import LoadOptions, Plan, ProcResult, worker
from bench.harness.stats import percentile

# --------------------------------------------------------------------------- the run


@dataclass
class LoadResult:
    """The merged figures of one timetable (milliseconds unless named otherwise)."""

    offered_per_s: float
    duration_s: float
    scheduled: int
    sent_per_s: float
    ok: int  # 2xx answers within the timeout
    ok_per_s: float
    ok_span_s: float
    statuses: dict[int, int]
    errors: dict[str, int]
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    late_p99_ms: float | None
    late_max_ms: float | None
    conn_wait_p99_ms: float | None
    conns_opened: int
    conns_max: int
    timeout_s: float
    gen_cpu_s: float
    wall_s: float
    start: float = 0.0
    placed: dict[int, tuple[str, list[str], float]] = field(default_factory=dict, repr=False)
    retry_after: dict[int, int] = field(default_factory=dict)
    by_second: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> int:
        """Requests that timed out or never went out."""
        return sum(v for k, v in self.errors.items() if k != "connect")

    def figures(self) -> dict[str, Any]:
        """Everything but the per-order detail, for --json."""
        out = {k: v for k, v in vars(self).items() if k not in ("placed", "by_second")}
        out["gen_cores"] = self.gen_cpu_s / max(self.wall_s, 1e-9)
        return out


def merge(
    results: list[ProcResult],
    rate: float,
    duration: float,
    start: float,
    timeout: float,
    opened: int,
) -> LoadResult:
    latencies = [x * 1000 for r in results for x in r.latencies]
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    retry_after: Counter[int] = Counter()
    by_second: Counter[tuple[int, int]] = Counter()
    for r in results:
        statuses.update(r.statuses)
        errors.update(r.errors)
        retry_after.update(r.retry_after)
        by_second.update(r.by_second)
    late = [x * 1000 for r in results for x in r.late]
    wait_ms = [x for r in results for x in r.wait_ms]
    ok = len(latencies)
    last_ok = max((r.last_ok for r in results), default=0.0)
    span = max(duration, last_ok - start)  # a server that fell behind answers after the window
    failed = sum(v for k, v in errors.items() if k != "connect")
    # Requests that timed out or never went out are slower than any answer: they count
    # in the percentiles as +inf, so a p99 that lands on them shows as "> timeout".
    censored = latencies + [math.inf] * failed
    sent = sum(r.sent_in_window for r in results)
    return LoadResult(
        offered_per_s=rate,
        duration_s=duration,
        scheduled=sum(r.scheduled for r in results),
        sent_per_s=sent / duration,
        ok=ok,
        ok_per_s=ok / span if span > 0 else 0.0,
        ok_span_s=span,
        statuses=dict(sorted(statuses.items())),
        errors=dict(errors),
        p50_ms=percentile(censored, 50),
        p90_ms=percentile(censored, 90),
        p99_ms=percentile(censored, 99),
        max_ms=percentile(censored, 100),
        late_p99_ms=percentile(late, 99),
        late_max_ms=percentile(late, 100),
        conn_wait_p99_ms=percentile(wait_ms, 99),
        conns_opened=opened,
        conns_max=sum(r.max_open for r in results),
        timeout_s=timeout,
        gen_cpu_s=sum(r.cpu_s for r in results),
        wall_s=max(r.ended for r in results) - start,
        start=start,
        placed={i: v for r in results for i, v in r.placed.items()},
        retry_after=dict(retry_after),
        by_second=dict(by_second),
    )


def run_load(
    url: str,
    rate: float,
    duration: float,
    options: LoadOptions,
    run_id: str,
    on_start: Callable[[float], None] | None = None,
) -> LoadResult:
    """Run the timetable in `options.procs` processes (blocking); the merged figures.

    `on_start(t)` is called with the perf_counter start time once every process is
    ready and its connections are open.
    """
    parts = urlsplit(url)
    ctx = mp.get_context("spawn")
    n = options.procs
    share = LoadOptions(
        **{
            **vars(options),
            "conns": max(1, options.conns // n),
            "max_conns": max(1, options.max_conns // n),
        }
    )
    workers = []
    for k in range(n):
        plan = Plan(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            parts.path or "/",
            run_id,
            rate,
            duration,
            k,
            share,
        )
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(plan, theirs), daemon=True)
        proc.start()
        workers.append((proc, mine))
    opened = 0
    for _, pipe in workers:
        kind, value = pipe.recv()
        assert kind == "ready", kind
        opened += value
    start = perf() + 0.2
    for _, pipe in workers:
        pipe.send(start)
    if on_start is not None:
        on_start(start)
    results = []
    for proc, pipe in workers:
        kind, value = pipe.recv()
        assert kind == "result", kind
        results.append(value)
        proc.join(10)
    return merge(results, rate, duration, start, options.timeout, opened)


async def open_load(
    url: str, rate: float, duration: float, options: LoadOptions, run_id: str
) -> tuple[asyncio.Future[float], asyncio.Task[LoadResult]]:
    """Start `run_load` in a thread: (a future of its start time, the task of its result)."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[float] = loop.create_future()

    def on_start(start: float) -> None:
        loop.call_soon_threadsafe(started.set_result, start)

    job = asyncio.create_task(
        asyncio.to_thread(run_load, url, rate, duration, options, run_id, on_start)
    )
    return started, job


# --------------------------------------------------------------------------- wrk (closed loop)


@dataclass(frozen=True)
class WrkResult:
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


async def run_wrk(
    base: str, lua: str, threads: int, conns: int, seconds: float, timeout_s: float, run_id: str
) -> WrkResult:
    """wrk's closed loop with a Lua script that prints one `BENCH-JSON {...}` line."""
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s"]
    cmd += ["--timeout", f"{timeout_s:g}s", "-s", lua, base, "--", run_id]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("BENCH-JSON ")]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{out.decode()}\n{err.decode()}")
    res = json.loads(lines[-1].removeprefix("BENCH-JSON "))
    return WrkResult(
        {int(k): int(v) for k, v in res["statuses"].items()},
        {k: int(v) for k, v in res["errors"].items() if v and k != "status"},
        res["duration_us"] / 1e6,
        res["p50_us"] / 1000,
        res["p90_us"] / 1000,
        res["p99_us"] / 1000,
        res["max_us"] / 1000,
    )

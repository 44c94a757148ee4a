"""Open-model HTTP load generator: POST orders on a fixed timetable, latency from the due time.

    python bench/loadgen.py --url http://127.0.0.1:8001/v1/orders --rate 300 --duration 15

Request i is due at `start + i / rate`, whatever happened to the requests before it:
arrivals do not wait for completions (an open model, like real shoppers). Latency is
measured from the *due* time, not from when the request was written, so a stalled
server or a queue in front of it shows in the figures (no coordinated omission).

`--procs` processes share the timetable (process k sends requests k, k+P, k+2P, ...),
each with one uvloop event loop and raw HTTP/1.1 keep-alive connections (no client
library in the hot path; bodies are built before the clock starts). A process opens
`--conns` connections before the start and more when all of its connections are busy,
up to `--max-conns`; a request that finds no free connection waits (its latency keeps
counting from its due time). Idle connections are reused least-recently-used first,
so the load spreads over every connection (and so over the server's workers).

The generator checks itself: `late` is how far behind the timetable its loop picked a
request up (p99/max), and `sent/s` how many requests were written within the window.
If `late` p99 goes over a few milliseconds, or sent/s falls below the offered rate while
connections were free, the generator lagged and the figures are not the server's.
Generator processes ask for `nice -10` (granted to root) so that a server saturating
every core does not push them off their timetable.

Bodies are valid order-service orders (1-3 lines of varied SKUs, varied customers and
countries) with a unique `Idempotency-Key` each; `--api-key` is sent as `X-API-Key`.
Prints a summary, or one JSON object with `--json` (bench/intake.py reads that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing as mp
import os
import random
import re
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

perf = time.perf_counter
COUNTRIES = ("US", "DE", "GB", "FR", "CA", "AU", "NL", "ES", "IT", "SE")
FIRST = ("Ann", "Bob", "Chen", "Dara", "Eve", "Farid", "Gita", "Hugo", "Ines", "Jon")
LAST = ("Lee", "Smith", "Wang", "Okafor", "Novak", "Garcia", "Kim", "Rossi", "Berg", "Ali")
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


def order_body(rng: random.Random, i: int) -> dict[str, Any]:
    """A valid order with 1-3 distinct SKUs (the same shape bench/intake_order.lua sends)."""
    n = rng.randint(1, 3)
    base = rng.randrange(10000)
    who = rng.randrange(100000)
    return {
        "channel": "storefront",
        "currency": "USD",
        "customer": {
            "name": f"{FIRST[who % 10]} {LAST[(who // 10) % 10]}",
            "email": f"c{who}.{i}@example.com",
            "locale": "en",
        },
        "shipping_address": {
            "line1": f"{rng.randint(1, 999)} Main St",
            "city": "Springfield",
            "postal_code": f"{rng.randrange(100000):05d}",
            "country": rng.choice(COUNTRIES),
        },
        "lines": [
            {
                "sku": f"SKU-{(base + 7 * j) % 10000:05d}",
                "quantity": rng.randint(1, 5),
                "unit_price": f"{rng.randint(1, 199)}.{rng.randrange(100):02d}",
            }
            for j in range(1, n + 1)
        ],
    }


def build_request(
    host: str, path: str, api_key: str, run: str, i: int, rng: random.Random
) -> bytes:
    body = json.dumps(order_body(rng, i), separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {api_key}\r\nIdempotency-Key: {run}-{i}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# --------------------------------------------------------------------------- one process


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.req: tuple[int, float] | None = None  # (index, due)
        self.head: tuple[int, int, int, bool] | None = None  # status, body start, length, close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.gen.opened(self)

    def send(self, payload: bytes, index: int, due: float) -> None:
        assert self.transport is not None
        self.req = (index, due)
        self.head = None
        self.buf.clear()
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        if self.req is None:
            return
        buf = self.buf
        buf += data
        if self.head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            header = bytes(buf[:end])
            status = int(header[9:12])
            m = _LENGTH.search(header)
            chunked = m is None and _CHUNKED.search(header) is not None
            length = int(m.group(1)) if m else 0
            self.head = (
                status,
                end + 4,
                length if not chunked else -1,
                bool(_CLOSE.search(header)),
            )
        status, start, length, close = self.head
        if length >= 0 and len(buf) - start < length:
            return
        if length < 0 and not buf.endswith(b"0\r\n\r\n"):
            return
        req, self.req = self.req, None
        self.gen.answered(self, req, status, close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.gen.lost(self)


@dataclass
class Plan:
    host: str
    port: int
    path: str
    api_key: str
    run: str
    rate: float
    duration: float
    procs: int
    index: int
    conns: int
    max_conns: int
    timeout: float
    seed: int


class Generator:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.loop = asyncio.get_running_loop()
        host = f"{plan.host}:{plan.port}"
        rng = random.Random(plan.seed * 1_000_003 + plan.index)
        total = int(plan.rate * plan.duration)
        self.indices = range(plan.index, total, plan.procs)
        self.payloads = {
            i: build_request(host, plan.path, plan.api_key, plan.run, i, rng) for i in self.indices
        }
        self.cap = max(1, plan.max_conns)
        self.idle: deque[Conn] = deque()
        self.waiting: deque[tuple[int, float]] = deque()
        self.open_count = 0
        self.opening = 0
        self.max_open = 0
        self.in_flight = 0
        self.start = 0.0
        self.window_end = 0.0
        self.sent_in_window = 0
        self.latencies: list[float] = []  # seconds, successful (2xx) answers
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.late: list[float] = []
        self.wait_ms: list[float] = []  # due -> written (waiting for a free connection)
        self.last_ok = 0.0
        self.ready = asyncio.Event()

    # -- connections ---------------------------------------------------------------------
    def open_one(self) -> None:
        self.opening += 1
        self.loop.create_task(self._open())

    async def _open(self) -> None:
        try:
            await self.loop.create_connection(lambda: Conn(self), self.plan.host, self.plan.port)
        except OSError:
            self.opening -= 1
            self.errors["connect"] += 1

    def opened(self, conn: Conn) -> None:
        self.opening -= 1
        self.open_count += 1
        self.max_open = max(self.max_open, self.open_count)
        self.release(conn)
        if self.open_count >= self.plan.conns:
            self.ready.set()

    def lost(self, conn: Conn) -> None:
        self.open_count -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        if conn.req is not None:
            self.in_flight -= 1
            self.errors["connection lost"] += 1
            conn.req = None
        if self.waiting and self.open_count + self.opening < self.cap:
            self.open_one()

    def release(self, conn: Conn) -> None:
        if self.waiting:
            index, due = self.waiting.popleft()
            self.write(conn, index, due)
        else:
            self.idle.append(conn)

    # -- requests ------------------------------------------------------------------------
    def dispatch(self, index: int, due: float) -> None:
        self.in_flight += 1
        if self.idle:
            self.write(self.idle.popleft(), index, due)
            return
        self.waiting.append((index, due))
        if self.open_count + self.opening < self.cap:
            self.open_one()

    def write(self, conn: Conn, index: int, due: float) -> None:
        now = perf()
        if now <= self.window_end:
            self.sent_in_window += 1
        self.wait_ms.append((now - due) * 1000)
        conn.send(self.payloads[index], index, due)

    def answered(self, conn: Conn, req: tuple[int, float], status: int, close: bool) -> None:
        now = perf()
        self.in_flight -= 1
        self.statuses[status] += 1
        latency = now - req[1]
        if latency > self.plan.timeout:
            self.errors["timeout"] += 1
        elif 200 <= status < 300:
            self.latencies.append(latency)
            self.last_ok = now
        if close:
            assert conn.transport is not None
            conn.transport.close()
        else:
            self.release(conn)

    async def run(self, start: float) -> None:
        self.start = start
        self.window_end = start + self.plan.duration
        rate = self.plan.rate
        sleep = asyncio.sleep
        for i in self.indices:
            due = start + i / rate
            delay = due - perf()
            if delay > 0:
                await sleep(delay)
            self.late.append(perf() - due)
            self.dispatch(i, due)
        deadline = self.window_end + self.plan.timeout
        while self.in_flight and perf() < deadline:
            await sleep(0.01)
        self.errors["timeout"] += self.in_flight - len(self.waiting)
        self.errors["never sent"] += len(self.waiting)


async def _process(plan: Plan, pipe: Any) -> dict[str, Any]:
    gen = Generator(plan)
    for _ in range(min(plan.conns, plan.max_conns)):
        gen.open_one()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gen.ready.wait(), 10)
    pipe.send(("ready", gen.open_count))
    start = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    gc.collect()
    gc.disable()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await gen.run(start)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    gc.enable()
    return {
        "scheduled": len(gen.indices),
        "sent_in_window": gen.sent_in_window,
        "latencies": gen.latencies,
        "statuses": dict(gen.statuses),
        "errors": dict(gen.errors),
        "late": gen.late,
        "wait_ms": gen.wait_ms,
        "last_ok": gen.last_ok,
        "max_open": gen.max_open,
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "ended": perf(),
    }


def _worker(plan: Plan, pipe: Any) -> None:
    # The generator is the measuring instrument: when the server saturates both cores,
    # a higher priority keeps it on its timetable (it needs a few % of one core).
    with contextlib.suppress(OSError):
        os.nice(-10)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    pipe.send(("result", runner(_process(plan, pipe))))


# --------------------------------------------------------------------------- the run


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q=100 is the maximum)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def run(
    url: str,
    rate: float,
    duration: float,
    *,
    procs: int = 2,
    conns: int = 32,
    max_conns: int = 256,
    timeout: float = 5.0,
    api_key: str = "dev-api-key",
    run_id: str = "lg",
    seed: int = 1,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run the timetable in `procs` processes; the merged figures as a dict."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    ctx = mp.get_context("spawn")
    workers = []
    for k in range(procs):
        plan = Plan(
            host,
            port,
            parts.path or "/",
            api_key,
            run_id,
            rate,
            duration,
            procs,
            k,
            max(1, conns // procs),
            max(1, max_conns // procs),
            timeout,
            seed,
        )
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(plan, theirs), daemon=True)
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
        on_start()
    results = []
    for proc, pipe in workers:
        kind, value = pipe.recv()
        assert kind == "result", kind
        results.append(value)
        proc.join(10)
    return merge(results, rate, duration, start, timeout, opened)


def merge(
    results: list[dict[str, Any]],
    rate: float,
    duration: float,
    start: float,
    timeout: float,
    opened: int,
) -> dict[str, Any]:
    latencies = [x * 1000 for r in results for x in r["latencies"]]
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        statuses.update({int(k): v for k, v in r["statuses"].items()})
        errors.update(r["errors"])
    late = [x * 1000 for r in results for x in r["late"]]
    wait_ms = [x for r in results for x in r["wait_ms"]]
    scheduled = sum(r["scheduled"] for r in results)
    ok = len(latencies)
    last_ok = max((r["last_ok"] for r in results), default=0.0)
    span = max(duration, last_ok - start)  # a server that fell behind answers after the window
    failed = sum(v for k, v in errors.items() if k != "connect")
    # Requests that timed out or never went out are slower than any answer: they count
    # in the percentiles as +inf, so a p99 that lands on them shows as "> timeout".
    censored = latencies + [math.inf] * failed
    non2xx = {k: v for k, v in statuses.items() if not 200 <= k < 300}
    wall = max(r["ended"] for r in results) - start
    return {
        "offered_per_s": rate,
        "duration_s": duration,
        "scheduled": scheduled,
        "sent_in_window": sum(r["sent_in_window"] for r in results),
        "sent_per_s": sum(r["sent_in_window"] for r in results) / duration,
        "ok": ok,
        "ok_per_s": ok / span if span > 0 else 0.0,
        "ok_span_s": span,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "non_2xx": sum(non2xx.values()),
        "errors": dict(errors),
        "p50_ms": percentile(censored, 50),
        "p90_ms": percentile(censored, 90),
        "p99_ms": percentile(censored, 99),
        "max_ms": percentile(censored, 100),
        "late_p99_ms": percentile(late, 99),
        "late_max_ms": percentile(late, 100),
        "conn_wait_p99_ms": percentile(wait_ms, 99),
        "conns_opened": opened,
        "conns_max": sum(r["max_open"] for r in results),
        "timeout_s": timeout,
        "gen_cpu_s": sum(r["cpu_s"] for r in results),
        "wall_s": wall,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
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
    ap.add_argument(
        "--json",
        action="store_true",
        help='print "# started" when the timetable starts, then one JSON object at the end',
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(
        args.url,
        args.rate,
        args.duration,
        procs=args.procs,
        conns=args.conns,
        max_conns=args.max_conns,
        timeout=args.timeout,
        api_key=args.api_key,
        run_id=args.run_id,
        seed=args.seed,
        on_start=(lambda: print("# started", flush=True)) if args.json else None,
    )
    if args.json:
        print(json.dumps(result))
        return 0

    def ms(v: float | None) -> str:
        if v is None:
            return "-"
        return f">{result['timeout_s'] * 1000:.0f}" if math.isinf(v) else f"{v:.1f}"

    print(
        f"offered {result['offered_per_s']:g}/s for {result['duration_s']:g}s: "
        f"sent {result['sent_per_s']:.1f}/s, 2xx {result['ok_per_s']:.1f}/s "
        f"({result['ok']}/{result['scheduled']})"
    )
    print(
        "latency from due time: "
        + "  ".join(f"{q} {ms(result[q + '_ms'])} ms" for q in ("p50", "p90", "p99", "max"))
    )
    print(f"statuses {result['statuses']}  errors {result['errors']}")
    print(
        f"generator: late p99 {ms(result['late_p99_ms'])} ms, max {ms(result['late_max_ms'])} ms; "
        f"connection wait p99 {ms(result['conn_wait_p99_ms'])} ms; "
        f"connections {result['conns_opened']} -> {result['conns_max']}; "
        f"cpu {result['gen_cpu_s'] / max(result['wall_s'], 1e-9):.2f} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

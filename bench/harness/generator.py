"""The open-model generator process: POST orders on a fixed timetable, latency from each due time.

Request i is due at `start + i / rate`, whatever happened to the requests before it:
arrivals do not wait for completions (an open model, like real shoppers). Latency is
measured from the *due* time, not from when the request was written, so a stalled
server or a queue in front of it shows in the figures (no coordinated omission).

`procs` processes share the timetable (process k sends requests k, k+P, k+2P, ...),
each with one uvloop event loop and raw HTTP/1.1 keep-alive connections (no client
library in the hot path; bodies are built before the clock starts). A process opens
`conns` connections before the start and more when all of its connections are busy,
up to `max_conns`; a request that finds no free connection waits (its latency keeps
counting from its due time). Idle connections are reused least-recently-used first.

The generator checks itself: `late` is how far behind the timetable its loop picked a
request up, and `sent_per_s` how many requests were written within the window.
Generator processes ask for `nice -10` (granted to root) so that a server saturating
every core does not push them off their timetable. With `track`, the order id and line
ids of every 201 are kept, refusals carrying Retry-After counted, and statuses counted
per second of the timetable.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import re
import resource
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

perf = time.perf_counter
Body = Callable[[random.Random, int], dict[str, Any]]
DESTINATIONS: dict[str, tuple[str, str | None, str]] = {
    "US": ("Springfield", "IL", "62701"),
    "DE": ("Berlin", None, "10115"),
    "GB": ("London", None, "SW1A 1AA"),
    "FR": ("Paris", None, "75001"),
    "CA": ("Toronto", "ON", "M5V 2T6"),
    "AU": ("Sydney", "NSW", "2000"),
    "NL": ("Amsterdam", None, "1012 AB"),
    "ES": ("Madrid", "M", "28001"),
    "IT": ("Roma", "RM", "00184"),
    "SE": ("Stockholm", None, "111 52"),
}
"""Country -> (city, region, postal code) that pass the country's address rules (no hold)."""
COUNTRIES = tuple(DESTINATIONS)
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
        "shipping_address": _address(rng),
        "lines": [
            {
                "sku": f"SKU-{(base + 7 * j) % 10000:05d}",
                "quantity": rng.randint(1, 5),
                "unit_price": f"{rng.randint(1, 199)}.{rng.randrange(100):02d}",
            }
            for j in range(1, n + 1)
        ],
    }


def build_request(host: str, path: str, api_key: str, key: str, body: dict[str, Any]) -> bytes:
    """One raw HTTP/1.1 POST of `body` as JSON, `key` as its Idempotency-Key."""
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {api_key}\r\nIdempotency-Key: {key}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@dataclass(frozen=True)
class LoadOptions:
    """How the generator runs (everything but the target and the timetable)."""

    procs: int = 2
    conns: int = 32
    max_conns: int = 256
    timeout: float = 5.0
    api_key: str = "dev-api-key"
    seed: int = 1
    body: Body = order_body  # module-level, so spawned processes can unpickle it
    track: bool = False


@dataclass(frozen=True)
class Plan:
    """One generator process's share of the timetable."""

    host: str
    port: int
    path: str
    run: str
    rate: float
    duration: float
    index: int
    options: LoadOptions


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
            m = _LENGTH.search(header)
            chunked = m is None and _CHUNKED.search(header) is not None
            length = -1 if chunked else int(m.group(1)) if m else 0
            self.head = (int(header[9:12]), end + 4, length, bool(_CLOSE.search(header)))
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
class ProcResult:
    """What one generator process measured (seconds, perf_counter times)."""

    scheduled: int
    sent_in_window: int
    latencies: list[float]
    statuses: dict[int, int]
    errors: dict[str, int]
    late: list[float]
    wait_ms: list[float]
    last_ok: float
    max_open: int
    cpu_s: float
    ended: float
    placed: dict[int, tuple[str, list[str], float]]
    retry_after: dict[int, int]
    by_second: dict[tuple[int, int], int]


class Generator:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        opts = plan.options
        self.loop = asyncio.get_running_loop()
        rng = random.Random(opts.seed * 1_000_003 + plan.index)
        host = f"{plan.host}:{plan.port}"
        self.indices = range(plan.index, int(plan.rate * plan.duration), opts.procs)
        self.payloads = {
            i: build_request(host, plan.path, opts.api_key, f"{plan.run}-{i}", opts.body(rng, i))
            for i in self.indices
        }
        self.cap = max(1, opts.max_conns)
        self.idle: deque[Conn] = deque()
        self.waiting: deque[tuple[int, float]] = deque()
        self.open_count = self.opening = self.max_open = self.in_flight = 0
        self.start = self.window_end = self.last_ok = 0.0
        self.sent_in_window = 0
        self.latencies: list[float] = []  # seconds, successful (2xx) answers
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.late: list[float] = []
        self.wait_ms: list[float] = []  # due -> written (waiting for a free connection)
        self.placed: dict[int, tuple[str, list[str], float]] = {}  # i -> id, lines, answered
        self.retry_after: Counter[int] = Counter()  # refusals carrying Retry-After, by status
        self.by_second: Counter[tuple[int, int]] = Counter()  # (second, status)
        self.ready = asyncio.Event()

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
        if self.open_count >= self.plan.options.conns:
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
        if self.plan.options.track:
            self._track(conn, req, status, latency, now)
        if latency > self.plan.options.timeout:
            self.errors["timeout"] += 1
        elif 200 <= status < 300:
            self.latencies.append(latency)
            self.last_ok = now
        if close:
            assert conn.transport is not None
            conn.transport.close()
        else:
            self.release(conn)

    def _track(
        self, conn: Conn, req: tuple[int, float], status: int, latency: float, now: float
    ) -> None:
        assert conn.head is not None
        start = conn.head[1]
        self.by_second[(int(req[1] - self.start), status)] += 1
        if status == 201 and latency <= self.plan.options.timeout:
            with contextlib.suppress(ValueError, KeyError):
                order = json.loads(bytes(conn.buf[start:]))
                self.placed[req[0]] = (order["id"], [ln["line_id"] for ln in order["lines"]], now)
        elif status >= 400 and b"\r\nretry-after:" in bytes(conn.buf[:start]).lower():
            self.retry_after[status] += 1

    async def run(self, start: float) -> None:
        self.start = start
        self.window_end = start + self.plan.duration
        rate = self.plan.rate
        for i in self.indices:
            due = start + i / rate
            delay = due - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            self.late.append(perf() - due)
            self.dispatch(i, due)
        deadline = self.window_end + self.plan.options.timeout
        while self.in_flight and perf() < deadline:  # noqa: ASYNC110 - the hot loop polls
            await asyncio.sleep(0.01)
        self.errors["timeout"] += self.in_flight - len(self.waiting)
        self.errors["never sent"] += len(self.waiting)

    def result(self, cpu_s: float) -> ProcResult:
        return ProcResult(
            len(self.indices),
            self.sent_in_window,
            self.latencies,
            dict(self.statuses),
            dict(self.errors),
            self.late,
            self.wait_ms,
            self.last_ok,
            self.max_open,
            cpu_s,
            perf(),
            self.placed,
            dict(self.retry_after),
            dict(self.by_second),
        )


async def _process(plan: Plan, pipe: Connection) -> ProcResult:
    gen = Generator(plan)
    for _ in range(min(plan.options.conns, plan.options.max_conns)):
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
    return gen.result((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime))


def worker(plan: Plan, pipe: Connection) -> None:
    # The generator is the measuring instrument: when the server saturates both cores,
    # a higher priority keeps it on its timetable (it needs a few % of one core).
    with contextlib.suppress(OSError):
        os.nice(-10)
    import uvloop

    pipe.send(("result", uvloop.run(_process(plan, pipe))))


def _address(rng: random.Random) -> dict[str, str]:
    country = rng.choice(COUNTRIES)
    city, region, postal_code = DESTINATIONS[country]
    address = {
        "line1": f"{rng.randint(1, 999)} Main St",
        "city": city,
        "postal_code": postal_code,
        "country": country,
    }
    if region is not None:
        address["region"] = region
    return address

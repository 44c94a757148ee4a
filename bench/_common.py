"""Helpers shared by the benchmarks: open-model pacing, percentiles, CPU accounting,
uvicorn processes and py-spy profile summaries."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from shared.infra import free_port

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
perf = time.perf_counter

Rules = tuple[tuple[str, tuple[str, ...]], ...]


# --------------------------------------------------------------------------- load and latency


async def paced(count: int, rate: float, lead_s: float = 0.02) -> AsyncIterator[tuple[int, float]]:
    """Open model: yield (i, scheduled perf_counter time) at start + i/rate, whatever the
    system under test did meanwhile (late sends are measured from their schedule)."""
    start = perf() + lead_s
    for i in range(count):
        due = start + i / rate
        wait = due - perf()
        if wait > 0:
            await asyncio.sleep(wait)
        yield i, due


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q=100 is the maximum)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def fmt_ms(v: float | None, timeout: float) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return f">{timeout * 1000:.0f}"
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


# --------------------------------------------------------------------------- cpu accounting


def proc_ticks() -> dict[int, tuple[str, int, int, int]]:
    """Command name, parent pid, utime+stime and stime (clock ticks) of every live process."""
    out: dict[int, tuple[str, int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        close = raw.rfind(b")")
        comm = raw[raw.find(b"(") + 1 : close].decode(errors="replace")
        fields = raw[close + 2 :].split()
        utime, stime = int(fields[11]), int(fields[12])
        out[int(entry.name)] = (comm, int(fields[1]), utime + stime, stime)
    return out


def machine_busy_ticks() -> int:
    """Ticks all CPUs spent not idle, since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values[:8]) - values[3] - values[4]  # minus idle and iowait


def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server listening on the URL's port (its backends are its children)."""
    port = make_url(url).port
    for pid, (comm, *_) in proc_ticks().items():
        if comm != "postgres":
            continue
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"-p" in args and args[args.index(b"-p") + 1] == str(port).encode():
                return pid
    return None


async def busy_cores(seconds: float) -> float:
    """Cores the whole machine kept busy over `seconds` (this process sleeps meanwhile)."""
    b0, t0 = machine_busy_ticks(), perf()
    await asyncio.sleep(seconds)
    return (machine_busy_ticks() - b0) / TICK / (perf() - t0)


# --------------------------------------------------------------------------- processes


@dataclass
class UvicornApp:
    """A uvicorn app (`--workers N`) in its own process group, started by a benchmark."""

    name: str
    spec: str
    env: dict[str, str]
    workers: int
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    worker_pids: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            self.spec,
            "--workers",
            str(self.workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, within: float = 90.0) -> None:
        """/readyz 200 on fresh connections several times in a row (both workers up)."""
        deadline = perf() + within
        streak = 0
        while streak < 8:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if perf() > deadline:
                raise RuntimeError(f"{self.name} not ready after {within:.0f}s:\n{self.log_tail()}")
            try:
                async with httpx.AsyncClient(timeout=2.0) as client:
                    ok = (await client.get(self.base + "/readyz")).status_code == 200
            except httpx.HTTPError:
                ok = False
            streak = streak + 1 if ok else 0
            await asyncio.sleep(0.05 if ok else 0.25)
        self.worker_pids = self._children()
        if len(self.worker_pids) != self.workers:
            raise RuntimeError(
                f"{self.name}: expected {self.workers} workers, found {self.worker_pids}"
            )

    def _children(self) -> list[int]:
        assert self.proc is not None
        pid = self.proc.pid
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        workers = []
        for k in kids:
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                    workers.append(int(k))
        return sorted(workers)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --------------------------------------------------------------------------- profiles


DB_LEAVES: Rules = (
    ("db: asyncpg driver", ("asyncpg/",)),
    ("db: SQLAlchemy statement build/compile/cache key", ("sqlalchemy/sql/",)),
    ("db: SQLAlchemy session/engine/result/greenlet", ("sqlalchemy/", "greenlet")),
)
ASGI_LEAVES: Rules = (
    ("ASGI: BaseHTTPMiddleware (trace) + anyio", ("starlette/middleware/base.py", "anyio/")),
    ("ASGI: uvicorn + httptools", ("uvicorn/",)),
    ("ASGI: Starlette/FastAPI routing, middleware", ("starlette/", "fastapi/", "shared/http.py")),
    ("event loop, asyncio", ("asyncio/", "uvloop/")),
)
LIBRARIES: Rules = (
    # the leaf-most frame that belongs to one of these packages names the sample
    ("asyncpg", ("asyncpg/",)),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("email_validator", ("email_validator/",)),
    ("pycountry", ("pycountry/",)),
    ("cryptography, hmac", ("cryptography/", "hmac.py")),
    ("json (stdlib)", ("json/",)),
    ("aiokafka", ("aiokafka/",)),
    ("anyio", ("anyio/",)),
    ("starlette", ("starlette/",)),
    ("fastapi", ("fastapi/",)),
    ("uvicorn", ("uvicorn/",)),
    ("logging", ("logging/", "pythonjsonlogger/")),
    ("threading", ("threading.py", "queue.py")),
    ("asyncio", ("asyncio/",)),
    ("services/ + shared/ (ours)", ("services/", "shared/")),
)


def leaf_label(frames: list[str], rules: Rules) -> str | None:
    for frame in reversed(frames):
        hit = next((n for n, keys in rules if any(k in frame for k in keys)), None)
        if hit:
            return hit
    return None


def read_collapsed(path: Path) -> tuple[list[tuple[list[str], int]], int]:
    """py-spy's collapsed stacks (`--format raw`): (frames, samples) per stack, and the total."""
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            stacks.append(([f for f in stack.split(";") if f], int(count)))
    return stacks, sum(c for _, c in stacks)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")

"""Processes a benchmark starts and watches: uvicorn apps, CPU and RSS from /proc, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx
from sqlalchemy.engine import make_url

from shared.infra import free_port

REPO = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")
perf = time.perf_counter


# --------------------------------------------------------------------------- /proc


class ProcStat(NamedTuple):
    comm: str
    ppid: int
    ticks: int  # utime + stime
    sys_ticks: int  # stime


def proc_stats() -> dict[int, ProcStat]:
    """Command name, parent, CPU ticks and kernel ticks of every live process."""
    out: dict[int, ProcStat] = {}
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
        out[int(entry.name)] = ProcStat(comm, int(fields[1]), utime + stime, stime)
    return out


def machine_busy_ticks() -> int:
    """Ticks all CPUs spent not idle, since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values[:8]) - values[3] - values[4]  # minus idle and iowait


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server listening on the URL's port (its backends are its children)."""
    port = make_url(url).port
    for pid, stat in proc_stats().items():
        if stat.comm != "postgres":
            continue
        with contextlib.suppress(OSError, IndexError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"-p" in args and args[args.index(b"-p") + 1] == str(port).encode():
                return pid
    return None


async def busy_cores(seconds: float) -> float:
    """Cores the whole machine kept busy over `seconds` (this process sleeps meanwhile)."""
    b0, t0 = machine_busy_ticks(), perf()
    await asyncio.sleep(seconds)
    return (machine_busy_ticks() - b0) / TICK / (perf() - t0)


def _own_cpu_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


@dataclass(frozen=True)
class Snapshot:
    """CPU counters at one moment: every process, the machine, this process, its children."""

    t: float
    procs: dict[int, ProcStat]
    busy: int
    self_s: float
    children_s: float


def snapshot() -> Snapshot:
    return Snapshot(
        perf(),
        proc_stats(),
        machine_busy_ticks(),
        _own_cpu_s(resource.RUSAGE_SELF),
        _own_cpu_s(resource.RUSAGE_CHILDREN),
    )


@dataclass(frozen=True)
class Usage:
    """CPU used between two snapshots; `*_s` are CPU seconds, `cores` per wall second."""

    a: Snapshot
    b: Snapshot

    @property
    def wall(self) -> float:
        return self.b.t - self.a.t

    def cpu_s(self, pid: int | None, *, kernel: bool = False) -> float:
        if pid is None or pid not in self.b.procs:
            return 0.0
        after, before = self.b.procs[pid], self.a.procs.get(pid, ProcStat("", 0, 0, 0))
        ticks = after.sys_ticks - before.sys_ticks if kernel else after.ticks - before.ticks
        return max(0, ticks) / TICK

    def tree_s(self, pid: int | None, *, kernel: bool = False) -> float:
        """A process and its direct children (uvicorn's master and workers)."""
        kids = [p for p, st in self.b.procs.items() if pid is not None and st.ppid == pid]
        return self.cpu_s(pid, kernel=kernel) + sum(self.cpu_s(k, kernel=kernel) for k in kids)

    def db_cores(self, root: int | None) -> float:
        """The PostgreSQL postmaster `root` and its backends."""
        pids = [p for p, st in self.b.procs.items() if root and (p == root or st.ppid == root)]
        return sum(self.cpu_s(p) for p in pids) / self.wall

    def cores(self, pid: int | None) -> float:
        return self.cpu_s(pid) / self.wall

    @property
    def machine(self) -> float:
        return (self.b.busy - self.a.busy) / TICK / self.wall

    @property
    def bench(self) -> float:
        """This process (the bench itself: publishers, consumers, the SMTP sink)."""
        return (self.b.self_s - self.a.self_s) / self.wall

    @property
    def children_s(self) -> float:
        """CPU seconds of child processes that exited meanwhile (wrk)."""
        return self.b.children_s - self.a.children_s


class CpuMeter:
    """`with CpuMeter() as m: ...` then `m.usage`: what every process used meanwhile."""

    usage: Usage

    def __enter__(self) -> CpuMeter:
        self._a = snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.usage = Usage(self._a, snapshot())

    def named(self, pids: Mapping[str, int | None], db_root: int | None) -> dict[str, float]:
        """Cores per named process tree, PostgreSQL (`db`), this bench, the rest (`other`)."""
        u = self.usage
        out = {name: u.tree_s(pid) / u.wall for name, pid in pids.items()}
        if db_root is not None:
            out["db"] = u.db_cores(db_root)
        out["bench"] = u.bench
        out["other"] = max(0.0, u.machine - sum(out.values()))
        out["wall"] = u.wall
        return out


class RssSampler:
    """Peak RSS (kB) of named processes, sampled every second while the block runs."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak.get(name, 0), rss_kb(pid))
            await asyncio.sleep(1.0)

    def __enter__(self) -> RssSampler:
        self.task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()


# --------------------------------------------------------------------------- uvicorn apps


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any DROPSHIP_ setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    return env | extra


@dataclass
class UvicornApp:
    """`uvicorn --factory SPEC --workers N` in its own process group, started by a benchmark.

    With one worker uvicorn serves in the process itself; with more, the workers are its
    `spawn_main` children and readiness means /readyz answered several times in a row.
    """

    name: str
    spec: str
    env: dict[str, str]
    workers: int
    log: Path
    health: str = "/readyz"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    worker_pids: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", self.spec]
        cmd += ["--workers", str(self.workers), "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--no-access-log"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, within: float = 90.0) -> None:
        deadline = perf() + within
        streak, needed = 0, 1 if self.workers == 1 else 8
        while streak < needed:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if perf() > deadline:
                raise RuntimeError(f"{self.name} not ready after {within:.0f}s:\n{self.log_tail()}")
            try:  # a fresh connection each time, so every worker gets asked
                async with httpx.AsyncClient(timeout=2.0) as client:
                    ok = (await client.get(self.base + self.health)).status_code == 200
            except httpx.HTTPError:
                ok = False
            streak = streak + 1 if ok else 0
            await asyncio.sleep(0.05 if ok else 0.2)
        self.worker_pids = self._workers()
        if len(self.worker_pids) != self.workers:
            raise RuntimeError(f"{self.name}: {self.workers} workers expected: {self.worker_pids}")

    def _workers(self) -> list[int]:
        assert self.proc is not None
        pid = self.proc.pid
        if self.workers == 1:
            return [pid]
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        found = []
        for k in kids:
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                    found.append(int(k))
        return sorted(found)

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
        return log_tail(self.log, lines)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def log_summary(path: Path, top: int = 6) -> list[str]:
    """WARNING+ lines of a service's JSON log, counted by message (errors included)."""
    counts: Counter[str] = Counter()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # uvicorn's own plain-text lines
            if line.startswith(("WARNING", "ERROR", "CRITICAL")):
                counts[" ".join(line.split())[:150]] += 1
            continue
        if not isinstance(rec, dict):
            continue
        level = str(rec.get("level") or rec.get("levelname") or "").upper()
        if level in ("WARNING", "ERROR", "CRITICAL"):
            keys = ("error", "error_type", "exc_info", "exception")
            detail = str(next((rec[k] for k in keys if rec.get(k)), ""))
            detail = detail.splitlines()[-1] if detail else ""
            counts[f"{level} {rec.get('message', '')} {detail}"[:150]] += 1
    return [f"{n:>6} x {msg}" for msg, n in counts.most_common(top)]


def log_notes(apps: list[UvicornApp]) -> list[str]:
    """The WARNING+ summary of each app's log, as note lines."""
    notes: list[str] = []
    for app in apps:
        lines = log_summary(app.log)
        if lines:
            notes.append(f"  {app.name} log, WARNING and above (top {len(lines)}):")
            notes += [f"    {ln}" for ln in lines]
    return notes

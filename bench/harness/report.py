"""What a benchmark prints: the machine header, tables, warnings, JSON and `--results FILE`."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness.procs import busy_cores
from bench.harness.stats import rounded


@dataclass
class Output:
    """Prints lines and keeps them, so `--results FILE` gets what the terminal got."""

    results: Path | None = None
    lines: list[str] = field(default_factory=list)

    def __call__(self, *lines: str) -> None:
        for line in lines or ("",):
            print(line, flush=True)
            self.lines.append(line)

    def table(self, header: str, rows: Iterable[str]) -> None:
        self(header, "-" * len(header), *rows, "")

    def save(self, lines: Sequence[str] | None = None) -> None:
        """Write the printed lines (or `lines`) to `--results FILE`, if one was given."""
        if self.results is None:
            return
        self.results.write_text("\n".join(self.lines if lines is None else lines) + "\n")
        print(f"\nwritten to {self.results}")

    def json(self, machine: Mapping[str, object], results: Sequence[Any]) -> None:
        self(json.dumps({"machine": machine, "results": rounded(list(results))}))


def versions(*modules: Any) -> dict[str, str]:
    """`name=version` of each module (its `__version__` or `VERSION`)."""
    out = {}
    for m in modules:
        name = m.__name__.split(".")[0]
        out[name] = str(getattr(m, "__version__", None) or getattr(m, "VERSION", "?"))
    return out


def machine(**extra: str) -> dict[str, str]:
    """CPUs, Python and the platform, then `extra` (library and server versions)."""
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }


def machine_detail(pg_version: str) -> dict[str, str]:
    """CPU model, memory and kernel, for a results file."""
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": f"{len(os.sched_getaffinity(0))} ({model})",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg_version,
    }


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "-"
    text = out.stdout or out.stderr
    return text.split()[1] if text and len(text.split()) > 1 else "-"


def command_line() -> str:
    """How this run was started, including deploy.testenv when it is the parent."""
    own = shlex.join([sys.executable, *sys.argv])
    with contextlib.suppress(OSError):
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        words = [w.decode(errors="replace") for w in parent]
        if "deploy.testenv" in words:
            return shlex.join(words)
    return own


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def background_load(out: Output) -> None:
    """Say how busy the machine is before the start (well above 0: figures understate it)."""
    background = await busy_cores(1.0)
    out(f"  other load before the start: {background:.2f} cores busy on an idle bench")
    if background > 0.2:
        out("  WARNING: the machine is not idle; every figure below will be lower")
    out()


def noisy_warning(out: Output, cpus: Iterable[Mapping[str, float]], extra: str = "") -> None:
    """The closing warning when other processes kept cores busy during a run."""
    noisy = max((c.get("other", 0.0) for c in cpus), default=0.0)
    if noisy > 0.25:
        out(
            f"WARNING: other processes kept up to {noisy:.2f} cores busy during a run (column "
            f"'other'): throughput and latency understate this machine{extra}"
        )


Stages = dict[str, dict[str, float | None]]


def stage_table(
    out: Output,
    rows: Sequence[tuple[str, Stages]],
    stages: Sequence[tuple[str, str]],
    *,
    label: int = 18,
    cell: int = 30,
) -> None:
    """Where the latency goes: p50 / p99 per stage per load, then what each stage holds."""
    if not any(s for _, s in rows):
        return
    lines = []
    for load, by_stage in rows:
        cells = []
        for name, _ in stages:
            qs = by_stage.get(name, {})
            p50, p99 = qs.get("p50"), qs.get("p99")
            text = "-" if p50 is None or p99 is None else f"{p50:.1f} / {p99:.1f} ms"
            cells.append(f"{text:>{cell}}")
        lines.append(f"{load:<{label}}" + "".join(cells))
    header = f"{'load':<{label}}" + "".join(f"{n + ' p50/p99':>{cell}}" for n, _ in stages)
    out(header, "-" * len(header), *lines)
    out(*(f"  {name}: {meaning}" for name, meaning in stages), "")


async def header(out: Output, title: str, info: Mapping[str, str], *settings: str) -> None:
    """Title, machine line, the run's settings, and how busy the machine was before."""
    out(title, "  " + "  ".join(f"{k}={v}" for k, v in info.items()), *settings)
    await background_load(out)


def flags(*, late_p99_ms: float, achieved: float, rate: float, left: int, what: str) -> list[str]:
    """Warnings that open a row's note: backlog at the start, a lagging publisher, a
    rate below what was offered; then how late the publisher was."""
    note = []
    if achieved < 0.97 * rate:
        note.append("BELOW OFFERED")
    if late_p99_ms > 5:
        note.append("PUBLISHER LAGGED")
    if left:
        note.append(f"STARTED WITH {left} EARLIER {what}")
    return [*note, f"late p99 {late_p99_ms:.1f} ms"]

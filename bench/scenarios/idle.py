"""Idle cost of `make up`: cores per process with no order, and the doorbell's first hop.

Starts `python -m deploy.local up` (SQLite, embedded broker) on private ports with a fresh
data dir, waits until it is up plus `--settle` seconds, then counts the CPU time
(`/proc/<pid>/stat` utime+stime) of the launcher and every process under it over
`--window` seconds with no order. With `--rings N` (under `deploy.testenv`, which names
its broker) it also times, for each `--doorbell-waits`, how long after an acknowledged
publish a doorbell listener in this process hears the ring: what an idle spell adds to
the first hop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.cli import Scenario, floats
from shared.bus import BusConfig, KafkaBus, OutgoingMessage
from shared.idle import Doorbell

ROOT = Path(__file__).resolve().parents[2]
PORTS = ("ORDER", "SUPPLIER", "NOTIFY", "METRICS", "CONSOLE", "SIMULATOR", "MARKETPLACE_SIM")
TICK = os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [
                    int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
        except OSError:
            continue
    return found


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return "?"
    if any("tansu" in a for a in argv):
        return "tansu"
    if "deploy.local" in argv:
        return "launcher"
    app = next((a for a in argv if a.endswith(":create_app")), None)
    return app.split(".")[1] if app else argv[0]


def _cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def _launch(env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.local", "up"], cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


async def idle_cores(args: argparse.Namespace) -> dict[str, float]:
    base = random.randrange(20000, 40000, 10)
    data = tempfile.mkdtemp(prefix="dropship-idle-")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")}
    env.pop("DROPSHIP_KAFKA_BOOTSTRAP", None)
    env.update({f"DROPSHIP_{n}_PORT": str(base + i) for i, n in enumerate(PORTS)})
    env.update(DROPSHIP_EMBEDDED_KAFKA_PORT=str(base + 9), DROPSHIP_DATA_DIR=data)
    env.update(dict(kv.split("=", 1) for kv in args.env))
    out = Path(data) / "launcher.out"
    launcher = _launch(env, out)
    try:
        deadline = time.monotonic() + 300
        while b"Dropship is up" not in out.read_bytes():
            if launcher.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not start: see {out}")
            await asyncio.sleep(1)
        await asyncio.sleep(args.settle)
        pids = _tree(launcher.pid)
        before, started = {p: _cpu(p) for p in pids}, time.monotonic()
        load = os.getloadavg()[0]
        await asyncio.sleep(args.window)
        wall = time.monotonic() - started
        cores: dict[str, float] = {}
        for pid in pids:
            a, b = before[pid], _cpu(pid)
            if a is not None and b is not None:
                cores[_name(pid)] = cores.get(_name(pid), 0.0) + (b - a) / wall
        print(f"idle over {wall:.0f} s, load1 {load:.1f} -> {os.getloadavg()[0]:.1f}:")
        print(f"  whole stack {sum(cores.values()):.3f} cores; " + ", ".join(
            f"{n} {c:.3f}" for n, c in sorted(cores.items(), key=lambda kv: -kv[1])
        ))  # fmt: skip
        return cores
    finally:
        os.kill(launcher.pid, signal.SIGINT)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)


async def ring_latency(bootstrap: str, wait_ms: int, rings: int) -> list[float]:
    """Milliseconds from an acknowledged publish (which rings) until a listener hears it."""
    config = BusConfig(bootstrap, "bench-idle", doorbell_wait_ms=wait_ms)
    ringer, bell = KafkaBus(config), Doorbell(KafkaBus(config))
    await ringer.connect(["bench-idle-rings"])
    listening = asyncio.create_task(bell.run())
    heard: list[float] = []
    try:
        await asyncio.sleep(3)  # the listener has joined the doorbell's end
        for _ in range(rings):
            await asyncio.sleep(0.5 + random.uniform(0, wait_ms / 1000))  # any moment
            bell.rung.clear()
            started = time.monotonic()
            await ringer.send_batch([OutgoingMessage("bench-idle-rings", b"k", b"v")])
            await bell.rung.wait()
            heard.append((time.monotonic() - started) * 1000)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await ringer.close()
    return sorted(heard)


async def run(args: argparse.Namespace) -> int:
    if args.window > 0:
        await idle_cores(args)
    bootstrap = os.environ.get("DROPSHIP_TEST_KAFKA_BOOTSTRAP")
    if args.rings and not bootstrap:
        print("--rings needs a broker: run under `python -m deploy.testenv --`")
        return 2
    for wait in args.doorbell_waits if args.rings and bootstrap else []:
        lat = await ring_latency(bootstrap or "", int(wait), args.rings)
        print(
            f"doorbell wait {wait:.0f} ms: ring heard p50 {statistics.median(lat):.0f} ms, "
            f"p90 {lat[int(len(lat) * 0.9)]:.0f} ms, max {lat[-1]:.0f} ms ({len(lat)} rings)"
        )
    return 0


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--window", type=float, default=60.0, help="seconds measured (0: skip)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds after start-up first")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the stack")
    ap.add_argument("--rings", type=int, default=0, help="doorbell rings timed per wait")
    ap.add_argument("--doorbell-waits", type=floats, default=[200.0, 1000.0, 2000.0])


SCENARIO = Scenario("idle", __doc__ or "", options, run)

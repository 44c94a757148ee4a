"""The whole system as `make up` runs it: `python -m deploy.local up` in a session of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness import procs
from bench.harness.clock import perf
from deploy.seed import DEMO_SUPPLIERS

API_KEY = "dev-api-key"
SERVICES = ("order", "supplier", "notify", "metrics", "simulator")
EXTRA = ("console", "marketplace_sim")
"""Started too (their CPU is counted when their port is in `env`), never waited for."""


@dataclass
class Stack:
    """`python -m deploy.local up` with `env` (ports, databases), and the processes it started.

    Ready means every service answers its probe and the demo suppliers are seeded.
    """

    env: dict[str, str]
    folder: Path
    urls: dict[str, str] = field(default_factory=dict)
    launcher: subprocess.Popen[bytes] | None = None
    pids: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        with (self.folder / "up.log").open("ab") as log:
            self.launcher = subprocess.Popen(
                [sys.executable, "-m", "deploy.local", "up"],
                cwd=procs.REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, name: str = "up") -> str:
        return procs.log_tail(self.folder / ("up.log" if name == "up" else f"logs/{name}.log"), 40)

    async def wait_ready(self, within: float = 180.0) -> None:
        deadline = perf() + within
        async with httpx.AsyncClient(timeout=5) as client:
            for name, url in self.urls.items():
                probe = "/healthz" if name == "simulator" else "/readyz"
                while True:
                    if self.launcher is None or self.launcher.poll() is not None:
                        raise RuntimeError(f"deploy.local exited:\n{self.log_tail()}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url + probe)).status_code == 200:
                            break
                    if perf() > deadline:
                        raise RuntimeError(f"{name} not ready:\n{self.log_tail(name)}")
                    await asyncio.sleep(0.3)
            while True:  # the launcher seeds the demo suppliers once every service is up
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    r = await client.get(
                        self.urls["supplier"] + "/v1/suppliers", headers={"X-API-Key": API_KEY}
                    )
                    keys = {s["supplier_key"] for s in r.json()["items"]}
                    up = "Dropship is up" in (self.folder / "up.log").read_text(errors="replace")
                    if {k for k, *_ in DEMO_SUPPLIERS} <= keys and up:
                        break
                if perf() > deadline:
                    raise RuntimeError(f"demo data not seeded:\n{self.log_tail()}")
                await asyncio.sleep(0.3)

    def find_pids(self) -> None:
        """The uvicorn process of each service (by `--port P` on its command line), tansu."""
        names = (*SERVICES, *EXTRA)
        ports = {
            n: self.env[f"DROPSHIP_{n.upper()}_PORT"]
            for n in names
            if f"DROPSHIP_{n.upper()}_PORT" in self.env
        }
        broker_port = self.env["DROPSHIP_EMBEDDED_KAFKA_PORT"]
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if "uvicorn" in argv and "--port" in argv:
                port = argv[argv.index("--port") + 1]
                self.pids |= {name: int(entry.name) for name, p in ports.items() if p == port}
            elif any("tansu" in a for a in argv[:1]) and any(broker_port in a for a in argv):
                self.pids["broker"] = int(entry.name)
        if self.launcher is not None:
            self.pids["launcher"] = self.launcher.pid
        missing = [n for n in (*SERVICES, "broker") if n not in self.pids]
        if missing:
            raise RuntimeError(f"processes not found: {missing}")

    def stop(self) -> None:
        if self.launcher is None or self.launcher.poll() is not None:
            return
        self.launcher.send_signal(signal.SIGINT)
        try:
            self.launcher.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.launcher.pid, signal.SIGKILL)
            self.launcher.wait(10)

"""Run services in-process (ASGI) or as real uvicorn processes, for the tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from shared.infra import free_port
from shared.runtime import ServiceRuntime

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class InProcessService:
    app: FastAPI
    client: httpx.AsyncClient
    runtime: ServiceRuntime[Any]


@contextlib.asynccontextmanager
async def in_process(
    create_app: Callable[[Any], FastAPI], settings: Any
) -> AsyncIterator[InProcessService]:
    """Start an app's lifespan and talk to it over ASGI."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield InProcessService(app, client, app.state.runtime)


SIMULATOR_APP = "rigs.supplier_simulator.app:create_app"


@dataclass
class ServiceProcess:
    """A service in its own uvicorn process, as `make up` runs it."""

    name: str
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    app: str | None = None
    """The ASGI factory; `services.<name>.app:create_app` unless given (rigs live elsewhere)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True, extra_env: dict[str, str] | None = None) -> ServiceProcess:
        env = {**os.environ, **self.env, **(extra_env or {})}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    self.app or f"services.{self.name}.app:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout}s: {self.log_tail()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def terminate(self) -> None:
        """Ask it to stop without waiting (`stop` then waits): processes stop together."""
        if self.process and self.process.poll() is None:
            self.process.terminate()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def service_process(name: str, env: dict[str, str], log_dir: Path) -> ServiceProcess:
    port = free_port()
    upper = name.upper()
    full_env = {**env, f"DROPSHIP_{upper}_PORT": str(port)}
    return ServiceProcess(name, full_env, port, log_dir / f"{name}.log")


@dataclass
class ServedApp:
    """An app served over real HTTP from this process (so other processes can call it)."""

    app: FastAPI
    url: str
    client: httpx.AsyncClient
    runtime: ServiceRuntime[Any]


@contextlib.asynccontextmanager
async def served(
    create_app: Callable[[Any], FastAPI], settings: Any, port: int
) -> AsyncIterator[ServedApp]:
    """Run an app with uvicorn on `port` inside the test's event loop."""
    import asyncio

    import uvicorn

    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    try:
                        task.result()
                    except SystemExit as exc:  # uvicorn's way to say it could not start
                        raise RuntimeError(f"the app did not start on port {port}") from exc
                    raise RuntimeError(f"the app stopped before it started on port {port}")
                await asyncio.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield ServedApp(app, url, client, app.state.runtime)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)

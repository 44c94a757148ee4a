"""The production shape, run: compose's or the k8s overlay's workloads, each in its namespace.

The manifests say what runs (command, environment, ports); only what the image would
supply is mapped to this machine (`python`/`uvicorn` -> this repository's venv, working
directory /app -> the repository root, the data folder /app/var -> a folder per service).
The broker (tansu) and PostgreSQL stand in for the images of kafka and postgres, each in
its own namespace under the names the manifests use.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from shared.infra import PostgresCluster, postgres_bin, tansu_binary
from tests.support.netns import Host, Lan

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
IMAGE_HOME = "/app"
IMAGE_ENV = {  # deploy/Dockerfile's ENV and WORKDIR, as this machine has them
    "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
    "PYTHONPATH": str(ROOT),
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "DROPSHIP_DATA_DIR": "/app/var",
}

BROKER_STAND_IN = {"DROPSHIP_KAFKA_ENABLE_IDEMPOTENCE": "false"}
"""The one setting that follows the broker swap rather than the manifests: tansu (the
Kafka-protocol broker on this machine, memory storage) has no idempotent producer
(InitProducerId fails), which Apache Kafka has."""


@dataclass
class Workload:
    """One service as a manifest describes it: command, environment, container port."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    init: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    """Commands run to completion first, each with its environment (k8s init containers)."""
    healthcheck: list[str] | None = None
    """The container's own probe command (compose `healthcheck: [CMD, ...]`)."""


def image_command(command: list[str]) -> list[str]:
    """The image's PATH starts with its venv: `python`, `uvicorn` are this repository's."""
    head = command[0]
    if "/" not in head and (VENV_BIN / head).exists():
        return [str(VENV_BIN / head), *command[1:]]
    return list(command)


def image_env(env: dict[str, str], data_dir: Path) -> dict[str, str]:
    """The image's environment under the manifest's; paths inside the image mapped here."""
    merged = {**IMAGE_ENV, "HOME": str(data_dir), **env}
    merged |= {k: v for k, v in BROKER_STAND_IN.items() if k in merged}
    for name, value in merged.items():
        if value == IMAGE_HOME or value.startswith(IMAGE_HOME + "/"):
            merged[name] = str(data_dir / value.removeprefix(IMAGE_HOME).strip("/"))
    return merged


@dataclass
class Stack:
    """Processes of one run, each in its host's namespace; `close` stops them all."""

    lan: Lan
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)
    started: dict[str, tuple[Workload, Host]] = field(default_factory=dict)
    """Service name -> the base URL its published port has on the test's side."""
    _pg: PostgresCluster | None = None

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def tail(self, name: str, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def spawn(self, name: str, host: Host, argv: list[str], env: dict[str, str]) -> None:
        out: IO[bytes]
        with self.log(name).open("ab") as out:
            self.processes[name] = self.lan.popen(
                host, argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    # --- the infrastructure the images stood for -------------------------------------------

    def postgres(self, host: Host, user: str, password: str, database: str, init_sql: Path) -> None:
        """PostgreSQL on host:5432, password auth over TCP, the image's init script run once."""
        with tempfile.NamedTemporaryFile("w", prefix="dropship-pw-", delete=False) as f:
            f.write(password + "\n")  # read by initdb as the postgres user
        pwfile = Path(f.name)
        pwfile.chmod(0o644)
        prefix = self.lan.argv(host, [])

        class InNamespace(PostgresCluster):
            def _as_owner(self) -> list[str]:
                return [*prefix, *super()._as_owner()]

        self._pg = InNamespace(
            port=5432,
            user=user,
            listen=host.ip,
            initdb_args=(f"--pwfile={pwfile}", "--auth-host=scram-sha-256"),
        ).start()
        pwfile.unlink()
        assert self._pg.root is not None
        with (self._pg.datadir / "pg_hba.conf").open("a") as hba:
            hba.write("host all all all scram-sha-256\n")  # as the postgres image allows
        reload = [str(postgres_bin() / "pg_ctl"), "-D", str(self._pg.datadir), "reload"]
        subprocess.run([*self._pg._as_owner(), *reload], check=True, stdout=subprocess.DEVNULL)
        psql = [
            *self.lan.argv(host, []),
            *self._pg._as_owner()[len(prefix) :],
            str(postgres_bin() / "psql"),
            "-h",
            str(self._pg.root),
            "-p",
            "5432",
            "-U",
            user,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
        ]
        subprocess.run([*psql, "-d", "postgres", "-c", f'CREATE DATABASE "{database}"'], check=True)
        subprocess.run([*psql, "-d", database, "-f", "-"], input=init_sql.read_bytes(), check=True)

    def kafka(self, host: Host, port: int, advertised: str) -> None:
        """The tansu broker listening on host:port, advertising `advertised` (host:port)."""
        argv = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://{host.ip}:{port}",
            "--advertised-listener-url",
            f"tcp://{advertised}",
        ]
        self.spawn("kafka", host, argv, {"PATH": IMAGE_ENV["PATH"]})

    def smtp(self, host: Host, port: int) -> Path:
        """aiosmtpd on host:port storing every message in a Maildir, which is returned."""
        maildir = self.workdir / "maildir"
        argv = [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-u",
            "-l",
            f"{host.ip}:{port}",
            "-c",
            "aiosmtpd.handlers.Mailbox",
            str(maildir),
        ]
        self.spawn("smtp", host, argv, {**IMAGE_ENV, "HOME": str(self.workdir)})
        return maildir

    # --- the application ---------------------------------------------------------------------

    def run(self, workload: Workload, host: Host, publish: bool = True) -> None:
        """Init commands to completion, then the service; its port published to the test."""
        data = self.workdir / workload.name
        data.mkdir(exist_ok=True)
        env = image_env(workload.env, data)
        for command, init_env in workload.init:
            done = subprocess.run(
                self.lan.argv(host, image_command(command)),
                env=image_env(init_env, data),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{workload.name} init failed:\n{done.stderr[-3000:]}"
        self.spawn(workload.name, host, image_command(workload.command), env)
        self.started[workload.name] = (workload, host)
        if publish:
            port = self.lan.publish(host, workload.port)
            self.published[workload.name] = f"http://127.0.0.1:{port}"

    def exec(self, name: str, command: list[str]) -> str:
        """A one-off command beside a running service (`docker compose run`, `kubectl exec`)."""
        workload, host = self.started[name]
        done = subprocess.run(
            self.lan.argv(host, image_command(command)),
            env=image_env(workload.env, self.workdir / name),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{command} in {name} failed:\n{done.stderr[-3000:]}"
        return done.stdout

    def wait_ready(self, name: str, probe: str = "/readyz", timeout: float = 90) -> None:
        url = self.published[name] + probe
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise AssertionError(f"{name} exited {process.returncode}:\n{self.tail(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise AssertionError(f"{name} not ready after {timeout}s:\n{self.tail(name)}")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._pg is not None:
            self._pg.stop()


def run_to_failure(lan: Lan, host: Host, workload: Workload, workdir: Path) -> tuple[int, str]:
    """Start a workload that should refuse its configuration; its exit code and output."""
    data = workdir / workload.name
    data.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        lan.argv(host, image_command(workload.command)),
        env=image_env(workload.env, data),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def environ_without_dropship() -> dict[str, Any]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}

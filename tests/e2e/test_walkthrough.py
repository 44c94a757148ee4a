"""The README walkthrough, run as a script against `make up`'s launcher, so it cannot drift."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deploy import walkthrough
from shared.infra import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("order", "supplier", "notify", "metrics", "simulator")


def _readme_walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Five-minute walkthrough", 1)[1]
    return section.split("```sh", 1)[1].split("```", 1)[0]


def test_the_readme_places_the_order_the_script_places() -> None:
    block = _readme_walkthrough()
    body = re.search(r"-d '(\{.*?\})'", block, re.S)
    assert body is not None, "the README's first order has no body"
    assert json.loads(body.group(1)) == walkthrough.ORDER
    assert "deploy.walkthrough" in block
    for line in block.splitlines():
        if "8004/v1/" in line:
            assert "X-API-Key" in line, f"the metrics API needs a key: {line}"


def _wait_ready(url: str, deadline: float, probe: str) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + probe, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready")


def test_the_walkthrough_runs_against_make_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env["DROPSHIP_DATA_DIR"] = str(tmp_path / "var")
    env["DROPSHIP_EMBEDDED_KAFKA_PORT"] = str(free_port())
    env["DROPSHIP_MARKETPLACE_SIM_PORT"] = str(free_port())
    env["DROPSHIP_CONSOLE_PORT"] = str(free_port())
    for name in SERVICES:
        env[f"DROPSHIP_{name.upper()}_PORT"] = str(free_port())
    urls = {n: f"http://127.0.0.1:{env[f'DROPSHIP_{n.upper()}_PORT']}" for n in SERVICES}
    log = tmp_path / "up.log"
    with log.open("ab") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "deploy.local", "up"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        for name, url in urls.items():
            _wait_ready(url, deadline, "/healthz" if name == "simulator" else "/readyz")
        script = subprocess.run(
            [sys.executable, "-m", "deploy.walkthrough"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert script.returncode == 0, script.stdout[-3000:] + script.stderr[-3000:]
        assert "walkthrough done" in script.stdout
    finally:
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(60) == 0, log.read_text()[-3000:]

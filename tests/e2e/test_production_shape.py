"""The production shape, run: docker-compose.yml and the k8s production overlay, for real.

Compose is resolved by the real Compose CLI and the overlay rendered by kustomize; each
service then runs from that configuration (its command and environment) in its own network
namespace, so its loopback is its own and the manifests' host names resolve to the right
namespace, with the broker, PostgreSQL, an SMTP server and the supplier simulator in theirs.
A storefront order placed through the order service's published port is routed to the
simulated supplier, ships and is delivered; the customer gets the e-mail; the KPIs show it.
And a manifest whose notify reaches the order service over loopback is caught.
"""

from __future__ import annotations

import json
import mailbox
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest

from shared.testing import eventually
from tests.support import netns
from tests.support.edge import make_certificate
from tests.support.manifests import (
    compose_config,
    compose_init_sql,
    compose_workloads,
    k8s_workloads,
    namespace_of,
    pii_key,
    render_overlay,
    secret_keys,
    strong_secret,
    write_env_file,
)
from tests.support.netns import Lan
from tests.support.prodshape import IMAGE_ENV, ROOT, Stack, Workload, run_to_failure

PG_USER, PG_DB = "dropship", "dropship"
SIM_PORT = 8010
SMTP_HOST, SMTP_PORT = "smtp-relay", 25
SIMULATOR = "supplier-sim"  # a supplier's API on the LAN, as the services would reach one
INIT_SQL = ROOT / "deploy" / "postgres" / "init.sql"  # one database per service
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
EDGE = [sys.executable, "-m", "tests.support.edge"]


@pytest.fixture(autouse=True)
def _needs_namespaces() -> None:
    reason = netns.available()
    if reason:  # CI runs as root: this never happens there
        pytest.fail(f"the production-shape run cannot start: {reason}")


@dataclass
class Secrets:
    """What an operator puts in `.env` / the `dropship-secrets` Secret: strong, generated."""

    storefront: str
    admin: str
    values: dict[str, str]


def generated_secrets(postgres_password: str, smtp_host: str = SMTP_HOST) -> Secrets:
    storefront, admin = strong_secret(), strong_secret()
    values = {
        "DROPSHIP_API_KEYS": storefront,
        "DROPSHIP_ADMIN_API_KEYS": admin,
        "DROPSHIP_SERVICE_TOKEN": strong_secret(),
        "DROPSHIP_PII_KEY": pii_key(),
        "DROPSHIP_TRACKING_SECRET": strong_secret(),
        "DROPSHIP_SMTP_URL": f"smtp://{smtp_host}:{SMTP_PORT}",
        "DROPSHIP_CONSOLE_SESSION_SECRET": strong_secret(),
        "POSTGRES_PASSWORD": postgres_password,
    }
    return Secrets(storefront, admin, values)


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan() as lan:
        yield lan


# --- compose ------------------------------------------------------------------------------


def resolved_compose(tmp_path: Path, secrets: Secrets) -> dict[str, Any]:
    return compose_config(write_env_file(tmp_path / "prod.env", secrets.values), tmp_path)


async def test_compose_runs_the_dropship_story(lan: Lan, tmp_path: Path) -> None:
    secrets = generated_secrets(postgres_password=uuid.uuid4().hex)
    config = resolved_compose(tmp_path, secrets)
    apps = compose_workloads(config)
    assert {"order", "supplier", "notify", "metrics", "console"} <= apps.keys()
    hosts = {name: lan.add(name) for name in config["services"]}
    hosts[SMTP_HOST] = lan.add(SMTP_HOST)
    hosts[SIMULATOR] = lan.add(SIMULATOR)
    stack = Stack(lan, tmp_path)
    try:
        pg_env = config["services"]["postgres"]["environment"]
        stack.postgres(
            hosts["postgres"],
            pg_env["POSTGRES_USER"],
            pg_env["POSTGRES_PASSWORD"],
            pg_env["POSTGRES_DB"],
            compose_init_sql(config),
        )
        advertised = config["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        stack.kafka(hosts["kafka"], 9092, advertised.removeprefix("PLAINTEXT://"))
        await run_the_story(stack, hosts, apps, secrets)
    finally:
        stack.close()


async def run_the_story(
    stack: Stack,
    hosts: dict[str, netns.Host],
    apps: dict[str, Workload],
    secrets: Secrets,
    simulator_env: dict[str, str] | None = None,
) -> None:
    maildir = stack.smtp(hosts[SMTP_HOST], SMTP_PORT)
    supplier_public = apps["supplier"].env["DROPSHIP_SUPPLIER_PUBLIC_URL"]
    # the simulated supplier lives on our own network: production refuses internal supplier
    # addresses unless the operator allow-lists them, as for an on-premise supplier
    apps["supplier"].env["DROPSHIP_SUPPLIER_ALLOWED_HOSTS"] = SIMULATOR
    stack.run(simulator(supplier_public, secrets, simulator_env), hosts[SIMULATOR])
    for name, workload in apps.items():
        stack.run(workload, hosts[name])
    stack.wait_ready(SIMULATOR, "/healthz")
    for name, workload in apps.items():
        stack.wait_ready(name)
        if workload.healthcheck:  # the container's own probe passes inside its namespace
            stack.exec(name, workload.healthcheck)
    # each service has its own loopback: the order service is `order`, never 127.0.0.1
    order_port = apps["order"].port
    netns.connect_in(hosts["notify"].ns, (hosts["order"].ip, order_port)).close()
    with pytest.raises(ConnectionRefusedError):
        netns.connect_in(hosts["notify"].ns, ("127.0.0.1", order_port))
    order_id = await tell_the_story(
        stack.published, f"http://{SIMULATOR}:{SIM_PORT}", secrets, maildir
    )
    await ops_see_it_in_the_console(stack, order_id)


async def ops_see_it_in_the_console(stack: Stack, order_id: str) -> None:
    """The first admin made with the documented one-off command signs in (password + TOTP)
    through the console's published port and sees the order the console read from `order`."""
    command = ["python", "-m", "services.console.users", "create", "--email", "ops@example.com"]
    creds = json.loads(stack.exec("console", [*command, "--role", "admin", "--with-totp"]))
    async with httpx.AsyncClient(base_url=stack.published["console"], timeout=15) as c:

        async def csrf(path: str) -> str:
            found = CSRF.search((await c.get(path)).text)
            assert found, path
            return found.group(1)

        login = {"email": creds["email"], "password": creds["password"]}
        step1 = await c.post("/login", data={"csrf": await csrf("/login"), **login})
        assert step1.status_code == 303, step1.text
        code = pyotp.TOTP(creds["totp_secret"]).now()
        step2 = await c.post("/login/totp", data={"csrf": await csrf("/login/totp"), "code": code})
        assert step2.status_code == 303, step2.text
        page = await c.get(f"/orders/{order_id}")
        assert page.status_code == 200, page.text[-2000:]
        assert "PROD-1001" in page.text and "delivered" in page.text


def simulator(
    supplier_public_url: str, secrets: Secrets, extra: dict[str, str] | None = None
) -> Workload:
    """The supplier simulator as a supplier would run it: reaching our public URL only."""
    env = {
        **(extra or {}),
        "DROPSHIP_SIMULATOR_HOST": "0.0.0.0",
        "DROPSHIP_SIMULATOR_PORT": str(SIM_PORT),
        "DROPSHIP_SIMULATOR_TRACKING_URL": f"{supplier_public_url}/v1/webhooks/tracking",
        "DROPSHIP_TRACKING_SECRET": secrets.values["DROPSHIP_TRACKING_SECRET"],
    }
    return Workload(SIMULATOR, ["python", "-m", "rigs.supplier_simulator"], env, SIM_PORT)


# --- the k8s production overlay -----------------------------------------------------------


def k8s_secret(secrets: Secrets, pg_host: str, pg_password: str) -> dict[str, str]:
    """`dropship-secrets` as an operator makes it from secrets.env.example's keys."""
    out = {}
    for key in secret_keys():
        if key in secrets.values:
            out[key] = secrets.values[key]
        elif key.endswith("_DATABASE_URL"):
            db = key.split("_")[1].lower() + "_db"
            out[key] = f"postgresql+asyncpg://{PG_USER}:{pg_password}@{pg_host}:5432/{db}"
        elif key not in ("DROPSHIP_SMS_WEBHOOK_URL", "DROPSHIP_OPS_WEBHOOKS"):  # optional
            out[key] = strong_secret()
    return out


async def test_k8s_production_overlay_runs_the_dropship_story(lan: Lan, tmp_path: Path) -> None:
    docs = render_overlay()
    namespace = namespace_of(docs)
    pg_password, pg_host = uuid.uuid4().hex, "postgres.example.com"
    secrets = generated_secrets(pg_password)
    apps = k8s_workloads(docs, k8s_secret(secrets, pg_host, pg_password))
    assert {"order", "supplier", "notify", "metrics", "console"} <= apps.keys()
    config = apps["order"].env
    hosts = {
        name: lan.add(name, f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local")
        for name in apps
    }
    kafka_host, kafka_port = config["DROPSHIP_KAFKA_BOOTSTRAP"].rsplit(":", 1)
    hosts["kafka"] = lan.add(kafka_host)
    hosts["postgres"] = lan.add(pg_host)
    hosts[SMTP_HOST] = lan.add(SMTP_HOST)
    hosts[SIMULATOR] = lan.add(SIMULATOR)
    # suppliers call back at the public URL: an ingress terminating TLS in front of `supplier`
    public = urlsplit(apps["supplier"].env["DROPSHIP_SUPPLIER_PUBLIC_URL"])
    assert public.hostname
    hosts["ingress"] = lan.add(public.hostname)
    cert, key = make_certificate(tmp_path, public.hostname)
    stack = Stack(lan, tmp_path)
    try:
        if config.get("DROPSHIP_OTEL_ENDPOINT"):
            otel = urlsplit(config["DROPSHIP_OTEL_ENDPOINT"])
            assert otel.hostname
            hosts["otel"] = lan.add(otel.hostname)
            listen = f"{hosts['otel'].ip}:{otel.port or 80}"
            stack.spawn("otel", hosts["otel"], [*EDGE, "sink", listen], IMAGE_ENV)
        ingress_listen = f"{hosts['ingress'].ip}:{public.port or 443}"
        upstream = f"supplier:{apps['supplier'].port}"
        argv = [*EDGE, "ingress", str(cert), str(key), ingress_listen, upstream]
        stack.spawn("ingress", hosts["ingress"], argv, IMAGE_ENV)
        stack.postgres(hosts["postgres"], PG_USER, pg_password, PG_DB, INIT_SQL)
        stack.kafka(hosts["kafka"], int(kafka_port), config["DROPSHIP_KAFKA_BOOTSTRAP"])
        await run_the_story(stack, hosts, apps, secrets, {"SSL_CERT_FILE": str(cert)})
    finally:
        stack.close()


# --- the loopback mistake ----------------------------------------------------------------

LOOPBACK_MISTAKES = [
    ("notify", "DROPSHIP_ORDER_URL", "http://127.0.0.1:8001"),
    ("notify", "DROPSHIP_NOTIFY_PUBLIC_URL", "http://localhost:8003"),
    ("supplier", "DROPSHIP_SUPPLIER_PUBLIC_URL", "http://127.0.0.1:8002"),
]


def workloads_of(manifests: str, tmp_path: Path) -> dict[str, Workload]:
    secrets = generated_secrets(postgres_password=uuid.uuid4().hex)
    if manifests == "compose":
        return compose_workloads(resolved_compose(tmp_path, secrets))
    return k8s_workloads(render_overlay(), k8s_secret(secrets, "postgres", uuid.uuid4().hex))


@pytest.mark.parametrize("manifests", ["compose", "k8s"])
@pytest.mark.parametrize(("service", "variable", "url"), LOOPBACK_MISTAKES)
def test_a_loopback_url_in_the_manifests_is_caught(
    lan: Lan, tmp_path: Path, manifests: str, service: str, variable: str, url: str
) -> None:
    """The resolved manifests with one service URL mutated to loopback: in its own namespace
    that is the service itself, so production refuses to start, naming the variable."""
    workload = workloads_of(manifests, tmp_path)[service]
    assert variable in workload.env, f"{manifests} does not set {variable} for {service}"
    assert "127.0.0.1" not in workload.env[variable] and "localhost" not in workload.env[variable]
    workload.env[variable] = url
    code, output = run_to_failure(lan, lan.add(service), workload, tmp_path)
    assert code != 0
    assert variable in output and "loopback" in output, output[-2000:]


# --- the story ----------------------------------------------------------------------------


async def tell_the_story(
    urls: dict[str, str], simulator_url: str, secrets: Secrets, maildir: Path
) -> str:
    admin = {"X-API-Key": secrets.admin}
    storefront = {"X-API-Key": secrets.storefront}
    async with httpx.AsyncClient(timeout=15) as c:
        created = await c.post(
            urls["supplier"] + "/v1/suppliers",
            headers=admin,
            json={
                "name": "Acme",
                "supplier_key": "acme",
                "api_base_url": f"{simulator_url}/acme",
                "credentials": {"api_key": "sim-key-acme", "webhook_secret": "sim-secret-acme"},
                "priority": 1,
                "ship_sla_hours": 48,
            },
        )
        assert created.status_code == 201, created.text
        offers = [
            {
                "sku": "PROD-1",
                "supplier_sku": "acme-PROD-1",
                "unit_cost": "4.00",
                "currency": "USD",
                "stock": 50,
                "lead_time_hours": 24,
            }
        ]
        put = await c.put(
            f"{urls['supplier']}/v1/suppliers/{created.json()['id']}/offers",
            json=offers,
            headers=admin,
        )
        assert put.status_code == 200, put.text
        control = {"ship_after_s": 0.5, "deliver_after_s": 0.5}
        steered = await c.put(f"{urls[SIMULATOR]}/_control/acme", json=control)
        assert steered.status_code == 200, steered.text

        placed = await c.post(
            urls["order"] + "/v1/orders",
            headers={**storefront, "Idempotency-Key": f"prod-{uuid.uuid4().hex}"},
            json={
                "channel": "storefront",
                "external_id": "PROD-1001",
                "currency": "USD",
                "customer": {"name": "Ada Park", "email": "ada@example.com", "locale": "en"},
                "shipping_address": {
                    "line1": "1 Market St",
                    "city": "San Francisco",
                    "region": "CA",
                    "postal_code": "94105",
                    "country": "US",
                },
                "lines": [{"sku": "PROD-1", "quantity": 2, "unit_price": "10.00"}],
            },
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]

        async def delivered() -> bool:
            got = await c.get(f"{urls['order']}/v1/orders/{order_id}", headers=storefront)
            return bool(got.json()["status"] == "delivered")

        await eventually(delivered, timeout=60, interval=0.3, what="the order delivered")

        async def mailed() -> list[str]:
            return [s for s in subjects_to(maildir, "ada@example.com") if "on its way" in s]

        await eventually(mailed, timeout=60, interval=0.3, what="the shipping e-mail")

        supplier_id = created.json()["id"]

        async def kpis() -> dict[str, Any] | None:
            today = datetime.now(UTC).date().isoformat()
            query = {"from": today, "to": today, "group_by": "supplier"}
            got = await c.get(urls["metrics"] + "/v1/kpis", params=query, headers=admin)
            body: dict[str, Any] = got.json() if got.status_code == 200 else {}
            by_supplier = {i["key"]: i for i in body.get("items", [])}
            delivered = by_supplier.get(supplier_id, {}).get("deliveries")
            notices = body.get("total", {}).get("notices_sent")
            return body if delivered == 1 and notices == 1 else None

        report = await eventually(kpis, timeout=60, interval=0.3, what="KPIs show the order")
        assert report is not None
        total = report["total"]
        assert total["orders"] == 1 and total["confirmed_orders"] == 1
        assert total["gmv"] == {"USD": "20.00"}
        assert total["gross_margin"] == {"USD": "12.00"}  # 2 x (10.00 - 4.00)
        assert total["notices"] == [
            {"kind": "shipment_dispatched", "channel": "email", "status": "sent", "count": 1}
        ]
        # the storefront key is not an admin key: the KPIs are not public
        assert (await c.get(urls["metrics"] + "/v1/kpis", headers=storefront)).status_code in (
            401,
            403,
        )
    return str(order_id)


def subjects_to(maildir: Path, recipient: str) -> list[str]:
    if not maildir.exists():
        return []
    box = mailbox.Maildir(maildir, create=False)
    return [
        str(make_header(decode_header(m["Subject"])))
        for m in box
        if recipient in str(m.get("To", ""))
    ]

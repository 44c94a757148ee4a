"""What the routing bench runs beside the supplier service: the order service's contact
endpoint (the dispatcher reads ship-to there), the service and the simulator as deployed,
and the service's cost counters."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import fastapi
import httpx
import uvicorn

from bench.harness.procs import UvicornApp, clean_env
from shared.crypto import generate_key

COST = re.compile(
    r"^dropship_(db_statements|db_transactions|http_requests)_total(?:\{[^}]*\})?"
    r"\s+([0-9.eE+-]+)$",
    re.MULTILINE,
)


async def costs(base: str) -> dict[str, float]:
    """The supplier service's round trips, transactions and HTTP requests received so far
    (its `/metrics`)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        text = (await client.get(f"{base}/metrics")).text
    out = {"db_statements": 0.0, "db_transactions": 0.0, "http_requests": 0.0}
    for kind, value in COST.findall(text):
        out[kind] += float(value)
    return out


@contextlib.asynccontextmanager
async def contact_stub() -> AsyncIterator[str]:
    """The order service's `GET /v1/orders/{id}/contact` and `POST /v1/contacts:lookup`
    (with `ship_to`), in this process: the dispatcher reads the destinations there before
    placing orders."""
    stub = fastapi.FastAPI()
    ship_to = {
        "name": "Bench Buyer", "phone": "+15550100", "email": "buyer@example.com",
        "line1": "1 Bench Street", "line2": None, "city": "New York", "region": "NY",
        "postal_code": "10001", "country": "US",
    }  # fmt: skip

    @stub.get("/v1/orders/{order_id}/contact")
    async def contact(order_id: str) -> dict[str, str | None]:
        return ship_to

    @stub.post("/v1/contacts:lookup")
    async def lookup(order_ids: list[str] = fastapi.Body(embed=True)) -> dict[str, object]:
        items = [
            {"order_id": i, "redacted": False, "ship_to": ship_to, "ship_to_unavailable": None}
            for i in order_ids
        ]
        return {"items": items, "unknown": []}

    config = uvicorn.Config(stub, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="bench-contact-stub")
    while not server.started:
        if task.done():
            await task  # raises what stopped it
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def apps(
    folder: Path,
    url: str,
    bootstrap: str,
    workers: int,
    one_by_one: bool = False,
    order_url: str = "",
) -> tuple[UvicornApp, UvicornApp]:
    """The supplier service and the simulator, as deployed (not started); `one_by_one`:
    each order in its own routing transaction, as before batched routing."""
    log = folder / "supplier.log"
    supplier = UvicornApp("supplier service", "services.supplier.app:create_app", {}, workers, log)
    supplier.env = clean_env(
        DROPSHIP_SUPPLIER_DATABASE_URL=url,
        DROPSHIP_SUPPLIER_PORT=str(supplier.port),
        DROPSHIP_SUPPLIER_PUBLIC_URL=supplier.base,
        DROPSHIP_KAFKA_BOOTSTRAP=bootstrap,
        DROPSHIP_PII_KEY=generate_key(),
        DROPSHIP_MIGRATE_ON_START="false",
        DROPSHIP_LOG_LEVEL="WARNING",
        DROPSHIP_DATA_DIR=str(folder),
        DROPSHIP_ORDER_URL=order_url,
    )
    if one_by_one:
        supplier.env |= {
            "DROPSHIP_SUPPLIER_ROUTE_IN_BATCHES": "false",
            "DROPSHIP_SUPPLIER_CONSUMER_BATCH_SIZE": "1",
        }
    env = clean_env(
        DROPSHIP_SIMULATOR_SEED="1",
        DROPSHIP_LOG_LEVEL="WARNING",
        DROPSHIP_SIMULATOR_TRACKING_URL=f"{supplier.base}/v1/webhooks/tracking",
    )
    spec = "rigs.supplier_simulator.app:create_app"
    simulator = UvicornApp("simulator", spec, env, 1, folder / "simulator.log", health="/healthz")
    return supplier, simulator

"""A stand-in for the order service's contact endpoint, in its own process, for tests.

It answers `GET /v1/orders/{id}/contact` (service token) with the full ship-to fields for
any order id, and `POST /v1/contacts:lookup` with `ship_to` as the order service does, so
the supplier service can be tested without the order service's database.
`PUT /_control/redacted/{id}` and `PUT /_control/incomplete/{id}` make an order answer as
erased, or with an address missing `line1` and `city`; `GET /_control/asked` lists the
orders asked about, `GET /_control/lookups` the order ids of each lookup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import Body, FastAPI, Header, HTTPException

from shared.infra import free_port
from shared.settings import DEV_SERVICE_TOKEN
from tests.support.services import ServiceProcess

APP = "tests.support.order_contacts:create_app"
ADDRESS = {
    "name": "Ada Lovelace",
    "phone": "+12125550100",
    "email": "ada@example.com",
    "line1": "1 Main St",
    "line2": "Apt 4",
    "city": "New York",
    "region": "NY",
    "postal_code": "10001",
    "country": "US",
}


def create_app(*, lookup: bool = True) -> FastAPI:
    """`lookup` False: an older order service, without `POST /v1/contacts:lookup`."""
    app = FastAPI()
    marked: dict[str, set[str]] = {"redacted": set(), "incomplete": set()}
    asked: list[str] = []

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.put("/_control/{mark}/{order_id}")
    async def mark(mark: str, order_id: str) -> dict[str, str]:
        if mark not in marked:
            raise HTTPException(404)
        marked[mark].add(order_id)
        return {"status": "ok"}

    @app.get("/_control/asked")
    async def asked_about() -> dict[str, list[str]]:
        return {"items": asked}

    lookups: list[list[str]] = []

    def answer(order_id: str) -> dict[str, Any]:
        if order_id in marked["redacted"]:
            erased = dict.fromkeys(("name", "email", "phone"))
            return {"order_id": order_id, **erased, "locale": "en", "redacted": True}
        body = {"order_id": order_id, "locale": "en", "redacted": False, **ADDRESS}
        if order_id in marked["incomplete"]:
            body.update(line1=None, city=None)
        return body

    def authorized(authorization: str) -> None:
        if authorization != f"Bearer {DEV_SERVICE_TOKEN}":
            raise HTTPException(401)

    @app.get("/_control/lookups")
    async def looked_up() -> dict[str, list[list[str]]]:
        return {"items": lookups}

    @app.get("/v1/orders/{order_id}/contact")
    async def contact(order_id: str, authorization: str = Header("")) -> dict[str, Any]:
        authorized(authorization)
        asked.append(order_id)
        return answer(order_id)

    async def look_up(
        order_ids: list[str] = Body(embed=True),
        ship_to: bool = Body(False, embed=True),
        authorization: str = Header(""),
    ) -> dict[str, Any]:
        authorized(authorization)
        asked.extend(order_ids)
        lookups.append(order_ids)
        items = []
        for order_id in order_ids:
            found = answer(order_id)
            item = {k: found[k] for k in ("order_id", "name", "email", "phone", "locale")}
            item["redacted"] = found["redacted"]
            if ship_to:
                redacted = found["redacted"]
                item["ship_to"] = None if redacted else {k: found[k] for k in ADDRESS}
                item["ship_to_unavailable"] = "customer_redacted" if redacted else None
            items.append(item)
        return {"items": items, "unknown": []}

    if lookup:
        app.post("/v1/contacts:lookup")(look_up)

    return app


def contacts_process(log_dir: Path) -> ServiceProcess:
    """The stand-in's process, not started yet (`.start()`)."""
    return ServiceProcess(
        "order-contacts",
        {"DROPSHIP_LOG_JSON": "false"},
        free_port(),
        log_dir / "order-contacts.log",
        app=APP,
    )


class OrderContacts:
    """The controls of a running stand-in."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process

    @property
    def url(self) -> str:
        return self.process.url

    async def mark(self, how: str, order_id: str) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.put(f"{self.url}/_control/{how}/{order_id}")
            response.raise_for_status()

    async def lookups(self) -> list[list[str]]:
        async with httpx.AsyncClient() as client:
            items: list[list[str]] = (await client.get(f"{self.url}/_control/lookups")).json()[
                "items"
            ]
            return items

    async def asked(self) -> list[str]:
        async with httpx.AsyncClient() as client:
            items: list[str] = (await client.get(f"{self.url}/_control/asked")).json()["items"]
            return items

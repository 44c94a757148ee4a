"""A stand-in for the order service's contact endpoint, served over real HTTP for tests.

It answers `GET /v1/orders/{id}/contact` (service token) with the full ship-to fields for
any order id, so the supplier service can be tested without the order service's
database; `redacted` and `incomplete` make chosen orders answer as erased or with an
address missing fields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException

from shared.infra import free_port
from shared.settings import DEV_SERVICE_TOKEN

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


@dataclass
class OrderContacts:
    url: str = ""
    redacted: set[str] = field(default_factory=set)
    incomplete: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/orders/{order_id}/contact")
        async def contact(order_id: str, authorization: str = Header("")) -> dict[str, Any]:
            if authorization != f"Bearer {DEV_SERVICE_TOKEN}":
                raise HTTPException(401)
            self.asked.append(order_id)
            if order_id in self.redacted:
                return {
                    "order_id": order_id,
                    "name": None,
                    "email": None,
                    "phone": None,
                    "locale": "en",
                    "redacted": True,
                }
            body = {"order_id": order_id, "locale": "en", "redacted": False, **ADDRESS}
            if order_id in self.incomplete:
                body.update(line1=None, city=None)
            return body

        return app


@contextlib.asynccontextmanager
async def order_contacts_served() -> AsyncIterator[OrderContacts]:
    book = OrderContacts()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(book.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        book.url = f"http://127.0.0.1:{port}"
        yield book
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)

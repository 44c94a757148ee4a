"""The floor for the intake benchmark: a bare FastAPI endpoint doing one INSERT per order.

    BENCH_BARE_DATABASE_URL=postgresql+asyncpg://... \
        python -m uvicorn --factory bench.bare_app:create_app --workers 2 --no-access-log

POST /v1/orders parses the JSON body with a small pydantic model (fields it does not
know are ignored), inserts one row with SQLAlchemy Core (async), commits and answers
201 with the new id. No auth, no outbox, no broker, no encryption, no middleware.
The engine comes from `shared.db.create_engine` so the database settings (SQLite WAL
and `BEGIN IMMEDIATE`, PostgreSQL pool size) are the order service's.
The table must exist: the intake scenario creates it with `create_table(url)` first.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, DateTime, Integer, MetaData, Numeric, String, Table, insert, text

from shared.db import create_engine

metadata = MetaData()
bare_order = Table(
    "bare_order",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("channel", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("total", Numeric(18, 4), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class LineIn(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1)
    unit_price: Decimal = Field(ge=0)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    channel: str = Field(max_length=32)
    currency: str = Field(min_length=3, max_length=3)
    lines: list[LineIn] = Field(min_length=1)


def create_table(url: str) -> None:
    """Create `bare_order` (blocking; run once before the workers start)."""

    async def _create() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        finally:
            await engine.dispose()

    asyncio.run(_create())


def create_app() -> FastAPI:
    url = os.environ["BENCH_BARE_DATABASE_URL"]
    engine = create_engine(url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(title="bare intake floor", lifespan=lifespan)

    @app.post("/v1/orders", status_code=201)
    async def create_order(body: OrderIn) -> dict[str, str]:
        order_id = str(uuid.uuid4())
        async with engine.begin() as conn:
            await conn.execute(
                insert(bare_order).values(
                    id=order_id,
                    channel=body.channel,
                    currency=body.currency,
                    sku=body.lines[0].sku,
                    quantity=sum(ln.quantity for ln in body.lines),
                    total=sum(ln.unit_price * ln.quantity for ln in body.lines),
                    created_at=datetime.now(UTC),
                )
            )
        return {"id": order_id}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return JSONResponse({"status": "not_ready"}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app

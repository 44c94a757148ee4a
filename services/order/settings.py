"""Typed settings of the order service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    service_name: ClassVar[str] = "order"
    default_port: ClassVar[int] = 8001

    database_url: str | None = Field(None, validation_alias="DROPSHIP_ORDER_DATABASE_URL")
    port: int | None = Field(None, validation_alias="DROPSHIP_ORDER_PORT")

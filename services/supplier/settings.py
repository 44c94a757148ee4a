"""Typed settings of the supplier service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.settings import ServiceSettings


class SupplierSettings(ServiceSettings):
    service_name: ClassVar[str] = "supplier"
    default_port: ClassVar[int] = 8002

    database_url: str | None = Field(None, validation_alias="DROPSHIP_SUPPLIER_DATABASE_URL")
    port: int | None = Field(None, validation_alias="DROPSHIP_SUPPLIER_PORT")

"""Typed settings of the notify service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    service_name: ClassVar[str] = "notify"
    default_port: ClassVar[int] = 8003

    database_url: str | None = Field(None, validation_alias="DROPSHIP_NOTIFY_DATABASE_URL")
    port: int | None = Field(None, validation_alias="DROPSHIP_NOTIFY_PORT")

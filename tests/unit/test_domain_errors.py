"""Domain errors become the JSON error shape once, through the service's mapping table."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from shared.http import ErrorMapping, install_domain_errors, install_error_handlers

pytestmark = pytest.mark.unit


class ShopError(Exception):
    """Root of a pretend service's errors."""


class NotThere(ShopError):
    pass


class GoneAway(NotThere):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.details = [{"field": "id", "reason": "deleted"}]


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_domain_errors(
        app,
        {
            ShopError: ErrorMapping(409, "conflict"),
            NotThere: ErrorMapping(404, "not_found"),
            GoneAway: ErrorMapping(410, "gone", headers={"X-Why": "deleted"}),
        },
    )

    @app.get("/{which}")
    async def route(which: str) -> dict[str, str]:
        raise {"root": ShopError("busy"), "missing": NotThere("no such"), "gone": GoneAway("bye")}[
            which
        ]

    return app


@pytest.mark.parametrize(
    ("which", "status", "code"),
    [("root", 409, "conflict"), ("missing", 404, "not_found"), ("gone", 410, "gone")],
)
async def test_the_most_specific_mapping_wins(which: str, status: int, code: str) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(f"/{which}")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_message_details_and_headers_come_from_the_error() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/gone")
    assert response.json()["error"] == {
        "code": "gone",
        "message": "bye",
        "details": [{"field": "id", "reason": "deleted"}],
    }
    assert response.headers["X-Why"] == "deleted"

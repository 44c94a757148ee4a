"""The four services' HTTP APIs as the console uses them (httpx; the transport is the test seam)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class ApiResult:
    """A service's answer: its JSON on success, or its error message and details. `source`
    names the call it answers (`order GET /v1/returns?status=requested`), so a page can say
    which read failed."""

    status: int
    body: Any = None
    message: str = ""
    details: list[Any] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _result(response: httpx.Response, source: str) -> ApiResult:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        return ApiResult(response.status_code, body, source=source)
    error = body.get("error", {}) if isinstance(body, dict) else {}
    details = error.get("details") if isinstance(error, dict) else None
    message = (error.get("message") if isinstance(error, dict) else None) or response.reason_phrase
    return ApiResult(
        response.status_code,
        body,
        f"{response.status_code}: {message}",
        details if isinstance(details, list) else [],
        source,
    )


class Backends:
    """One client per service, each sending the console's API key."""

    def __init__(
        self,
        urls: dict[str, str],
        api_key: str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._clients = {
            name: httpx.AsyncClient(
                base_url=url,
                headers={"X-API-Key": api_key},
                timeout=timeout,
                transport=transport,
            )
            for name, url in urls.items()
        }

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def call(self, service: str, method: str, path: str, **kwargs: Any) -> ApiResult:
        query = httpx.QueryParams(kwargs.get("params") or {})
        source = f"{service} {method} {path}" + (f"?{query}" if query else "")
        try:
            response = await self._clients[service].request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            message = f"{service} service unreachable ({type(exc).__name__})"
            return ApiResult(503, None, message, source=source)
        return _result(response, source)

    async def get(self, service: str, path: str, **params: Any) -> ApiResult:
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return await self.call(service, "GET", path, params=clean)

    async def post(self, service: str, path: str, json: Any = None) -> ApiResult:
        return await self.call(service, "POST", path, json=json)

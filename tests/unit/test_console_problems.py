"""The console's reads through a fake backend: every failed read becomes a visible problem
naming the service, the call and the reason; a 404, 405 or 422 is not ignored."""

from __future__ import annotations

import httpx

from services.console.clients import Backends
from services.console.inbox import problems


def backend(request: httpx.Request) -> httpx.Response:
    answers = {
        "/v1/returns": httpx.Response(
            422,
            json={"error": {"code": "validation_error", "message": "query.status: not a status"}},
        ),
        "/v1/writebacks": httpx.Response(404, json={"detail": "Not Found"}),
        "/v1/delays": httpx.Response(405, json={"detail": "Method Not Allowed"}),
        "/v1/alerts": httpx.Response(200, json={"items": [], "next_cursor": None}),
    }
    if request.url.host == "down":
        raise httpx.ConnectError("refused", request=request)
    return answers[request.url.path]


async def test_every_failed_read_is_a_problem_with_its_service_call_and_reason():
    urls = {"order": "http://order", "notify": "http://notify", "metrics": "http://down"}
    b = Backends(urls, "key", 1.0, transport=httpx.MockTransport(backend))
    try:
        shown = problems(
            await b.get("order", "/v1/returns", status="nope", limit=100),
            await b.get("order", "/v1/writebacks", status="failed"),
            await b.get("order", "/v1/delays"),
            await b.get("notify", "/v1/alerts", open="true"),
            await b.get("metrics", "/v1/kpis", group_by=None),
        )
    finally:
        await b.close()
    assert shown == [
        "order GET /v1/returns?status=nope&limit=100: 422: query.status: not a status",
        "order GET /v1/writebacks?status=failed: 404: Not Found",
        "order GET /v1/delays: 405: Method Not Allowed",
        "metrics GET /v1/kpis: metrics service unreachable (ConnectError)",
    ]

"""The console's inbox, order search and order actions over HTTP with its real database
(SQLite, PostgreSQL); the services are faked at the transport seam with canned answers."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from services.console.app import create_app
from services.console.domain import Role
from services.console.settings import ConsoleSettings
from tests.integration.test_console_app import CSRF, Harness

pytestmark = pytest.mark.integration
EMAIL = "mei.chen@example.com"


def line(line_id: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "line_id": line_id,
        "sku": "MUG-1",
        "quantity": 1,
        "unit_price": "5.00",
        "state": state,
        "supplier_id": None,
        "routing_failure": None,
        "waiting_reason": None,
        **extra,
    }


def order(order_id: str, status: str, lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": order_id,
        "status": status,
        "delayed": False,
        "channel": "shopify",
        "external_id": None,
        "currency": "USD",
        "total": "5.00",
        "lines": lines,
        "allocations": [],
        "shipments": [],
        "shipping": {"city": "Leeds", "region": None, "postal_code": "LS1", "country": "GB"},
        "holds": [],
        "created_at": "2026-12-03T05:00:00Z",
        **extra,
    }


ATTENTION = order(
    "ord_fail",
    "needs_attention",
    [line("ord_fail-1", "routing_failed", routing_failure="no_offer")],
)
WAITING = order(
    "ord_wait", "placed", [line("ord_wait-1", "waiting_supplier", waiting_reason="timeout")]
)
HELD = order(
    "ord_held",
    "on_hold",
    [line("ord_held-1", "pending")],
    holds=[
        {
            "reason": "address_invalid",
            "note": "postal_code: format",
            "since": "2026-12-03T05:01:00Z",
        }
    ],
)
MANUAL = order(
    "ord_manual",
    "on_hold",
    [line("ord_manual-1", "pending")],
    external_id="4827",
    holds=[{"reason": "manual", "note": "customer called", "since": "2026-12-03T05:01:00Z"}],
)
PAGES: dict[tuple[str, str], Any] = {
    ("/v1/orders", "status=needs_attention"): [ATTENTION],
    ("/v1/orders", "status=on_hold"): [HELD, MANUAL],
    ("/v1/orders", "waiting=true"): [WAITING],
    ("/v1/orders", "external_id=4827"): [MANUAL],
    ("/v1/orders", "external_id=dup"): [HELD, MANUAL],
    ("/v1/delays", "reason=lost_in_transit"): [
        {"order_id": "ord_lost", "supplier_id": "sup_b", "reason": "lost_in_transit",
         "severity": "urgent", "time": "2026-12-03T04:00:00Z", "expected_by": None}
    ],
    ("/v1/delays", "limit=100"): [  # every reason: lost ones have their own table
        {"order_id": "ord_lost", "supplier_id": "sup_b", "reason": "lost_in_transit",
         "severity": "urgent", "time": "2026-12-03T04:00:00Z", "expected_by": None},
        {"order_id": "ord_late", "supplier_id": "sup_c", "reason": "no_tracking_by_deadline",
         "severity": "normal", "time": "2026-12-03T04:10:00Z",
         "expected_by": "2026-12-04T00:00:00Z"},
    ],
    ("/v1/writebacks", "status=failed"): [
        {"id": 7, "order_id": "ord_wb", "operation": "fulfil", "shop_id": "shop_1",
         "external_id": "5906", "status": "failed", "attempts": 8,
         "last_error": "401 Unauthorized: token revoked", "created_at": "2026-12-03T03:00:00Z"}
    ],
    ("/v1/complaints", "open=true"): [
        {"id": "cmp_1", "order_id": "ord_lost", "tier": "urgent", "summary": "Parcel never came",
         "status": "open", "created_at": "2026-12-03T04:30:00Z",
         "respond_by": "2026-12-03T08:30:00Z", "resolve_by": "2026-12-05T04:30:00Z"}
    ],
    ("/v1/returns", "status=requested"): [
        {"id": "ret_1", "order_id": "ord_ret", "status": "requested",
         "reason": "damaged_in_transit", "lines": [], "rma": None,
         "created_at": "2026-12-03T02:00:00Z"}
    ],
    ("/v1/returns", "status=authorized"): [],
}  # fmt: skip


def error(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return httpx.Response(status, json={"error": body})


@dataclass
class Services:
    """Canned pages by (path, the query's first filter); writes answered by `answers`."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    answers: dict[tuple[str, str], Callable[[], httpx.Response]] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, str(request.url), body))
        path = request.url.path
        if (request.method, path) in self.answers:
            return self.answers[(request.method, path)]()
        if request.method == "GET":
            for (p, q), page in PAGES.items():
                if p == path and q in str(request.url.query.decode()):
                    return httpx.Response(200, json={"items": page, "next_cursor": None})
            known = {o["id"]: o for o in (ATTENTION, WAITING, HELD, MANUAL)}
            if path.startswith("/v1/orders/") and path.count("/") == 3:
                found = known.get(path.rsplit("/", 1)[1])
                if found:
                    return httpx.Response(200, json=found)
                return error(404, "not_found", "order not found")
            if path.startswith(("/v1/", "/")):
                return httpx.Response(200, json={"items": [], "next_cursor": None})
        if path == "/v1/orders/search":
            hits = [MANUAL] if body and body.get("email") == EMAIL else []
            return httpx.Response(200, json={"items": hits, "next_cursor": None})
        return httpx.Response(202, json={})


@pytest.fixture
async def console(database_url: Any) -> AsyncIterator[Harness]:
    url = await database_url("console")
    settings = ConsoleSettings(environment="test", database_url=url, log_json=False)
    services = Services()
    app = create_app(settings, transport=httpx.MockTransport(services))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            yield Harness(client, services, url)  # type: ignore[arg-type]


def token(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:300]
    return found.group(1)


def posted(console: Harness) -> list[tuple[str, str, Any]]:
    calls = console.services.calls  # type: ignore[attr-defined]
    return [(m, httpx.URL(u).path, b) for m, u, b in calls if m != "GET"]


async def test_inbox_has_a_row_with_its_action_for_every_kind_of_exception(console):
    await console.sign_in(await console.user(Role.OPERATOR))
    page = await console.client.get("/")
    assert page.status_code == 200
    html = page.text
    assert "flash error" not in html, "every read answered"
    sections = {
        "attention-table": ['action="/orders/ord_fail/lines/ord_fail-1/route"', "no_offer"],
        "waiting-table": ['action="/orders/ord_wait/lines/ord_wait-1/route"', "timeout"],
        "held-table": [
            'href="/orders/ord_held#fix-address"',
            'action="/orders/ord_manual/release"',
        ],
        "lost-table": ["ord_lost", "sup_b", 'href="/orders/ord_lost#refund"'],
        "delayed-table": [
            "ord_late",
            "no tracking by the deadline",
            "2026-12-04T00:00:00Z",
            'href="/orders/ord_late#order-actions"',
            'href="/orders/ord_late#refund"',
        ],
        "writebacks-table": ['action="/writebacks/7/retry"', "401 Unauthorized: token revoked"],
        "complaints-table": ["Parcel never came", 'datetime="2026-12-03T08:30:00Z"'],
        "returns-table": ['action="/returns/ret_1/authorize"', 'action="/returns/ret_1/reject"'],
    }
    for table, expected in sections.items():
        start = html.index(f'id="{table}"')
        body = html[start : html.index("</table>", start)]
        for words in expected:
            assert words in body, (table, words)
    delayed = html[html.index('id="delayed-table"') :]
    assert "ord_lost" not in delayed[: delayed.index("</table>")], (
        "a lost parcel is not listed twice"
    )
    # an address hold is lifted by fixing the address, not by a release button
    held = html[html.index('data-order="ord_held"') :]
    assert 'action="/orders/ord_held/release"' not in held[: held.index("</tr>")]


async def test_a_viewer_sees_the_inbox_without_any_action_and_is_refused_a_retry(console):
    await console.sign_in(await console.user(Role.VIEWER))
    page = await console.client.get("/")
    for table in ("writebacks-table", "waiting-table", "lost-table", "delayed-table",
                  "complaints-table"):  # fmt: skip
        assert f'id="{table}"' in page.text
    assert "<button" not in page.text.split('id="inbox"', 1)[1]
    refused = await console.client.post("/writebacks/7/retry", data={"csrf": token(page)})
    assert refused.status_code == 403
    assert posted(console) == []


async def test_the_inbox_reads_in_chinese(console):
    creds = await console.user(Role.OPERATOR)
    await console.sign_in(creds)
    page = await console.client.get("/")
    await console.client.post("/locale", data={"csrf": token(page), "locale": "zh", "next": "/"})
    zh = (await console.client.get("/")).text
    for words in (
        "等待供应商的商品行",
        "丢失的包裹",
        "延误的发货",
        "截止时间前无物流单号",
        "回写电商平台失败",
        "未解决的投诉",
        "待处理的退货",
        "重试",
    ):
        assert words in zh, words


async def test_a_failed_write_back_is_tried_again_and_audited(console):
    await console.sign_in(await console.user(Role.OPERATOR))
    page = await console.client.get("/")
    done = await console.client.post("/writebacks/7/retry", data={"csrf": token(page)})
    assert done.status_code == 303
    assert posted(console) == [("POST", "/v1/writebacks/7/retry", None)]
    assert "retry write-back" in await console.audit()


async def test_search_by_order_id_and_by_marketplace_number_opens_the_order(console):
    await console.sign_in(await console.user(Role.VIEWER))
    by_id = await console.client.get("/orders", params={"q": "ord_held"})
    assert by_id.status_code == 303 and by_id.headers["location"] == "/orders/ord_held"
    by_external = await console.client.get("/orders", params={"q": "4827"})
    assert (
        by_external.status_code == 303 and by_external.headers["location"] == "/orders/ord_manual"
    )
    two = await console.client.get("/orders", params={"q": "dup"})
    assert two.status_code == 200 and "ord_held" in two.text and "ord_manual" in two.text
    blank = {"q": "", "status": "", "from": "", "to": ""}  # the form's empty fields
    assert (await console.client.get("/orders", params=blank)).status_code == 200
    none = await console.client.get("/orders", params={"q": "nothing-like-it"})
    assert none.status_code == 200 and "No order matches." in none.text


async def test_search_by_customer_email_never_puts_the_address_in_a_url_log_or_audit(
    console, caplog
):
    caplog.set_level(logging.DEBUG)
    await console.sign_in(await console.user(Role.VIEWER))  # viewers may search
    page = await console.client.get("/orders")
    assert 'action="/orders/search"' in page.text
    found = await console.client.post(
        "/orders/search", data={"csrf": token(page), "email": f"  {EMAIL} "}
    )
    assert found.status_code == 200 and 'href="/orders/ord_manual"' in found.text
    [search] = [c for c in console.services.calls if c[0] == "POST"]
    assert search[1].endswith("/v1/orders/search") and search[2] == {"email": EMAIL, "limit": 100}
    assert not any(EMAIL in url for _, url, _ in console.services.calls)
    audit = await console.audit()
    assert "search orders by e-mail" in audit and EMAIL not in audit
    assert EMAIL not in caplog.text
    forged = await console.client.post("/orders/search", data={"csrf": "x", "email": EMAIL})
    assert forged.status_code == 403


async def test_order_page_offers_the_actions_its_state_allows(console):
    await console.sign_in(await console.user(Role.OPERATOR))
    held = (await console.client.get("/orders/ord_held")).text
    assert 'id="fix-address" open' in held, "an address hold opens the address form"
    assert 'action="/orders/ord_held/release"' not in held
    assert 'value="LS1"' in held, "the form starts from what the order ships to"
    manual = (await console.client.get("/orders/ord_manual")).text
    assert 'action="/orders/ord_manual/release"' in manual
    failed = (await console.client.get("/orders/ord_fail")).text
    assert 'action="/orders/ord_fail/lines/ord_fail-1/route"' in failed


async def test_a_refusal_shows_the_services_own_words_and_each_bad_field(console):
    console.services.answers[("POST", "/v1/orders/ord_manual/hold")] = lambda: error(
        409, "supplier_has_order", "a supplier already confirmed line ord_manual-1"
    )
    console.services.answers[("PUT", "/v1/orders/ord_held/shipping-address")] = lambda: error(
        422,
        "validation_error",
        "shipping_address.postal_code: format",
        [{"field": "body.postal_code", "reason": "not a GB postcode"}],
    )
    console.services.answers[("POST", "/v1/orders/ord_fail/lines/ord_fail-1/route")] = lambda: (
        error(409, "line_busy", "line ord_fail-1 has a live supplier order (sending)")
    )
    await console.sign_in(await console.user(Role.OPERATOR))
    csrf = token(await console.client.get("/orders/ord_manual"))
    await console.client.post("/orders/ord_manual/hold", data={"csrf": csrf})
    page = (await console.client.get("/orders/ord_manual")).text
    assert "409: a supplier already confirmed line ord_manual-1" in page
    address = {"line1": "1 High St", "city": "Leeds", "postal_code": "XX", "country": "gb"}
    await console.client.post("/orders/ord_held/address", data={"csrf": csrf, **address})
    page = (await console.client.get("/orders/ord_held")).text
    assert re.search(r"<li>body.postal_code: not a GB postcode</li>", page)
    await console.client.post("/orders/ord_fail/lines/ord_fail-1/route", data={"csrf": csrf})
    assert "has a live supplier order" in (await console.client.get("/orders/ord_fail")).text
    log = await console.audit()
    for words in ("hold order", "fix address", "re-route line", "409: a supplier already"):
        assert words in log


async def test_a_read_that_fails_is_shown_on_the_inbox_with_its_service_and_reason(console):
    """A 404 or 422 from a read is a problem to see, never a section that just looks empty."""
    answers = console.services.answers
    answers[("GET", "/v1/writebacks")] = lambda: error(404, "not_found", "no such route")
    answers[("GET", "/v1/alerts")] = lambda: error(
        422,
        "validation_error",
        "query.limit: must be at most 100",
        [{"field": "query.limit", "reason": "must be at most 100"}],
    )
    await console.sign_in(await console.user(Role.VIEWER))
    page = await console.client.get("/")
    assert page.status_code == 200
    shown = re.findall(r'<p class="flash error" role="alert">([^<]*)</p>', page.text)
    assert "order GET /v1/writebacks?status=failed&amp;limit=100: 404: no such route" in shown
    assert (
        "notify GET /v1/alerts?open=true&amp;limit=200: 422: query.limit: must be at most 100"
        in shown
    )
    assert len(shown) == 2, shown  # every other read answered
    # the sections whose reads worked are still there
    assert 'data-order="ord_fail"' in page.text and "Parcel never came" in page.text


async def test_search_by_status_and_creation_days_asks_for_whole_days(console):
    await console.sign_in(await console.user(Role.VIEWER))
    params = {"q": "", "status": "on_hold", "from": "2026-12-01", "to": "2026-12-02"}
    page = await console.client.get("/orders", params=params)
    assert page.status_code == 200
    assert 'href="/orders/ord_held"' in page.text and 'href="/orders/ord_manual"' in page.text
    [asked] = [httpx.URL(u) for m, u, _ in console.services.calls if "/v1/orders?" in u]
    assert asked.params["status"] == "on_hold"
    assert asked.params["created_from"] == "2026-12-01T00:00:00+00:00"
    assert asked.params["created_to"] == "2026-12-03T00:00:00+00:00"  # the last day included
    calls = len(console.services.calls)
    bad = await console.client.get("/orders", params={"from": "2026-13-40", "to": ""})
    assert bad.status_code == 422 and "from: not a date (YYYY-MM-DD)" in bad.text
    assert len(console.services.calls) == calls, "nothing asked of the order service"

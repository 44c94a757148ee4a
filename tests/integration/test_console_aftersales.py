"""After-sales in the console (returns, refunds, complaints) against a fake of the order
service's after-sales API as DESIGN §6 fixes it, at the transport seam; the console's own
database is real (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.console.app import create_app
from services.console.domain import Role
from services.console.settings import ConsoleSettings
from tests.integration.test_console_app import CSRF, Harness

pytestmark = pytest.mark.integration
NOW = "2026-12-03T06:00:00Z"
ORDER = {
    "id": "ord_1", "status": "shipped", "delayed": False, "channel": "web", "external_id": None,
    "currency": "USD", "total": "30.00", "allocations": [], "shipments": [], "holds": [],
    "shipping": {"city": "Leeds", "region": None, "postal_code": "LS1", "country": "GB"},
    "lines": [{"line_id": "ord_1-1", "sku": "MUG-1", "quantity": 2, "unit_price": "15.00",
               "state": "shipped", "supplier_id": "sup_a", "routing_failure": None,
               "waiting_reason": None}],
    "created_at": NOW,
}  # fmt: skip


def err(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return httpx.Response(status, json={"error": body})


@dataclass
class AfterSales:
    """The order service's after-sales routes, kept in memory, with their documented rules."""

    returns: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By Idempotency-Key."""
    complaints: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str, Any, str | None]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        if method != "GET":
            self.writes.append((method, path, body, request.headers.get("Idempotency-Key")))
        params = request.url.params
        parts = path.strip("/").split("/")
        if method == "GET":
            if path == "/v1/orders/ord_1":
                return httpx.Response(200, json=ORDER)
            if path == "/v1/returns":
                found = [r for r in self.returns.values()
                         if params.get("status") in (None, r["status"])
                         and params.get("order_id") in (None, r["order_id"])]  # fmt: skip
                return httpx.Response(200, json={"items": found, "next_cursor": None})
            if path == "/v1/orders/ord_1/refunds":
                return httpx.Response(200, json={"items": list(self.refunds.values())})
            if path == "/v1/complaints":
                found = [c for c in self.complaints.values()
                         if params.get("open") != "true" or c["resolved_at"] is None]  # fmt: skip
                return httpx.Response(200, json={"items": found, "next_cursor": None})
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        if path == "/v1/orders/ord_1/returns":
            if body["reason"] not in ("damaged_in_transit", "not_as_described", "wrong_item",
                                      "not_received", "changed_mind"):  # fmt: skip
                return err(422, "validation_error", "reason", [{"field": "body.reason",
                           "reason": "not a return reason"}])  # fmt: skip
            if not body["lines"]:
                return err(422, "validation_error", "lines",
                           [{"field": "body.lines", "reason": "at least 1 item"}])  # fmt: skip
            ret = {"id": f"ret_{len(self.returns) + 1}", "order_id": "ord_1", "status": "requested",
                   "reason": body["reason"], "lines": body["lines"], "note": body.get("note"),
                   "rma": None, "return_address": None, "created_at": NOW}  # fmt: skip
            self.returns[ret["id"]] = ret
            return httpx.Response(201, json=ret)
        if parts[:2] == ["v1", "returns"] and len(parts) == 4:
            ret = self.returns[parts[2]]
            allowed = {"authorize": ("requested",), "reject": ("requested", "authorized"),
                       "receive": ("authorized",)}[parts[3]]  # fmt: skip
            if ret["status"] not in allowed:
                return err(409, "return_state", f"return {ret['id']} is {ret['status']}")
            ret["status"] = {"authorize": "authorized", "reject": "rejected",
                             "receive": "received"}[parts[3]]  # fmt: skip
            if parts[3] == "authorize":
                ret["rma"], ret["return_address"] = "RMA-77", "Return Dept, 1 Dock Rd, Ningbo"
            return httpx.Response(200, json=ret)
        if path == "/v1/orders/ord_1/refunds":
            key = request.headers.get("Idempotency-Key")
            if not key:
                return err(422, "validation_error", "Idempotency-Key required")
            if key in self.refunds:
                return httpx.Response(201, json=self.refunds[key])
            amount = Decimal(str(body.get("amount", "30")))
            paid = sum(Decimal(r["amount"]) for r in self.refunds.values())
            if amount + paid > Decimal("30.00"):
                return err(409, "refund_exceeds_paid", f"only {Decimal('30.00') - paid} USD left")
            refund = {"id": f"rf_{len(self.refunds) + 1}", "order_id": "ord_1",
                      "amount": f"{amount:.2f}", "currency": "USD",
                      "reason": body.get("reason", "damaged_in_transit"),
                      "cost_bearer": "supplier", "lines": body.get("lines", []),
                      "return_id": body.get("return_id"), "issued_at": NOW}  # fmt: skip
            self.refunds[key] = refund
            return httpx.Response(201, json=refund)
        if path == "/v1/complaints":
            c = {"id": f"cmp_{len(self.complaints) + 1}", "order_id": body["order_id"],
                 "tier": body["tier"], "summary": body["summary"], "status": "open",
                 "filed_at": NOW, "respond_by": "2026-12-03T10:00:00Z",
                 "resolve_by": "2026-12-05T06:00:00Z", "responded_at": None,
                 "resolved_at": None, "resolution": None, "responses": []}  # fmt: skip
            self.complaints[c["id"]] = c
            return httpx.Response(201, json=c)
        if parts[:2] == ["v1", "complaints"] and len(parts) == 4:
            c = self.complaints[parts[2]]
            if c["resolved_at"]:
                return err(409, "complaint_resolved", f"complaint {c['id']} is resolved")
            if parts[3] == "respond":
                c["responses"].append({"by": body["by"], "message": body["message"], "at": NOW})
                c["responded_at"], c["status"] = NOW, "responded"
            else:
                c["resolved_at"], c["resolution"], c["status"] = NOW, body["resolution"], "resolved"
            return httpx.Response(200, json=c)
        return err(404, "not_found", "nope")


@pytest.fixture
async def console(database_url: Any) -> AsyncIterator[Harness]:
    url = await database_url("console")
    settings = ConsoleSettings(environment="test", database_url=url, log_json=False)
    fake = AfterSales()
    app = create_app(settings, transport=httpx.MockTransport(fake))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            yield Harness(client, fake, url)  # type: ignore[arg-type]


async def csrf(console: Harness, path: str = "/orders/ord_1") -> str:
    found = CSRF.search((await console.client.get(path)).text)
    assert found
    return found.group(1)


async def test_a_return_goes_requested_authorized_received_then_refunded_once(console):
    fake: AfterSales = console.services  # type: ignore[assignment]
    await console.sign_in(await console.user(Role.OPERATOR))
    token = await csrf(console)
    opened = await console.client.post(
        "/orders/ord_1/returns",
        data={"csrf": token, "reason": "damaged_in_transit", "qty-ord_1-1": "1", "note": "dented"},
    )
    assert opened.status_code == 303
    assert fake.writes[-1][:3] == (
        "POST",
        "/v1/orders/ord_1/returns",
        {"lines": [{"line_id": "ord_1-1", "quantity": 1}], "reason": "damaged_in_transit",
         "note": "dented"},
    )  # fmt: skip
    inbox = (await console.client.get("/")).text
    assert 'action="/returns/ret_1/authorize"' in inbox and "damaged in transit" in inbox
    await console.client.post("/returns/ret_1/authorize", data={"csrf": token})
    page = (await console.client.get("/orders/ord_1")).text
    assert "RMA-77" in page and "Return Dept, 1 Dock Rd, Ningbo" in page
    await console.client.post("/returns/ret_1/receive", data={"csrf": token})
    inbox = (await console.client.get("/")).text
    assert 'href="/orders/ord_1?return_id=ret_1#refund"' in inbox
    form = (await console.client.get("/orders/ord_1", params={"return_id": "ret_1"})).text
    assert '<details class="card" id="refund" open>' in form
    assert '<option value="ret_1" selected>' in form
    key = form.split('name="idempotency_key" value="', 1)[1].split('"', 1)[0]
    refund = {"csrf": token, "idempotency_key": key, "amount": "15.00", "return_id": "ret_1",
              "reason": "damaged_in_transit", "qty-ord_1-1": "1"}  # fmt: skip
    for _ in range(2):  # a double click: one refund
        assert (await console.client.post("/orders/ord_1/refunds", data=refund)).status_code == 303
    assert len(fake.refunds) == 1
    method, path, body, idem = fake.writes[-1]
    assert (method, path) == ("POST", "/v1/orders/ord_1/refunds") and idem == f"console-{key}"
    assert body == {"amount": "15.00", "lines": [{"line_id": "ord_1-1", "quantity": 1}],
                    "reason": "damaged_in_transit", "return_id": "ret_1"}  # fmt: skip
    page = (await console.client.get("/orders/ord_1")).text
    assert "15.00 USD" in page
    log = await console.audit()
    for action in ("open return", "authorize return", "receive return", "issue refund"):
        assert action in log


async def test_refusals_show_the_services_reason_and_the_field(console):
    fake: AfterSales = console.services  # type: ignore[assignment]
    await console.sign_in(await console.user(Role.OPERATOR))
    token = await csrf(console)
    await console.client.post(
        "/orders/ord_1/refunds", data={"csrf": token, "idempotency_key": "k" * 16, "amount": "31"}
    )
    assert "409: only 30.00 USD left" in (await console.client.get("/orders/ord_1")).text
    await console.client.post("/orders/ord_1/returns", data={"csrf": token, "reason": "wrong_item"})
    page = (await console.client.get("/orders/ord_1")).text
    assert "<li>body.lines: at least 1 item</li>" in page
    fake.returns["ret_9"] = {"id": "ret_9", "order_id": "ord_1", "status": "rejected",
                             "reason": "changed_mind", "lines": [], "created_at": NOW}  # fmt: skip
    await console.client.post("/returns/ret_9/receive", data={"csrf": token})
    assert "return ret_9 is rejected" in (await console.client.get("/returns")).text
    assert "error" in await console.audit()


async def test_complaints_are_filed_answered_and_resolved_with_their_clock(console):
    fake: AfterSales = console.services  # type: ignore[assignment]
    creds = await console.user(Role.OPERATOR)
    await console.sign_in(creds)
    token = await csrf(console)
    filed = await console.client.post(
        "/complaints",
        data={
            "csrf": token,
            "order_id": "ord_1",
            "tier": "urgent",
            "summary": "Mug arrived broken",
        },
    )
    assert filed.status_code == 303
    inbox = (await console.client.get("/")).text
    assert "Mug arrived broken" in inbox and 'datetime="2026-12-03T10:00:00Z"' in inbox
    page = (await console.client.get("/complaints")).text
    assert 'action="/complaints/cmp_1/respond"' in page
    await console.client.post(
        "/complaints/cmp_1/respond", data={"csrf": token, "message": "Replacement on its way"}
    )
    assert fake.writes[-1][2] == {"by": creds["email"], "message": "Replacement on its way"}
    inbox = (await console.client.get("/")).text
    assert 'datetime="2026-12-05T06:00:00Z"' in inbox, "after the response: the resolve clock"
    await console.client.post(
        "/complaints/cmp_1/resolve", data={"csrf": token, "resolution": "Replaced"}
    )
    assert "Mug arrived broken" not in (await console.client.get("/")).text
    done = (await console.client.get("/complaints", params={"open": ""})).text
    assert "Replaced" in done and 'action="/complaints/cmp_1/resolve"' not in done
    again = await console.client.post(
        "/complaints/cmp_1/resolve", data={"csrf": token, "resolution": "twice"}
    )
    assert again.status_code == 303
    assert "is resolved" in (await console.client.get("/complaints")).text
    log = await console.audit()
    for action in ("file complaint", "respond to complaint", "resolve complaint"):
        assert action in log


async def test_viewers_see_after_sales_but_cannot_act(console):
    fake: AfterSales = console.services  # type: ignore[assignment]
    fake.returns["ret_1"] = {"id": "ret_1", "order_id": "ord_1", "status": "requested",
                             "reason": "wrong_item", "lines": [], "created_at": NOW}  # fmt: skip
    await console.sign_in(await console.user(Role.VIEWER))
    page = (await console.client.get("/orders/ord_1")).text
    assert "ret_1" in page and 'id="refund"' not in page and "/authorize" not in page
    listed = (await console.client.get("/returns")).text
    table = listed.split('id="returns-list"', 1)[1]
    assert "ret_1" in table and "<button" not in table
    token = await csrf(console)
    for path in ("/returns/ret_1/authorize", "/orders/ord_1/refunds", "/complaints",
                 "/complaints/cmp_1/respond", "/orders/ord_1/returns"):  # fmt: skip
        assert (await console.client.post(path, data={"csrf": token})).status_code == 403, path
    assert fake.writes == []


async def test_after_sales_pages_read_in_chinese(console):
    await console.sign_in(await console.user(Role.OPERATOR))
    token = await csrf(console)
    await console.client.post("/locale", data={"csrf": token, "locale": "zh", "next": "/"})
    page = (await console.client.get("/orders/ord_1")).text
    for words in ("退款", "发起退货", "登记投诉", "运输中损坏", "紧急（4 小时内回复）"):
        assert words in page, words
    assert "退货" in (await console.client.get("/returns")).text
    assert "投诉" in (await console.client.get("/complaints")).text

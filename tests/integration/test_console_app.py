"""The console over HTTP with its real database (SQLite, PostgreSQL); services faked at the seam."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyotp
import pytest

from services.console.app import create_app
from services.console.domain import Role
from services.console.settings import ConsoleSettings
from services.console.users import create_user

pytestmark = pytest.mark.integration
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ALERT = {
    "id": "alr_1",
    "kind": "routing_failed",
    "severity": "major",
    "order_id": "ord_1",
    "title": "Order ord_1 could not be routed",
    "details": [],
    "raised_at": "2026-12-03T06:00:00Z",
    "due_at": "2026-12-03T06:15:00Z",
    "escalations": 0,
    "acked_at": None,
    "acked_by": None,
}
ORDER = {
    "id": "ord_1",
    "status": "needs_attention",
    "total": "10.00",
    "currency": "USD",
    "created_at": "2026-12-03T05:00:00Z",
    "channel": "web",
    "external_id": None,
    "delayed": False,
    "lines": [],
    "allocations": [],
    "shipments": [],
}


@dataclass
class FakeServices:
    """The four services as the console sees them: canned answers, every call recorded."""

    calls: list[tuple[str, str, str, Any]] = field(default_factory=list)
    urls: list[httpx.URL] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = (
            json.loads(request.content)
            if request.content
            and request.headers.get("content-type", "").startswith("application/json")
            else request.content
        )
        self.calls.append((request.url.host, request.method, request.url.path, body))
        self.urls.append(request.url)
        assert request.headers["X-API-Key"] == "dev-api-key"
        path = request.url.path
        if path == "/v1/orders":
            status = request.url.params.get("status")
            if status == "on_hold":
                return httpx.Response(
                    422, json={"error": {"code": "validation_error", "message": "bad status"}}
                )
            return httpx.Response(200, json={"items": [ORDER], "next_cursor": None})
        if path == "/v1/alerts":
            return httpx.Response(200, json={"items": [ALERT], "next_cursor": None})
        if path.endswith("/ack"):
            return httpx.Response(200, json={**ALERT, "acked_at": "2026-12-03T06:01:00Z"})
        if path.endswith("/cancel"):
            return httpx.Response(
                409, json={"error": {"code": "conflict", "message": "order already shipped"}}
            )
        if path == "/v1/offers/import":
            details = [{"line": 3, "column": "unit_cost", "reason": "must be a decimal"}]
            return httpx.Response(
                422,
                json={
                    "error": {
                        "code": "validation_error",
                        "message": "line 3: unit_cost",
                        "details": details,
                    }
                },
            )
        if path == "/v1/kpis":
            item = {
                "key": "2026-12-02",
                "orders": 7,
                "gmv": {"USD": "70.00"},
                "confirmation_rate": 0.5,
                "on_time_rate": None,
                "delay_rate": 0.25,
                "cancellations": 1,
            }
            return httpx.Response(
                200,
                json={
                    "from": "2026-12-02",
                    "to": "2026-12-02",
                    "group_by": "day",
                    "items": [item],
                    "total": {**item, "key": "all"},
                },
            )
        if path == "/v1/suppliers":
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "nope"}})


@dataclass
class Harness:
    client: httpx.AsyncClient
    services: FakeServices
    db_url: str

    async def user(self, role: Role) -> dict[str, Any]:
        return await create_user(self.db_url, f"{role.value}@example.com", role, with_totp=True)

    async def csrf(self, path: str = "/login") -> str:
        page = await self.client.get(path)
        found = CSRF.search(page.text)
        assert found, page.text[:500]
        return found.group(1)

    async def sign_in(self, creds: dict[str, Any], later: int = 0) -> httpx.Response:
        """`later`: use the code of a later 30-second step (a code is accepted only once)."""
        token = await self.csrf()
        step1 = await self.client.post(
            "/login", data={"csrf": token, "email": creds["email"], "password": creds["password"]}
        )
        assert step1.status_code == 303 and step1.headers["location"] == "/login/totp"
        token = await self.csrf("/login/totp")
        totp = pyotp.TOTP(creds["totp_secret"])
        code = totp.at(int(time.time()) + 30 * later)
        return await self.client.post("/login/totp", data={"csrf": token, "code": code})

    async def audit(self) -> str:
        return (await self.client.get("/audit")).text


@pytest.fixture
async def console(database_url: Any) -> AsyncIterator[Harness]:
    url = await database_url("console")
    settings = ConsoleSettings(environment="test", database_url=url, log_json=False)
    services = FakeServices()
    app = create_app(settings, transport=httpx.MockTransport(services))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            yield Harness(client, services, url)


async def test_operator_signs_in_with_totp_and_acknowledges_an_alert(console):
    creds = await console.user(Role.OPERATOR)
    assert (await console.client.get("/")).headers["location"] == "/login"
    signed_in = await console.sign_in(creds)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    inbox = await console.client.get("/")
    assert inbox.status_code == 200
    assert "Order ord_1 could not be routed" in inbox.text and "ord_1" in inbox.text
    assert 'action="/alerts/alr_1/ack"' in inbox.text
    token = CSRF.search(inbox.text).group(1)  # type: ignore[union-attr]
    acked = await console.client.post("/alerts/alr_1/ack", data={"csrf": token})
    assert acked.status_code == 303
    assert ("127.0.0.1", "POST", "/v1/alerts/alr_1/ack", {"by": "operator@example.com"}) in (
        console.services.calls
    )
    cancelled = await console.client.post("/orders/ord_1/cancel", data={"csrf": token})
    assert cancelled.status_code == 303
    page = await console.client.get("/orders/ord_1")
    assert "order already shipped" in page.text  # the service's own message is shown
    log = await console.audit()
    for words in ("sign-in", "acknowledge alert", "alr_1", "cancel order", "order already shipped"):
        assert words in log


async def test_every_form_post_needs_the_csrf_token(console):
    creds = await console.user(Role.ADMIN)
    await console.sign_in(creds)
    for path in (
        "/alerts/alr_1/ack",
        "/orders/ord_1/cancel",
        "/orders/ord_1/hold",
        "/orders/ord_1/release",
        "/orders/ord_1/address",
        "/orders/ord_1/lines/l1/route",
        "/notifications/n1/retry",
        "/suppliers/sup_1",
        "/offers/import",
        "/logout",
        "/locale",
        "/login",
        "/login/totp",
        "/enrol",
    ):
        for data in ({}, {"csrf": "forged"}):
            refused = await console.client.post(path, data=data)
            assert refused.status_code == 403, path
    assert not any(m == "POST" for _, m, _, _ in console.services.calls)


async def test_viewer_sees_no_buttons_and_is_refused_by_the_server(console):
    creds = await console.user(Role.VIEWER)
    await console.sign_in(creds)
    inbox = await console.client.get("/")
    assert "Order ord_1 could not be routed" in inbox.text
    assert "/ack" not in inbox.text and "/cancel" not in inbox.text
    token = CSRF.search(inbox.text).group(1)  # type: ignore[union-attr]
    refused = await console.client.post("/alerts/alr_1/ack", data={"csrf": token})
    assert refused.status_code == 403
    assert not any(m == "POST" for _, m, _, _ in console.services.calls)
    assert "refused" in await console.audit()


async def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(console):
    creds = await console.user(Role.OPERATOR)
    for attempt in range(5):
        token = await console.csrf()
        wrong = await console.client.post(
            "/login", data={"csrf": token, "email": creds["email"], "password": "nope"}
        )
        assert wrong.status_code == 401, attempt
    assert "15" in wrong.text
    token = await console.csrf()
    right = await console.client.post(
        "/login", data={"csrf": token, "email": creds["email"], "password": creds["password"]}
    )
    assert right.status_code == 429
    assert (await console.client.get("/")).headers["location"] == "/login"


async def test_a_new_user_enrols_totp_from_a_qr_code_and_gets_recovery_codes(console):
    creds = await create_user(console.db_url, "new@example.com", Role.OPERATOR)
    assert creds["totp_secret"] is None
    token = await console.csrf()
    step1 = await console.client.post(
        "/login", data={"csrf": token, "email": creds["email"], "password": creds["password"]}
    )
    assert step1.headers["location"] == "/enrol"
    page = await console.client.get("/enrol")
    assert "<svg" in page.text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    wrong = await console.client.post("/enrol", data={"csrf": token, "code": "000000"})
    assert wrong.status_code == 401
    done = await console.client.post(
        "/enrol", data={"csrf": token, "code": pyotp.TOTP(secret).now()}
    )
    assert done.status_code == 200
    codes = re.findall(r"<code>([0-9a-f]{8}-[0-9a-f]{8})</code>", done.text)
    assert len(codes) == 10
    assert (await console.client.get("/")).status_code == 200
    # a recovery code signs in once, instead of the authenticator
    await console.client.post(
        "/logout", data={"csrf": CSRF.search((await console.client.get("/")).text).group(1)}
    )  # type: ignore[union-attr]
    for expected in (303, 401):
        token = await console.csrf()
        await console.client.post(
            "/login", data={"csrf": token, "email": creds["email"], "password": creds["password"]}
        )
        token = await console.csrf("/login/totp")
        used = await console.client.post("/login/totp", data={"csrf": token, "code": codes[0]})
        assert used.status_code == expected


async def test_language_switch_is_remembered_for_the_user(console):
    creds = await console.user(Role.OPERATOR)
    await console.sign_in(creds)
    token = CSRF.search((await console.client.get("/")).text).group(1)  # type: ignore[union-attr]
    await console.client.post("/locale", data={"csrf": token, "locale": "zh", "next": "/"})
    console.client.cookies.clear()  # a new browser: the choice lives on the user
    await console.sign_in(creds, later=1)
    assert "异常收件箱" in (await console.client.get("/")).text


async def test_csv_upload_shows_every_bad_row_by_line_and_column(console):
    creds = await console.user(Role.OPERATOR)
    await console.sign_in(creds)
    token = CSRF.search((await console.client.get("/suppliers")).text).group(1)  # type: ignore[union-attr]
    upload = await console.client.post(
        "/offers/import",
        data={"csrf": token},
        files={"file": ("offers.csv", b"sku,supplier_id\n", "text/csv")},
    )
    assert upload.status_code == 422
    assert re.search(r"<td>3</td><td>unit_cost</td><td>must be a decimal</td>", upload.text)
    assert "import offers" in await console.audit()


async def test_operator_actions_reach_the_right_api_with_the_right_body(console):
    creds = await console.user(Role.OPERATOR)
    await console.sign_in(creds)
    token = CSRF.search((await console.client.get("/")).text).group(1)  # type: ignore[union-attr]
    posts = {
        "/orders/ord_1/hold": {"note": "customer called"},
        "/orders/ord_1/release": {},
        "/orders/ord_1/address": {
            "line1": "2 High St",
            "city": "Leeds",
            "postal_code": "LS1 1AA",
            "country": "gb",
            "line2": "",
        },
        "/orders/ord_1/lines/ord_1-1/route": {"supplier_id": "sup_9"},
        "/notifications/ntf_1/retry": {},
        "/suppliers/sup_9": {"priority": "4", "ship_sla_hours": "36", "active": "on"},
    }
    for path, data in posts.items():
        done = await console.client.post(path, data={"csrf": token, **data})
        assert done.status_code == 303, path
    sent = [(m, p, b) for _, m, p, b in console.services.calls if m != "GET"]
    assert sent == [
        ("POST", "/v1/orders/ord_1/hold", {"reason": "manual", "note": "customer called"}),
        ("POST", "/v1/orders/ord_1/release", b""),
        (
            "PUT",
            "/v1/orders/ord_1/shipping-address",
            {"line1": "2 High St", "city": "Leeds", "postal_code": "LS1 1AA", "country": "GB"},
        ),
        ("POST", "/v1/orders/ord_1/lines/ord_1-1/route", {"supplier_id": "sup_9"}),
        ("POST", "/v1/notifications/ntf_1/retry", b""),
        ("PATCH", "/v1/suppliers/sup_9", {"active": True, "priority": 4, "ship_sla_hours": 36}),
    ]
    log = await console.audit()
    for action in (
        "hold order",
        "release order",
        "fix address",
        "re-route line",
        "resend notice",
        "edit supplier",
    ):
        assert action in log
    assert "404: nope" in log  # the fake answers 404: the service's message is kept


async def test_signing_out_ends_every_session_of_the_user(console):
    creds = await console.user(Role.OPERATOR)
    await console.sign_in(creds)
    stolen = dict(console.client.cookies)
    token = CSRF.search((await console.client.get("/")).text).group(1)  # type: ignore[union-attr]
    await console.client.post("/logout", data={"csrf": token})
    console.client.cookies.clear()
    console.client.cookies.update(stolen)
    assert (await console.client.get("/")).headers["location"] == "/login"


async def test_kpis_page_charts_the_metrics_report_and_pages_read_in_chinese(console):
    creds = await console.user(Role.VIEWER)
    await console.sign_in(creds)
    page = await console.client.get("/kpis", params={"days": 1, "group_by": "day"})
    assert page.status_code == 200
    assert re.search(r"<td>2026-12-02</td><td>7</td><td>70.00 USD", page.text)
    assert "50%" in page.text and "25%" in page.text and 'id="kpi-chart"' in page.text
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    await console.client.post("/locale", data={"csrf": token, "locale": "zh", "next": "/kpis"})
    assert "关键指标" in (await console.client.get("/kpis")).text

"""Step-up for key operations (refund, cancel, user admin) over HTTP with the console's real
database (SQLite, PostgreSQL) and the order service faked at the seam: a second factor older
than DROPSHIP_CONSOLE_STEPUP_S holds the action back until a correct code is given."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from services.console.app import create_app
from services.console.domain import Role
from services.console.sessions import COOKIE
from services.console.settings import ConsoleSettings
from services.console.store import ConsoleStore
from shared.db import create_engine, session_factory
from tests.integration.test_console_aftersales import AfterSales
from tests.integration.test_console_app import CSRF, Harness

pytestmark = pytest.mark.integration
ORDER_PAGE = {"referer": "http://console/orders/ord_1"}
REFUND = {"idempotency_key": "k" * 12, "amount": "15.00", "reason": "damaged_in_transit",
          "qty-ord_1-1": "1"}  # fmt: skip


class StepUpHarness(Harness):
    app: FastAPI

    def age_second_factor(self, seconds: float = 600) -> None:
        """The session's last second-factor check, `seconds` ago (the cookie re-signed)."""
        codec = self.app.state.console.codec
        cookie = next(c for c in self.client.cookies.jar if c.name == COOKIE)
        session = codec.loads(cookie.value)
        session.verified_at = time.time() - seconds
        self.client.cookies.set(COOKIE, codec.dumps(session), domain=cookie.domain, path="/")

    async def token(self, path: str = "/orders/ord_1") -> str:
        found = CSRF.search((await self.client.get(path)).text)
        assert found
        return found.group(1)

    async def user_row(self, email: str) -> Any:
        engine = create_engine(self.db_url)
        try:
            return await ConsoleStore(session_factory(engine)).user_by_email(email)
        finally:
            await engine.dispose()


@pytest.fixture
async def console(database_url: Any) -> AsyncIterator[StepUpHarness]:
    url = await database_url("console")
    settings = ConsoleSettings(environment="test", database_url=url, log_json=False)
    fake = AfterSales()
    app = create_app(settings, transport=httpx.MockTransport(fake))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            harness = StepUpHarness(client, fake, url)  # type: ignore[arg-type]
            harness.app = app
            yield harness


def code(creds: dict[str, Any], later: int) -> str:
    return pyotp.TOTP(creds["totp_secret"]).at(int(time.time()) + 30 * later)


async def test_a_stale_refund_waits_for_a_correct_code_and_a_wrong_one_changes_nothing(console):
    fake: AfterSales = console.services  # type: ignore[assignment]
    creds = await console.user(Role.OPERATOR)
    await console.sign_in(creds)
    token = await console.token()
    console.age_second_factor()
    asked = await console.client.post(
        "/orders/ord_1/refunds", data={"csrf": token, **REFUND}, headers=ORDER_PAGE
    )
    assert asked.status_code == 200 and 'id="stepup"' in asked.text
    assert (
        '<label for="stepup-code">' in asked.text and 'action="/orders/ord_1/refunds"' in asked.text
    )
    assert '<input type="hidden" name="amount" value="15.00">' in asked.text  # input kept
    assert fake.writes == []  # nothing sent to the order service
    form = {"csrf": token, "stepup_back": "/orders/ord_1", **REFUND}
    wrong = await console.client.post(
        "/orders/ord_1/refunds", data={**form, "stepup_code": "000000"}
    )
    assert wrong.status_code == 401 and "Wrong code: nothing was done." in wrong.text
    assert fake.writes == [] and fake.refunds == {}
    user = await console.user_row(creds["email"])
    assert user.failed_attempts == 1  # counts toward the lock-out
    right = await console.client.post(
        "/orders/ord_1/refunds", data={**form, "stepup_code": code(creds, later=1)}
    )
    assert right.status_code == 303 and right.headers["location"] == "/orders/ord_1"
    assert len(fake.refunds) == 1
    method, path, body, _ = fake.writes[-1]
    assert (method, path) == ("POST", "/v1/orders/ord_1/refunds")
    assert body == {"amount": "15.00", "lines": [{"line_id": "ord_1-1", "quantity": 1}],
                    "reason": "damaged_in_transit"}  # fmt: skip
    assert (await console.user_row(creds["email"])).failed_attempts == 0
    # the check is now fresh: the next key operation acts without a prompt
    again = await console.client.post(
        "/orders/ord_1/cancel", data={"csrf": token}, headers=ORDER_PAGE
    )
    assert again.status_code == 303 and fake.writes[-1][:2] == ("POST", "/v1/orders/ord_1/cancel")
    log = await console.audit()
    failed_row = '<td>step-up</td><td>issue refund</td><td class="result error">error</td>'
    assert f"{failed_row}<td>wrong code</td>" in log
    assert '<td>step-up</td><td>issue refund</td><td class="result ok">ok</td>' in log
    assert '<td>issue refund</td><td>ord_1</td><td class="result ok">ok</td>' in log


async def test_a_fresh_sign_in_acts_at_once_and_other_actions_never_ask(console):
    fake: AfterSales = console.services  # type: ignore[assignment]
    await console.sign_in(await console.user(Role.OPERATOR))
    token = await console.token()
    done = await console.client.post(
        "/orders/ord_1/refunds", data={"csrf": token, **REFUND}, headers=ORDER_PAGE
    )
    assert done.status_code == 303 and len(fake.refunds) == 1
    console.age_second_factor()
    held = await console.client.post("/orders/ord_1/hold", data={"csrf": token}, headers=ORDER_PAGE)
    assert held.status_code == 303  # not a key operation: no prompt
    assert fake.writes[-1][:2] == ("POST", "/v1/orders/ord_1/hold")
    assert "step-up" not in await console.audit()


async def test_viewers_are_still_refused_whatever_the_code(console):
    fake: AfterSales = console.services  # type: ignore[assignment]
    creds = await console.user(Role.VIEWER)
    await console.sign_in(creds)
    token = await console.token()
    console.age_second_factor()
    for data in ({}, {"stepup_code": code(creds, later=1)}):
        refused = await console.client.post(
            "/orders/ord_1/refunds", data={"csrf": token, **REFUND, **data}
        )
        assert refused.status_code == 403 and 'id="stepup"' not in refused.text
    assert fake.writes == []


async def test_admin_user_operations_need_a_fresh_factor_a_recovery_code_counts(console):
    creds = await console.user(Role.ADMIN)
    await console.sign_in(creds)
    token = await console.token("/users")
    console.age_second_factor()
    data = {"csrf": token, "email": "nia@example.com", "role": "operator"}
    asked = await console.client.post("/users", data=data)
    assert asked.status_code == 200 and 'id="stepup"' in asked.text
    assert '<input type="hidden" name="email" value="nia@example.com">' in asked.text
    assert await console.user_row("nia@example.com") is None
    recovery = creds["recovery_codes"][0]
    added = await console.client.post("/users", data={**data, "stepup_code": recovery})
    assert added.status_code == 201 and 'data-user="nia@example.com"' in added.text
    nia = await console.user_row("nia@example.com")
    assert nia is not None
    again = await console.client.post(
        "/users", data={**data, "email": "ola@example.com", "stepup_code": recovery}
    )
    assert again.status_code == 401  # a recovery code is spent once
    assert await console.user_row("ola@example.com") is None
    console.age_second_factor()
    for path, form in (
        (f"/users/{nia.id}/role", {"role": "viewer"}),
        (f"/users/{nia.id}/unlock", {}),
    ):
        held = await console.client.post(path, data={"csrf": token, **form})
        assert held.status_code == 200 and 'id="stepup"' in held.text, path
    assert (await console.user_row("nia@example.com")).role is Role.OPERATOR


async def test_wrong_codes_lock_the_user_out_of_step_up(console):
    fake: AfterSales = console.services  # type: ignore[assignment]
    creds = await console.user(Role.OPERATOR)
    await console.sign_in(creds)
    token = await console.token()
    console.age_second_factor()
    form = {"csrf": token, "reason": "customer asked", "stepup_code": "000000"}
    statuses = [
        (await console.client.post("/orders/ord_1/cancel", data=form)).status_code for _ in range(5)
    ]
    assert statuses == [401] * 5
    right = {**form, "stepup_code": code(creds, later=1)}
    locked = await console.client.post("/orders/ord_1/cancel", data=right)
    assert locked.status_code == 429 and 'id="stepup"' in locked.text
    assert fake.writes == []
    log = await console.audit()
    assert "locked out" in log
    assert '<td>step-up</td><td>cancel order</td><td class="result locked">locked</td>' in log

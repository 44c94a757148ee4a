"""The console's audit-log search and its KPI groupings over HTTP, with its real database
(SQLite, PostgreSQL); the services are faked at the transport seam."""

from __future__ import annotations

import re
from datetime import date

import httpx
import pytest

from services.console.domain import Role
from tests.integration.test_console_app import CSRF, console  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def rows(page: httpx.Response) -> list[str]:
    body = page.text.split('id="audit-table"', 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr><td>.*?</tr>", body, re.S)


async def test_the_audit_log_is_searched_by_action_target_result_and_who(console):  # noqa: F811
    operator = await console.user(Role.OPERATOR)
    await console.sign_in(operator)
    token = CSRF.search((await console.client.get("/")).text).group(1)  # type: ignore[union-attr]
    await console.client.post("/alerts/alr_1/ack", data={"csrf": token})
    await console.client.post("/orders/ord_1/cancel", data={"csrf": token})  # refused: 409
    everything = rows(await console.client.get("/audit"))
    assert len(everything) == 3  # sign-in, acknowledge, cancel
    [cancel] = rows(await console.client.get("/audit", params={"q": "CANCEL"}))
    assert "ord_1" in cancel and "order already shipped" in cancel and "alr_1" not in cancel
    [ack] = rows(await console.client.get("/audit", params={"q": "alr_1"}))
    assert "acknowledge alert" in ack
    [failed] = rows(await console.client.get("/audit", params={"q": "error"}))
    assert "cancel order" in failed
    assert len(rows(await console.client.get("/audit", params={"q": operator["email"]}))) == 3
    none = await console.client.get("/audit", params={"q": "nothing like it"})
    assert rows(none) == [] and "Nothing here." in none.text
    assert (await console.client.get("/audit", params={"q": "x" * 201})).status_code == 422


@pytest.mark.parametrize("group_by", ["day", "supplier", "channel"])
async def test_kpis_are_asked_of_the_metrics_service_by_day_supplier_or_channel(
    console,  # noqa: F811
    group_by,
):
    await console.sign_in(await console.user(Role.VIEWER))
    page = await console.client.get("/kpis", params={"days": 7, "group_by": group_by})
    assert page.status_code == 200 and 'id="kpi-chart"' in page.text
    [asked] = [u for u in console.services.urls if u.path == "/v1/kpis"]
    assert asked.params["group_by"] == group_by
    days = date.fromisoformat(asked.params["to"]) - date.fromisoformat(asked.params["from"])
    assert days.days == 6  # seven days, both ends included
    assert (await console.client.get("/kpis", params={"group_by": "sku"})).status_code == 422

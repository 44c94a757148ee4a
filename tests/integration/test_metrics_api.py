"""Metrics API parameters: every bad window or grouping is a 422 naming the parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.metrics.app import create_app
from services.metrics.settings import MetricsSettings
from tests.support.data import API_KEY
from tests.support.services import in_process

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def _settings(url: str, tmp_path) -> MetricsSettings:
    return MetricsSettings(
        environment="test",
        data_dir=tmp_path,
        database_url=url,
        kafka_bootstrap="127.0.0.1:9",  # no broker needed to read KPIs
        consumers_enabled=False,
        relay_enabled=False,
        log_json=False,
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "week"}, "query.group_by"),
        ({"group_by": ""}, "query.group_by"),
        ({"from": "2026-13-01"}, "query.from"),
        ({"from": "yesterday"}, "query.from"),
        ({"to": "2026-02-30"}, "query.to"),
        ({"from": "2026-03-05", "to": "2026-03-01"}, "query.from"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "query.to"),
        ({"from": "0001-01-01", "to": "0001-01-02"}, "query.from"),
        ({"from": "9999-12-30", "to": "9999-12-31"}, "query.from"),
        ({"to": "9999-12-31"}, "query.to"),
    ],
)
async def test_a_bad_window_or_grouping_is_a_422_naming_the_parameter(
    params, field, database_url, tmp_path
):
    async with in_process(create_app, _settings(await database_url("metrics"), tmp_path)) as svc:
        svc.client.headers.update(API_KEY)  # the metrics API takes admin keys
        for path in ("/v1/kpis", "/v1/suppliers/ranking", "/v1/kpis/after-sales"):
            if path.endswith("ranking") and "group_by" in params:
                continue
            response = await svc.client.get(path, params=params)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "validation_error"
            assert error["message"].startswith(field)
            assert error["details"][0]["field"] == field


async def test_an_empty_database_answers_every_day_with_zeros(database_url, tmp_path):
    async with in_process(create_app, _settings(await database_url("metrics"), tmp_path)) as svc:
        svc.client.headers.update(API_KEY)  # the metrics API takes admin keys
        report = (await svc.client.get("/v1/kpis")).json()
        today = datetime.now(UTC).date()
        assert report["to"] == today.isoformat()
        assert report["from"] == (today - timedelta(days=29)).isoformat()
        assert [i["key"] for i in report["items"]][-1] == today.isoformat()
        assert len(report["items"]) == 30
        assert {i["orders"] for i in report["items"]} == {0}
        assert report["total"]["gmv"] == {} and report["total"]["on_time_rate"] is None
        by_supplier = (await svc.client.get("/v1/kpis", params={"group_by": "supplier"})).json()
        assert by_supplier["items"] == []
        ranking = (await svc.client.get("/v1/suppliers/ranking")).json()
        assert ranking["items"] == [] and ranking["next_cursor"] is None
        after = (await svc.client.get("/v1/kpis/after-sales")).json()
        assert len(after["items"]) == 30 and after["items"][-1]["key"] == today.isoformat()
        assert {i["returns"] for i in after["items"]} == {0}
        assert after["total"]["return_rate"] is None and after["total"]["refund_amount"] == {}
        assert after["total"]["complaints"]["first_response_s"]["count"] == 0
        assert set(after["total"]["complaints_by_tier"]) == {"normal", "urgent", "major"}


async def test_the_kpi_schema_is_documented(database_url, tmp_path):
    async with in_process(create_app, _settings(await database_url("metrics"), tmp_path)) as svc:
        svc.client.headers.update(API_KEY)  # the metrics API takes admin keys
        spec = (await svc.client.get("/openapi.json")).json()
        kpis = spec["paths"]["/v1/kpis"]["get"]
        assert {p["name"] for p in kpis["parameters"]} == {"from", "to", "group_by"}
        ok = kpis["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ok.endswith("/KpiReport")
        item = spec["components"]["schemas"]["KpiItem"]["properties"]
        for name in ("key", "orders", "gmv", "aov", "gross_margin", "on_time_rate", "cycle_time_s"):
            assert name in item
        assert "422" in kpis["responses"]
        assert "/v1/suppliers/ranking" in spec["paths"]
        after = spec["paths"]["/v1/kpis/after-sales"]["get"]
        assert {p["name"] for p in after["parameters"]} == {"from", "to", "group_by"}
        item = spec["components"]["schemas"]["AfterSalesItem"]["properties"]
        for name in ("return_rate", "refund_amount", "refund_rate", "complaints_by_tier"):
            assert name in item


async def test_after_sales_kpis_take_an_admin_key(database_url, tmp_path):
    async with in_process(create_app, _settings(await database_url("metrics"), tmp_path)) as svc:
        assert (await svc.client.get("/v1/kpis/after-sales")).status_code == 401

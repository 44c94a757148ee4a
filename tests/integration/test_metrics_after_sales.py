"""After-sales KPIs from a known history through a real broker, on SQLite and PostgreSQL.

The history (tests/support/after_sales_history.py) arrives out of causal order (a refund
before its return, a resolution before its filing) and with a refund announced twice.
The figures must come out exactly as computed by hand, stay the same when everything is
delivered again, and be rebuilt identically by a replay into an empty database.
"""

from __future__ import annotations

import asyncio

from services.metrics import handlers
from services.metrics.app import create_app
from services.metrics.settings import MetricsSettings
from services.metrics.store import MetricsUnitOfWork
from shared.db import create_engine, session_factory
from shared.testing import eventually
from tests.integration.test_metrics_kpis import _publish_batched, _rebuild_cli
from tests.support import after_sales_history as a
from tests.support.data import API_KEY
from tests.support.kafka import consumed, publish_envelopes
from tests.support.services import in_process

WINDOW = {"from": "2026-03-01", "to": "2026-03-03"}


async def _applied(client, expected: int) -> bool:
    counts = (await client.get("/v1/events/counts")).json()
    return sum(counts.values()) == expected


async def _reports(client) -> dict[str, dict]:
    out = {}
    for group in ("day", "supplier", "channel"):
        response = await client.get("/v1/kpis/after-sales", params={**WINDOW, "group_by": group})
        assert response.status_code == 200, response.text
        out[group] = response.json()
    return out


def _pick(item: dict, expected: dict) -> dict:
    return {k: item[k] for k in expected}


def _check(reports: dict[str, dict]) -> None:
    by_day = reports["day"]
    assert by_day["total"] == a.EXPECTED_TOTAL
    assert [i["key"] for i in by_day["items"]] == list(a.EXPECTED_BY_DAY)
    for item in by_day["items"]:
        assert _pick(item, a.EXPECTED_BY_DAY[item["key"]]) == a.EXPECTED_BY_DAY[item["key"]]
    for group, expected in (
        ("channel", a.EXPECTED_BY_CHANNEL),
        ("supplier", a.EXPECTED_BY_SUPPLIER),
    ):
        items = {i["key"]: i for i in reports[group]["items"]}
        assert set(items) == set(expected), group
        for key, want in expected.items():
            assert _pick(items[key], want) == want, (group, key)
        assert reports[group]["total"] == a.EXPECTED_TOTAL


async def test_after_sales_kpis_are_exact_and_unchanged_by_a_second_delivery(
    database_url, settings_for, broker
):
    settings = settings_for(MetricsSettings, await database_url("metrics"), kpi_cache_s=0)
    history = a.history()
    async with in_process(create_app, settings) as svc:
        svc.client.headers.update(API_KEY)
        await svc.runtime.bus.wait_connected()
        await publish_envelopes(broker.bootstrap, history)
        await eventually(
            lambda: _applied(svc.client, a.DISTINCT_EVENTS), what="every distinct event applied"
        )
        first = await _reports(svc.client)
        _check(first)

        # everything again: the inbox turns every repeat into a no-op
        before = consumed("metrics", "complaint-filed", "duplicate")
        await publish_envelopes(broker.bootstrap, history)

        async def repeats_seen() -> bool:
            return consumed("metrics", "complaint-filed", "duplicate") - before >= 3

        await eventually(repeats_seen, what="the repeated complaint-filed events consumed")
        assert await _applied(svc.client, a.DISTINCT_EVENTS)
        assert await _reports(svc.client) == first

        exposition = (await svc.client.get("/metrics")).text
        assert 'dropship_kpi_returns_total{reason="damaged_in_transit"}' in exposition
        assert (
            'dropship_kpi_refunds_total{cost_bearer="supplier",reason="damaged_in_transit"}'
            in exposition
        )
        assert 'dropship_kpi_complaints_total{tier="urgent"}' in exposition


async def test_a_replay_rebuilds_the_same_after_sales_kpis(database_url, settings_for, broker):
    live_settings = settings_for(MetricsSettings, await database_url("metrics"), kpi_cache_s=0)
    async with in_process(create_app, live_settings) as live:
        live.client.headers.update(API_KEY)
        await live.runtime.bus.wait_connected()
        await _publish_batched(broker.bootstrap, a.history())
        await eventually(lambda: _applied(live.client, a.DISTINCT_EVENTS), what="events applied")
        expected = await _reports(live.client)
    _check(expected)

    replay_settings = settings_for(
        MetricsSettings,
        await database_url("metrics_replay"),
        consumers_enabled=False,
        kpi_cache_s=0,
    )
    stats = await asyncio.to_thread(_rebuild_cli, replay_settings)
    assert stats["applied"] == a.DISTINCT_EVENTS
    async with in_process(create_app, replay_settings) as replayed:
        replayed.client.headers.update(API_KEY)
        assert await _reports(replayed.client) == expected
    # a reset empties the after-sales facts too, and a replay puts back the same ones
    engine = create_engine(replay_settings.db_url)
    try:
        sessions = session_factory(engine)
        await handlers.reset(replay_settings.service_name, MetricsUnitOfWork(sessions))
    finally:
        await engine.dispose()
    async with in_process(create_app, replay_settings) as emptied:
        emptied.client.headers.update(API_KEY)
        total = (await _reports(emptied.client))["day"]["total"]
        assert (total["returns"], total["refunds"], total["complaints"]["complaints"]) == (0, 0, 0)
    again = await asyncio.to_thread(_rebuild_cli, replay_settings)
    assert again["applied"] == a.DISTINCT_EVENTS
    async with in_process(create_app, replay_settings) as rebuilt:
        rebuilt.client.headers.update(API_KEY)
        assert await _reports(rebuilt.client) == expected

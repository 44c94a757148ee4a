"""Metrics KPIs from a known event history through a real broker, on SQLite and PostgreSQL.

The history (tests/support/metrics_history.py) has duplicates and out-of-order events:
a confirmation, dispatch and delivery before their order is placed, and an order of
day 1 published last. The KPIs must come out exactly as computed by hand, stay the
same when everything is delivered again, and be rebuilt identically by a replay.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaProducer

from services.metrics.app import create_app
from services.metrics.settings import MetricsSettings
from shared.testing import eventually
from tests.support import metrics_history as h
from tests.support.data import API_KEY
from tests.support.kafka import consumed, publish_envelopes
from tests.support.services import ROOT, in_process

WINDOW = {"from": h.FIRST_DAY.isoformat(), "to": h.LAST_DAY.isoformat()}


async def _applied(client, expected: int) -> bool:
    counts = (await client.get("/v1/events/counts")).json()
    return sum(counts.values()) == expected


async def _reports(client) -> dict[str, object]:
    out: dict[str, object] = {}
    for group in ("day", "supplier", "channel"):
        response = await client.get("/v1/kpis", params={**WINDOW, "group_by": group})
        assert response.status_code == 200, response.text
        out[group] = response.json()
    ranking = await client.get("/v1/suppliers/ranking", params=WINDOW)
    assert ranking.status_code == 200, ranking.text
    out["ranking"] = ranking.json()
    return out


async def test_known_history_gives_exact_kpis_even_when_delivered_twice(
    database_url, settings_for, broker
):
    settings = settings_for(MetricsSettings, await database_url("metrics"))
    history = h.history()
    async with in_process(create_app, settings) as svc:
        svc.client.headers.update(API_KEY)  # the metrics API takes admin keys
        await svc.runtime.bus.wait_connected()
        await publish_envelopes(broker.bootstrap, history)
        await eventually(
            lambda: _applied(svc.client, h.DISTINCT_EVENTS), what="every distinct event applied"
        )
        first = await _reports(svc.client)
        by_day = first["day"]
        assert by_day["from"] == "2026-03-01" and by_day["to"] == "2026-03-03"
        assert by_day["group_by"] == "day"
        assert by_day["items"] == h.EXPECTED_BY_DAY
        assert by_day["total"] == h.EXPECTED_TOTAL
        assert first["supplier"]["items"] == h.EXPECTED_BY_SUPPLIER
        assert first["channel"]["items"] == h.EXPECTED_BY_CHANNEL
        ranking = first["ranking"]
        assert [(s["rank"], s["supplier_id"]) for s in ranking["items"]] == [(1, h.S1), (2, h.S2)]
        assert ranking["items"][0]["on_time_rate"] == 0.5 and ranking["next_cursor"] is None

        # everything again: the inbox turns every repeat into a no-op
        before = consumed("metrics", "order-placed", "duplicate")
        await publish_envelopes(broker.bootstrap, history)

        async def repeats_seen() -> bool:
            return consumed("metrics", "order-placed", "duplicate") - before >= 7

        await eventually(repeats_seen, what="the repeated order-placed events consumed")
        assert await _applied(svc.client, h.DISTINCT_EVENTS)
        assert await _reports(svc.client) == first

        exposition = (await svc.client.get("/metrics")).text
        assert 'dropship_kpi_orders_total{channel="shopify",currency="USD"}' in exposition
        assert 'dropship_kpi_delays_total{reason="at_risk",supplier_id="sup_alpha"}' in exposition
        assert (
            'dropship_kpi_notifications_total{channel="email",kind="cancellation",status="sent"}'
            in exposition
        )
        assert 'dropship_consumer_lag{group="metrics",partition=' in exposition


def _rebuild_cli(settings: MetricsSettings, *extra: str) -> dict[str, object]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.metrics.rebuild",
            "--database-url",
            settings.db_url,
            "--bootstrap",
            settings.kafka_bootstrap,
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def _publish_batched(bootstrap: str, envelopes) -> None:
    """Publish without waiting for each ack, so the broker stores multi-record batches."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    await producer.start()
    try:
        sent = [await producer.send(e.type, e.to_bytes(), key=e.key) for e in envelopes]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_a_replay_into_an_empty_database_rebuilds_the_same_kpis(
    database_url, settings_for, broker
):
    live_settings = settings_for(MetricsSettings, await database_url("metrics"))
    async with in_process(create_app, live_settings) as live:
        live.client.headers.update(API_KEY)  # the metrics API takes admin keys
        await live.runtime.bus.wait_connected()
        await _publish_batched(broker.bootstrap, h.history())
        await eventually(lambda: _applied(live.client, h.DISTINCT_EVENTS), what="events applied")
        expected = await _reports(live.client)

    replay_settings = settings_for(
        MetricsSettings, await database_url("metrics_replay"), consumers_enabled=False
    )
    stats = await asyncio.to_thread(_rebuild_cli, replay_settings)
    assert stats["read"] == len(h.history())
    assert stats["applied"] == h.DISTINCT_EVENTS
    assert stats["duplicates"] == len(h.history()) - h.DISTINCT_EVENTS
    again = await asyncio.to_thread(_rebuild_cli, replay_settings, "--reset")
    assert again["applied"] == h.DISTINCT_EVENTS
    async with in_process(create_app, replay_settings) as rebuilt:
        rebuilt.client.headers.update(API_KEY)  # the metrics API takes admin keys
        assert await _reports(rebuilt.client) == expected
        assert await _applied(rebuilt.client, h.DISTINCT_EVENTS)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_poison_messages_are_dead_lettered_and_do_not_stop_the_kpis(
    database_url, settings_for, broker
):
    from tests.support.kafka import consume, publish_raw

    settings = settings_for(MetricsSettings, await database_url("metrics"))
    async with in_process(create_app, settings) as svc:
        svc.client.headers.update(API_KEY)  # the metrics API takes admin keys
        await svc.runtime.bus.wait_connected()
        await publish_raw(broker.bootstrap, "order-placed", [b"{not json"], key=b"ord_X")
        await publish_envelopes(broker.bootstrap, h.history())
        await eventually(lambda: _applied(svc.client, h.DISTINCT_EVENTS), what="events applied")
        dead = await consume(broker.bootstrap, "order-placed.dlq", 1)
        assert dead[0].value == b"{not json"
        report = (await svc.client.get("/v1/kpis", params=WINDOW)).json()
        assert report["total"] == h.EXPECTED_TOTAL

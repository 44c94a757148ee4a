"""A real service process keeps its startup heap out of the collector's full scans while
it serves (`DROPSHIP_GC_FREEZE`), runs the young pass less often (`DROPSHIP_GC_YOUNG_THRESHOLD`),
restores both at shutdown, and reports the collector's time."""

from __future__ import annotations

import gc

import pytest

from services.metrics.app import create_app
from services.metrics.settings import MetricsSettings
from shared.infra import free_port
from tests.support.services import served


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("freeze", [True, False])
async def test_a_serving_service_tunes_its_collector_unless_told_not_to(
    database_url, settings_for, freeze: bool
) -> None:  # type: ignore[no-untyped-def]
    gc.unfreeze()
    port = free_port()
    young = 40_000 if freeze else 0
    settings = settings_for(
        MetricsSettings,
        await database_url("metrics"),
        port=port,
        gc_freeze=freeze,
        gc_young_threshold=young,
    )
    before = gc.get_threshold()
    async with served(create_app, settings, port) as svc:
        frozen_while_serving = gc.get_freeze_count()
        threshold_while_serving = gc.get_threshold()
        gc.collect()  # a full collection while serving is timed
        exposition = (await svc.client.get("/metrics")).text
    if freeze:
        assert frozen_while_serving > 10_000, "the modules and objects built at startup"
    else:
        assert frozen_while_serving == 0
    assert gc.get_freeze_count() == 0, "thawed at shutdown"
    assert threshold_while_serving == ((young, *before[1:]) if young else before)
    assert gc.get_threshold() == before, "restored at shutdown"
    assert 'dropship_gc_seconds_total{generation="2"}' in exposition

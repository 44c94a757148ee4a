"""A serving process keeps its startup heap out of the collector's full scans, and counts
the collector's time."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from shared.runtime import frozen_heap, time_gc, young_threshold
from shared.settings import ServiceSettings


def test_the_startup_heap_is_frozen_while_serving_and_thawed_after() -> None:
    with frozen_heap(True):
        assert gc.get_freeze_count() > 10_000, "modules and objects built so far"
    assert gc.get_freeze_count() == 0, "thawed at shutdown"


def test_freezing_can_be_switched_off() -> None:
    gc.unfreeze()
    with frozen_heap(False):
        assert gc.get_freeze_count() == 0
    assert ServiceSettings.model_fields["gc_freeze"].default is True


def test_the_young_threshold_is_raised_while_serving_and_restored_after() -> None:
    before = gc.get_threshold()
    with young_threshold(50_000):
        assert gc.get_threshold() == (50_000, *before[1:]), "older generations as they were"
    assert gc.get_threshold() == before
    with young_threshold(0):
        assert gc.get_threshold() == before, "0: the interpreter's own"
    assert ServiceSettings.model_fields["gc_young_threshold"].default == 50_000


def test_collector_time_is_counted_by_generation() -> None:
    def seconds() -> float:
        value = REGISTRY.get_sample_value("dropship_gc_seconds_total", {"generation": "2"})
        return value or 0.0

    time_gc()
    time_gc()  # once per process, however often asked
    before = seconds()
    gc.collect()
    assert seconds() > before
    assert [getattr(c, "__name__", "") for c in gc.callbacks].count("_time_gc") == 1

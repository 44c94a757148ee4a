"""Latency-tolerant consumers linger longer: per-service settings reach the runner."""

from __future__ import annotations

import pytest

from services.metrics.settings import MetricsSettings
from services.notify.settings import NotifySettings
from services.order.settings import OrderSettings
from services.supplier.settings import SupplierSettings
from shared.settings import ServiceSettings


def test_consumers_off_the_way_to_a_confirmation_linger_longer_than_the_shared_default():
    shared = ServiceSettings().kafka_linger_ms
    assert MetricsSettings().kafka_linger_ms == 1000 > shared
    assert NotifySettings().kafka_linger_ms == 1000 > shared
    assert OrderSettings().kafka_linger_ms == 1000 > shared
    assert SupplierSettings().kafka_linger_ms == shared, "on the way to a confirmation"


def test_each_service_reads_its_own_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DROPSHIP_METRICS_CONSUMER_LINGER_MS", "40")
    monkeypatch.setenv("DROPSHIP_NOTIFY_CONSUMER_LINGER_MS", "0")
    monkeypatch.setenv("DROPSHIP_ORDER_CONSUMER_LINGER_MS", "7")
    assert MetricsSettings().kafka_linger_ms == 40
    assert NotifySettings().kafka_linger_ms == 0
    assert OrderSettings().kafka_linger_ms == 7


def test_a_negative_linger_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DROPSHIP_NOTIFY_CONSUMER_LINGER_MS", "-1")
    with pytest.raises(ValueError, match="DROPSHIP_NOTIFY_CONSUMER_LINGER_MS"):
        NotifySettings()


def test_consumers_off_the_way_to_a_confirmation_let_the_broker_hold_their_fetches_longer(
    monkeypatch: pytest.MonkeyPatch,
):
    """An awake consumer costs the embedded broker a read of every partition it names
    several times per fetch wait: the services whose hops no confirmation waits for wait
    longer; the supplier, on the way to a confirmation, keeps the shared 100 ms."""
    for service in ("ORDER", "NOTIFY", "METRICS"):  # the suite's own (tests/conftest.py)
        monkeypatch.delenv(f"DROPSHIP_{service}_FETCH_MAX_WAIT_MS", raising=False)
    assert ServiceSettings().kafka_fetch_max_wait_ms == 100
    assert SupplierSettings().kafka_fetch_max_wait_ms == 100
    assert OrderSettings().kafka_fetch_max_wait_ms == 500
    assert NotifySettings().kafka_fetch_max_wait_ms == 500
    assert MetricsSettings().kafka_fetch_max_wait_ms == 1000
    for service in ("ORDER", "NOTIFY", "METRICS"):
        monkeypatch.setenv(f"DROPSHIP_{service}_FETCH_MAX_WAIT_MS", "40")
    assert OrderSettings().kafka_fetch_max_wait_ms == 40
    assert NotifySettings().kafka_fetch_max_wait_ms == 40
    assert MetricsSettings().kafka_fetch_max_wait_ms == 40
    assert SupplierSettings().kafka_fetch_max_wait_ms == 100, "not the supplier's variable"


@pytest.mark.parametrize("service", ["ORDER", "NOTIFY", "METRICS"])
@pytest.mark.parametrize("value", ["5001", "-1", "soon"])
def test_a_fetch_wait_out_of_range_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, service: str, value: str
):
    settings = {"ORDER": OrderSettings, "NOTIFY": NotifySettings, "METRICS": MetricsSettings}
    monkeypatch.setenv(f"DROPSHIP_{service}_FETCH_MAX_WAIT_MS", value)
    with pytest.raises(ValueError, match=f"DROPSHIP_{service}_FETCH_MAX_WAIT_MS"):
        settings[service]()


def test_notify_and_metrics_let_the_broker_hold_their_fetches(monkeypatch: pytest.MonkeyPatch):
    assert ServiceSettings().kafka_fetch_min_bytes == 1  # the others: answered at once
    assert SupplierSettings().kafka_fetch_min_bytes == 1  # on the way to a confirmation
    assert NotifySettings().kafka_fetch_min_bytes == MetricsSettings().kafka_fetch_min_bytes
    assert NotifySettings().kafka_fetch_min_bytes == 1024 * 1024
    monkeypatch.setenv("DROPSHIP_NOTIFY_FETCH_MIN_BYTES", "1")
    monkeypatch.setenv("DROPSHIP_METRICS_FETCH_MIN_BYTES", "4096")
    assert NotifySettings().kafka_fetch_min_bytes == 1
    assert MetricsSettings().kafka_fetch_min_bytes == 4096
    monkeypatch.setenv("DROPSHIP_METRICS_FETCH_MIN_BYTES", "0")
    with pytest.raises(ValueError, match="DROPSHIP_METRICS_FETCH_MIN_BYTES"):
        MetricsSettings()


def test_the_order_service_lets_the_broker_hold_its_fetch(monkeypatch: pytest.MonkeyPatch):
    """Its consumers follow the suppliers (status, shops' fulfilments): none is on the way
    to a supplier's confirmation, so a trickle of their events comes once per wait."""
    assert OrderSettings().kafka_fetch_min_bytes == 1024 * 1024
    monkeypatch.setenv("DROPSHIP_ORDER_FETCH_MIN_BYTES", "1")
    assert OrderSettings().kafka_fetch_min_bytes == 1
    monkeypatch.setenv("DROPSHIP_ORDER_FETCH_MIN_BYTES", str(50 * 1024 * 1024 + 1))
    with pytest.raises(ValueError, match="DROPSHIP_ORDER_FETCH_MIN_BYTES"):
        OrderSettings()

"""Production refuses development and placeholder secrets, loopback URLs and file-only mail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.console.settings import ConsoleSettings
from services.metrics.settings import MetricsSettings
from services.notify.settings import NotifySettings
from services.order.settings import OrderSettings
from services.supplier.settings import SupplierSettings
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / ".env.example", ROOT / "deploy/k8s/overlays/production/secrets.env.example"]

STRONG = {
    "DROPSHIP_ENVIRONMENT": "production",
    "DROPSHIP_API_KEYS": "storefront-key-4f1c8e2a9b7d3e6f0a5c",
    "DROPSHIP_ADMIN_API_KEYS": "admin-key-7e3b9d1f5a2c8e4b6d0f1a",
    "DROPSHIP_SERVICE_TOKEN": "service-token-8a2f6c1e4b9d7a3e5f0c",
    "DROPSHIP_PII_KEY": "cHJvZHVjdGlvbi10ZXN0LWtleS0zMi1ieXRlcyEhISE=",
    "DROPSHIP_TRACKING_SECRET": "tracking-secret-1e7b3d9f5a2c8e4b6d0f",
    "DROPSHIP_SHOPIFY_SECRET": "shopify-secret-6c0e2a8f4d1b9e7c3a5f",
    "DROPSHIP_WOOCOMMERCE_SECRET": "woocommerce-secret-2d9f5b1e7c3a8f0d4b",
    "DROPSHIP_SMTP_URL": "smtp+starttls://mailer:pw@smtp.mail.test:587",
    "DROPSHIP_ORDER_URL": "http://order:8001",
    "DROPSHIP_SUPPLIER_PUBLIC_URL": "https://suppliers.shop.test",
    "DROPSHIP_NOTIFY_PUBLIC_URL": "https://ops.shop.test",
    "DROPSHIP_SUPPLIER_URL": "http://supplier:8002",
    "DROPSHIP_NOTIFY_URL": "http://notify:8003",
    "DROPSHIP_METRICS_URL": "http://metrics:8004",
    "DROPSHIP_CONSOLE_SESSION_SECRET": "console-session-secret-3f8a1c6e9b2d4f7a",
}
SECRETS = {  # variable -> settings classes that read it
    "DROPSHIP_API_KEYS": [OrderSettings, SupplierSettings, NotifySettings, MetricsSettings],
    "DROPSHIP_ADMIN_API_KEYS": [OrderSettings, SupplierSettings, NotifySettings, MetricsSettings],
    "DROPSHIP_SERVICE_TOKEN": [OrderSettings, SupplierSettings, NotifySettings, MetricsSettings],
    "DROPSHIP_PII_KEY": [OrderSettings, SupplierSettings],
    "DROPSHIP_TRACKING_SECRET": [SupplierSettings],
    "DROPSHIP_SHOPIFY_SECRET": [OrderSettings],
    "DROPSHIP_WOOCOMMERCE_SECRET": [OrderSettings],
}
ALL = [OrderSettings, SupplierSettings, NotifySettings, MetricsSettings, ConsoleSettings]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in list(os.environ):
        if variable.startswith("DROPSHIP_"):
            monkeypatch.delenv(variable)
    for variable, value in STRONG.items():
        monkeypatch.setenv(variable, value)
    return monkeypatch


def _example_values() -> list[tuple[str, str, str]]:
    found = []
    for path in EXAMPLES:
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#") and key in SECRETS and value:
                for part in value.split(",") if key.endswith("API_KEYS") else [value]:
                    found.append((path.name, key, part))
    return found


@pytest.mark.parametrize("settings_cls", ALL)
def test_strong_production_configuration_starts(
    env: pytest.MonkeyPatch, settings_cls: type
) -> None:
    settings = settings_cls()
    assert settings.environment == "production"


@pytest.mark.parametrize(("source", "variable", "value"), _example_values())
def test_every_example_placeholder_is_refused_naming_its_variable(
    env: pytest.MonkeyPatch, source: str, variable: str, value: str
) -> None:
    env.setenv(variable, value)
    for settings_cls in SECRETS[variable]:
        with pytest.raises(ValidationError, match=variable):
            settings_cls()


def test_the_examples_hold_a_placeholder_for_every_secret() -> None:
    for path in EXAMPLES:
        listed = {key for name, key, _ in _example_values() if name == path.name}
        assert {"DROPSHIP_API_KEYS", "DROPSHIP_SERVICE_TOKEN", "DROPSHIP_PII_KEY"} <= listed
        assert "DROPSHIP_TRACKING_SECRET" in listed


@pytest.mark.parametrize("variable", sorted(SECRETS))
def test_short_secrets_are_refused(env: pytest.MonkeyPatch, variable: str) -> None:
    env.setenv(variable, "x7Qm2Lp9Rt4Vw8Yz" if variable != "DROPSHIP_PII_KEY" else "k1:c2hvcnQ=")
    for settings_cls in SECRETS[variable]:
        with pytest.raises(ValidationError, match=variable):
            settings_cls()


@pytest.mark.parametrize(
    ("variable", "settings_cls"),
    [
        ("DROPSHIP_API_KEYS", ServiceSettings),
        ("DROPSHIP_SERVICE_TOKEN", ServiceSettings),
        ("DROPSHIP_TRACKING_SECRET", SupplierSettings),
        ("DROPSHIP_PII_KEY", OrderSettings),
    ],
)
def test_development_defaults_are_refused(
    env: pytest.MonkeyPatch, variable: str, settings_cls: type
) -> None:
    env.delenv(variable)
    with pytest.raises(ValidationError, match=variable):
        settings_cls()


def test_one_weak_key_in_a_list_or_keyring_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("DROPSHIP_API_KEYS", f"{STRONG['DROPSHIP_API_KEYS']},dev-api-key")
    with pytest.raises(ValidationError, match="DROPSHIP_API_KEYS"):
        ServiceSettings()
    env.setenv("DROPSHIP_API_KEYS", STRONG["DROPSHIP_API_KEYS"])
    env.setenv("DROPSHIP_PII_KEY", f"new:{STRONG['DROPSHIP_PII_KEY']},old:c2hvcnQ=")
    with pytest.raises(ValidationError, match="DROPSHIP_PII_KEY"):
        OrderSettings()


@pytest.mark.parametrize(
    ("variable", "settings_cls"),
    [
        ("DROPSHIP_ORDER_URL", NotifySettings),
        ("DROPSHIP_NOTIFY_PUBLIC_URL", NotifySettings),
        ("DROPSHIP_SUPPLIER_PUBLIC_URL", SupplierSettings),
        ("DROPSHIP_ORDER_URL", ConsoleSettings),
        ("DROPSHIP_METRICS_URL", ConsoleSettings),
    ],
)
@pytest.mark.parametrize(
    "url",
    [None, "http://127.0.0.1:8001", "http://localhost:8001", "http://[::1]:80", "http://0.0.0.0"],
)
def test_loopback_or_unset_service_urls_are_refused(
    env: pytest.MonkeyPatch, variable: str, settings_cls: type, url: str | None
) -> None:
    if url is None:
        env.delenv(variable)
    else:
        env.setenv(variable, url)
    with pytest.raises(ValidationError, match=variable):
        settings_cls()


def test_loopback_urls_stay_fine_in_development(env: pytest.MonkeyPatch) -> None:
    env.setenv("DROPSHIP_ENVIRONMENT", "dev")
    env.setenv("DROPSHIP_ORDER_URL", "http://127.0.0.1:8001")
    env.delenv("DROPSHIP_SUPPLIER_PUBLIC_URL")
    assert NotifySettings().order_url == "http://127.0.0.1:8001"
    assert SupplierSettings().public_url == "http://127.0.0.1:8002"


def test_notify_refuses_to_start_without_smtp_in_production(env: pytest.MonkeyPatch) -> None:
    env.delenv("DROPSHIP_SMTP_URL")
    with pytest.raises(ValidationError, match="DROPSHIP_SMTP_URL"):
        NotifySettings()
    env.setenv("DROPSHIP_SMTP_URL", "")
    with pytest.raises(ValidationError, match="DROPSHIP_SMTP_URL"):
        NotifySettings()


def test_the_console_refuses_a_weak_session_secret_and_uses_an_admin_key(
    env: pytest.MonkeyPatch,
) -> None:
    assert ConsoleSettings().api_key == STRONG["DROPSHIP_ADMIN_API_KEYS"]
    env.setenv("DROPSHIP_CONSOLE_SESSION_SECRET", "change-me-console-session-secret-0000")
    with pytest.raises(ValidationError, match="DROPSHIP_CONSOLE_SESSION_SECRET"):
        ConsoleSettings()

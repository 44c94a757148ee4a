"""Parts the security and reliability review added: the bounded cache, signed timestamps,
the egress guard's address rules."""

from __future__ import annotations

import pytest

from shared.cache import BoundedTtlCache
from shared.egress import EgressPolicy
from shared.signing import CallbackRefused, sign_body, sign_callback, verify_callback


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_keeps_at_most_its_size_and_drops_the_least_recently_used() -> None:
    cache: BoundedTtlCache[str, int] = BoundedTtlCache(3, 60.0, Clock())
    for n in range(3):
        cache.put(f"k{n}", n)
    assert cache.get("k0") == (True, 0)  # k0 used: k1 is now the least recently used
    cache.put("k3", 3)
    assert len(cache) == 3
    assert cache.get("k1") == (False, None)
    assert cache.get("k0") == (True, 0) and cache.get("k3") == (True, 3)


def test_cache_entries_expire_and_expired_ones_go_first() -> None:
    clock = Clock()
    cache: BoundedTtlCache[str, int | None] = BoundedTtlCache(100, 2.0, clock)
    cache.put("unknown", None)
    assert cache.get("unknown") == (True, None)
    clock.now += 2.5
    assert cache.get("unknown") == (False, None)
    for n in range(500):
        cache.put(f"k{n}", n)
        clock.now += 0.01
    assert len(cache) <= 100


def test_a_cache_with_no_ttl_keeps_nothing() -> None:
    cache: BoundedTtlCache[str, int] = BoundedTtlCache(10, 0.0)
    cache.put("k", 1)
    assert cache.get("k") == (False, None) and len(cache) == 0


def _verify(body: bytes, signature: str | None, stamp: str | None, **kw: object) -> None:
    verify_callback(
        body=body,
        secret="s3cret",
        signature=signature,
        timestamp=stamp,
        prefix="X-Supplier",
        window_s=300,
        clock=lambda: 10_000.0,
        **kw,  # type: ignore[arg-type]
    )


def test_a_signed_timestamp_inside_the_window_is_authentic() -> None:
    _verify(b"{}", sign_callback("s3cret", "10000", b"{}"), "10000")
    _verify(b"{}", sign_callback("s3cret", "9750", b"{}"), "9750")


@pytest.mark.parametrize(
    ("stamp", "signed_stamp", "reason"),
    [
        ("9000", "9000", "replay window"),
        ("11000", "11000", "replay window"),
        ("10000", "9000", "X-Supplier-Signature"),  # a stale one moved forward
        (None, "10000", "X-Supplier-Timestamp"),
        ("1e4", "1e4", "X-Supplier-Timestamp"),
    ],
)
def test_stale_moved_or_missing_timestamps_are_refused_naming_why(
    stamp: str | None, signed_stamp: str, reason: str
) -> None:
    with pytest.raises(CallbackRefused, match=reason):
        _verify(b"{}", sign_callback("s3cret", signed_stamp, b"{}"), stamp)


def test_the_body_only_scheme_is_taken_only_when_allowed() -> None:
    old = sign_body("s3cret", b"{}")
    with pytest.raises(CallbackRefused):
        _verify(b"{}", old, None)
    _verify(b"{}", old, None, accept_unstamped=True)
    with pytest.raises(CallbackRefused):
        _verify(b"{}", sign_body("wrong", b"{}"), None, accept_unstamped=True)


async def test_the_kpi_cache_holds_a_bounded_number_of_windows() -> None:
    from datetime import date, timedelta

    from services.metrics.queries import FactsCache, Window

    class Facts:
        async def load(self, start: object, end: object) -> str:
            return "facts"

    class Uow:
        facts = Facts()

        async def __aenter__(self) -> Uow:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

    cache = FactsCache(Uow, ttl_s=60.0, max_windows=8)  # type: ignore[arg-type]
    first = date(2026, 1, 1)
    for n in range(100):  # a hundred made-up windows inside one TTL
        day = first + timedelta(days=n)
        assert await cache.facts(Window(day, day)) == "facts"
    assert len(cache._loads) <= 8


def test_production_cannot_turn_the_egress_guard_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.supplier.settings import SupplierSettings
    from tests.unit.test_production_settings import STRONG

    for variable, value in STRONG.items():
        monkeypatch.setenv(variable, value)
    assert SupplierSettings().guards_egress is True
    monkeypatch.setenv("DROPSHIP_EGRESS_GUARD", "false")
    with pytest.raises(ValueError, match="DROPSHIP_EGRESS_GUARD"):
        SupplierSettings()
    monkeypatch.delenv("DROPSHIP_EGRESS_GUARD")
    monkeypatch.setenv("DROPSHIP_ACCEPT_UNSTAMPED_CALLBACKS", "true")
    with pytest.raises(ValueError, match="DROPSHIP_ACCEPT_UNSTAMPED_CALLBACKS"):
        SupplierSettings()
    for variable in STRONG:
        monkeypatch.delenv(variable)
    assert SupplierSettings(environment="dev").guards_egress is False
    assert SupplierSettings(environment="dev", egress_guard=True).guards_egress is True


def test_every_kind_of_internal_address_is_refused_unless_allow_listed() -> None:
    import ipaddress

    policy = EgressPolicy.parse(True, "10.20.0.0/16, erp.corp.example, .onprem.example")
    for internal in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1",
                     "fc00::1", "::ffff:10.0.0.1"):  # fmt: skip
        assert policy.refusal(ipaddress.ip_address(internal)), internal
    assert policy.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("93.184.216.34")) is None
    assert policy.host_allowed("ERP.corp.example") and policy.host_allowed("a.onprem.example")
    assert not policy.host_allowed("erp.corp.example.evil.test")

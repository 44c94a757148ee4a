"""Parts the security and reliability review added: the bounded cache, signed timestamps,
the egress guard's address rules."""

from __future__ import annotations

import pytest

from shared.cache import BoundedTtlCache
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

"""Ports for servers the tests start: never one an outgoing connection could take first."""

from __future__ import annotations

import socket

import pytest

from shared import infra


def test_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    floor = infra._ephemeral_floor()
    ports = [infra.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports), "a port handed out twice"
    assert all(p < floor for p in ports), "a port the kernel may give to a client"


def test_a_port_something_listens_on_is_never_handed_out(monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        real, calls = infra.random.randrange, []

        def pick(low: int, high: int) -> int:
            calls.append(low)
            return busy if len(calls) <= 2 else real(low, high)

        monkeypatch.setattr(infra.random, "randrange", pick)
        monkeypatch.setattr(infra, "_ephemeral_floor", lambda: 65_535)
        assert infra.free_port() != busy and len(calls) >= 3


def test_ports_stay_within_the_configured_range(monkeypatch) -> None:
    monkeypatch.setattr(infra, "_ephemeral_floor", lambda: 32_768)
    monkeypatch.setenv("DROPSHIP_PORT_RANGE", "20000-20400")
    ports = {infra.free_port() for _ in range(100)}
    assert all(20_000 <= p < 20_400 for p in ports)


@pytest.mark.parametrize("spec", ["30000-40000", "20000", "x-y", "500-900", "21000-20000"])
def test_a_bad_range_is_refused_by_name(monkeypatch, spec: str) -> None:
    monkeypatch.setattr(infra, "_ephemeral_floor", lambda: 32_768)
    monkeypatch.setenv("DROPSHIP_PORT_RANGE", spec)
    with pytest.raises(ValueError, match=f"DROPSHIP_PORT_RANGE='{spec}'"):
        infra.free_port()

"""`make up` stopped in the middle of a burst and started again: every accepted order ends.

The embedded broker keeps nothing across a restart; the outboxes publish again what it
lost, the consumers' inboxes drop what they had already handled, and the supplier
simulator (a real supplier does not forget) carries on the orders it took.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.support.stack import LocalStack, wait_all

BURST = 120


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_every_order_accepted_before_a_restart_is_delivered_after_it(
    tmp_path: Path, stop: signal.Signals
) -> None:
    stack = LocalStack(tmp_path / "var").start()
    try:
        stack.add_supplier(
            "restart-goods", "REST-1", stock=1000, latency_ms=20, ship_after_s=1, deliver_after_s=1
        )
        placed = asyncio.run(stack.place(BURST, "REST-1"))
        assert len(placed) == BURST, f"{len(placed)} of {BURST} taken: {stack.refused}"
        before = stack.statuses(set(placed))
        code = stack.stop(stop)
        assert code == (0 if stop is signal.SIGTERM else -signal.SIGKILL), stack.tail()

        restarted = time.monotonic()
        stack.start()
        counts, _ = wait_all(stack, set(placed), "delivered", timeout=150)
        took = time.monotonic() - restarted
        stats = stack.simulator_stats("restart-goods")
        print(f"\nrestart ({stop.name}) with {before} -> {counts} in {took:.1f} s; sim {stats}")
        assert counts["delivered"] == BURST, f"{counts} {took:.0f} s after the restart; {stats}"
        assert stats["orders"] == BURST, "each order bought once, the restart changed nothing"
    finally:
        if stack.launcher is not None and stack.launcher.poll() is None:
            assert stack.stop() == 0, stack.tail()

"""A burst through `make up`'s launcher: 400 orders at once for one supplier, none lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support.stack import LocalStack, wait_all

BURST = 400


def test_a_burst_of_orders_for_one_supplier_is_all_delivered(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "var").start()
    try:
        stack.add_supplier(
            "burst-goods", "BURST-1", stock=1000, latency_ms=20, ship_after_s=1, deliver_after_s=1
        )
        started = time.monotonic()
        placed = asyncio.run(stack.place(BURST, "BURST-1"))
        assert len(placed) == BURST, f"{len(placed)} of {BURST} taken: {stack.refused}"
        counts, _ = wait_all(stack, set(placed), "delivered", timeout=150)
        took = time.monotonic() - started
        stats = stack.simulator_stats("burst-goods")
        print(f"\nburst: {counts} in {took:.1f} s ({stack.shed} placements retried after 503)")
        print(f"simulator: {stats}")
        assert counts["needs_attention"] == 0, counts
        assert counts["delivered"] == BURST, f"{counts} after {took:.0f} s; simulator {stats}"
        assert stats["orders"] == BURST, stats
        assert stats["given_up"] == 0, f"the simulator gave up on callbacks: {stats}"
    finally:
        assert stack.stop() == 0, stack.tail()

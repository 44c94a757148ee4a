"""Scale-out: two supplier-service replicas in one consumer group share the order stream.

Two real uvicorn processes on one PostgreSQL database and one broker, suppliers at
the simulator. The stream is split across both replicas; then one is killed (-9)
mid-stream and the other takes its partitions over (orders then arrive on every
partition, and the survivor works them all). In the end every order has
exactly one supplier order per supplier at the simulator, one confirmation each,
and every line is confirmed: nothing lost, nothing done twice across the rebalance.
"""

from __future__ import annotations

import collections
import types
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2
from prometheus_client.parser import text_string_to_metric_families

from services.supplier.dispatcher import LEASE
from shared.crypto import generate_key
from shared.events import Envelope
from shared.infra import free_port
from shared.testing import eventually
from tests.support.kafka import partition_count, publish_envelopes
from tests.support.services import ServiceProcess
from tests.support.supplier import ADMIN, add_supplier, control, placed, reached, sim_orders

pytestmark = pytest.mark.parametrize("backend", ["postgresql"])

SUPPLIERS = {"acme": "MUG", "bolt": "TEA"}  # supplier key -> the one SKU it offers


def _replica(name: str, port: int, env: dict[str, str], log_dir: Path) -> ServiceProcess:
    return ServiceProcess(
        "supplier", {**env, "DROPSHIP_SUPPLIER_PORT": str(port)}, port, log_dir / f"{name}.log"
    )


async def _consumed(replica: ServiceProcess) -> tuple[int, set[int]]:
    """Orders this replica routed (its own count) and the partitions it worked, from /metrics."""
    async with httpx.AsyncClient(base_url=replica.url, timeout=5) as client:
        text = (await client.get("/metrics")).text
    processed, partitions = 0, set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("group") != "supplier" or labels.get("topic") != "order-placed":
                continue
            if sample.name == "dropship_events_consumed_total" and labels["outcome"] == "processed":
                processed = int(sample.value)
            if sample.name == "dropship_consumer_lag":
                partitions.add(int(labels["partition"]))
    return processed, partitions


def _covering(make: Callable[[], Envelope], partitions: int, per_partition: int) -> list[Envelope]:
    """New orders whose keys land `per_partition` times on every partition (Kafka's murmur2)."""
    chosen: dict[int, list[Envelope]] = {p: [] for p in range(partitions)}
    while any(len(found) < per_partition for found in chosen.values()):
        envelope = make()
        found = chosen[(murmur2(envelope.key) & 0x7FFFFFFF) % partitions]
        if len(found) < per_partition:
            found.append(envelope)
    return [e for found in chosen.values() for e in found]


async def _read_topic(bootstrap: str, topic: str) -> list[Envelope]:
    """Every message on `topic` now, from the beginning of each partition to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster metadata
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Envelope] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [Envelope.from_bytes(r.value) for r in records]
        return found
    finally:
        await consumer.stop()


async def test_two_replicas_split_the_stream_and_a_killed_one_leaves_nothing_done_twice(
    broker, database_url, simulator, tmp_path, order_contacts
):
    database = await database_url("supplier")
    port_a, port_b = free_port(), free_port()
    env = {
        "DROPSHIP_ENVIRONMENT": "test",
        "DROPSHIP_DATA_DIR": str(tmp_path),
        "DROPSHIP_SUPPLIER_DATABASE_URL": database,
        # the killed replica's leased supplier calls are taken over after 5 s, not 60
        "DROPSHIP_SUPPLIER_LEASE_S": "5",
        "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "DROPSHIP_PII_KEY": generate_key(),  # one key: either replica reads what the other sealed
        # suppliers call back through one address, as through a Kubernetes Service; here it
        # is the replica that survives
        "DROPSHIP_SUPPLIER_PUBLIC_URL": f"http://127.0.0.1:{port_b}",
        "DROPSHIP_DISPATCHER_POLL_S": "0.2",
        "DROPSHIP_OUTBOX_POLL_INTERVAL_S": "0.5",
        "DROPSHIP_LOG_JSON": "false",
        "DROPSHIP_ORDER_URL": order_contacts.url,  # ship-to addresses, read at call time
    }
    a = _replica("supplier-a", port_a, env, tmp_path).start()
    b = _replica("supplier-b", port_b, env, tmp_path)
    try:
        b.start()
        async with httpx.AsyncClient(base_url=b.url, timeout=10) as client:
            admin = types.SimpleNamespace(client=client, simulator=simulator)
            suppliers = {
                key: await add_supplier(admin, key, offers=[(sku, "2.00", 100_000, 24)])
                for key, sku in SUPPLIERS.items()
            }
            for key in SUPPLIERS:
                await control(admin, key, never_ship=True)

            orders: list[Envelope] = []

            def order() -> Envelope:
                return placed(("MUG", 1, "12.50"), ("TEA", 1, "4.00"))

            async def stream(batch: list[Envelope]) -> None:
                await publish_envelopes(broker.bootstrap, batch)
                orders.extend(batch)

            # 1. a closed-loop stream until both replicas have routed orders of their own
            split = None
            for _ in range(40):
                await stream([order() for _ in range(4)])

                async def all_routed_once():
                    counts = [await _consumed(r) for r in (a, b)]
                    total = sum(processed for processed, _ in counts)
                    assert total <= len(orders), f"an order was routed twice: {counts}"
                    return counts if total == len(orders) else None

                counts = await eventually(all_routed_once, timeout=30, what="orders routed")
                if all(processed > 0 for processed, _ in counts):
                    split = counts
                    break
            assert split is not None, "one replica did all the work"
            (routed_a, partitions_a), (routed_b, partitions_b) = split
            assert routed_a > 0 and routed_b > 0 and partitions_a and partitions_b

            # 2. kill one replica with work in flight; the stream goes on to the survivor
            await stream([order() for _ in range(20)])
            routed_by_a, _ = await _consumed(a)  # it may route a few more before it dies
            a.kill()
            partitions = await partition_count(broker.bootstrap, "order-placed")
            await stream(_covering(order, partitions, per_partition=3))

            # 3. the survivor takes the dead replica's partitions (and expired leases) over
            order_ids = {o.subject for o in orders}

            async def all_at_the_simulator():
                placed_at = {key: await sim_orders(admin, key) for key in SUPPLIERS}
                seen = [{o["order_id"] for o in items} for items in placed_at.values()]
                return placed_at if all(s == order_ids for s in seen) else None

            at_simulator = await eventually(
                all_at_the_simulator,
                timeout=LEASE.total_seconds() + 45,
                what="every order at both suppliers",
            )
            for key, items in at_simulator.items():
                per_order = collections.Counter(o["order_id"] for o in items)
                assert set(per_order.values()) == {1}, f"{key} got an order twice: {per_order}"
                keys = [o["idempotency_key"] for o in items]
                assert len(keys) == len(set(keys)) == len(order_ids)

            async def confirmed(order_id: str):
                response = await client.get(
                    "/v1/allocations", params={"order_id": order_id}, headers=ADMIN
                )
                items = response.json()["items"]
                return (
                    items
                    if len(items) == 2 and all(reached(i["state"], "accepted") for i in items)
                    else None
                )

            for order in orders:
                lines = await eventually(
                    lambda order=order: confirmed(order.subject), what="order confirmed"
                )
                assert {(i["sku"], i["supplier_id"]) for i in lines} == {
                    (sku, suppliers[key]) for key, sku in SUPPLIERS.items()
                }

            async def outbox_drained():
                async with httpx.AsyncClient(base_url=b.url) as probe:
                    text = (await probe.get("/metrics")).text
                return 'dropship_outbox_backlog{service="supplier"} 0.0' in text

            await eventually(outbox_drained, what="every confirmation published")
            routed_by_b, worked_by_b = await _consumed(b)
            assert routed_by_b + routed_by_a <= len(orders), "the survivor re-applied orders"
            assert worked_by_b == set(range(partitions)), "the survivor took every partition"
        confirmations = collections.defaultdict(set)
        for event in await _read_topic(broker.bootstrap, "supplier-confirmed"):
            confirmations[event.subject, event.data["supplier_id"]].add(event.id)
        assert set(confirmations) == {
            (order_id, supplier_id) for order_id in order_ids for supplier_id in suppliers.values()
        }
        twice = {pair: ids for pair, ids in confirmations.items() if len(ids) != 1}
        assert not twice, f"confirmed more than once: {twice}"
    finally:
        a.kill()
        b.stop()

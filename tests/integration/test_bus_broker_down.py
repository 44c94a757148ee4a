"""A Kafka client that cannot start (the broker is down) is closed, not left open.

aiokafka leaves the connections of a failed `start()` open, and they are only reported as
"Unclosed AIOKafkaProducer" when collected. A service retries while the broker is away
(its producer at start, the relay's probe of topic sizes when it takes the lead, the DLQ
watch), so every failed attempt leaked a client until then.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.bus import BusConfig, KafkaBus, start_or_close
from shared.infra import free_port

pytestmark = pytest.mark.integration

CLIENTS: dict[str, Callable[[str], Any]] = {  # an admin client closes itself
    "producer": lambda bootstrap: AIOKafkaProducer(bootstrap_servers=bootstrap),
    "consumer": lambda bootstrap: AIOKafkaConsumer(bootstrap_servers=bootstrap),
}


async def _left_open(attempt: Callable[[], Awaitable[Any]]) -> list[str]:
    """What the collector reports unclosed after `attempt` failed against a down broker."""
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with pytest.raises((KafkaError, OSError)):
                await attempt()
            gc.collect()
            await asyncio.sleep(0)
        return reported + [str(w.message).split(" <")[0] for w in caught]
    finally:
        loop.set_exception_handler(before)


@pytest.mark.parametrize("kind", sorted(CLIENTS))
async def test_a_client_that_cannot_start_is_closed(kind):
    down = f"127.0.0.1:{free_port()}"
    assert await _left_open(lambda: start_or_close(CLIENTS[kind](down))) == []


async def test_asking_a_down_broker_for_topic_sizes_leaves_no_client_open():
    bus = KafkaBus(BusConfig(bootstrap=f"127.0.0.1:{free_port()}", client_id="sizes"))
    assert await _left_open(lambda: bus.topic_sizes(["order-placed"])) == []

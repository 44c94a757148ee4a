"""Dead-letter queue tool: list what is in `<topic>.dlq` and replay it onto `<topic>`.

    python -m shared.dlq list   [--topic order-placed]
    python -m shared.dlq replay --topic order-placed

Replay republishes each dead letter (original key, value and headers, without the
`dlq.*` ones) to its original topic and remembers how far it got in the consumer
group `dropship-dlq-replay`, so a second replay does not resend. Consumers dedupe on
the event id, so replaying something that already succeeded is harmless.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.bus import DLQ_SUFFIX, EVENT_TOPICS, start_or_close
from shared.consumer import DLQ_HEADER_PREFIX

REPLAY_GROUP = "dropship-dlq-replay"


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def dlq_headers(self) -> dict[str, str]:
        return {
            k[len(DLQ_HEADER_PREFIX) :]: v.decode(errors="replace")
            for k, v in self.headers
            if k.startswith(DLQ_HEADER_PREFIX)
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "dlq_topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key.decode(errors="replace") if self.key else None,
            "value": (self.value or b"")[:500].decode(errors="replace"),
            **self.dlq_headers,
        }


async def _read(
    bootstrap: str, dlq_topic: str, group: str | None
) -> AsyncIterator[tuple[AIOKafkaConsumer, DeadLetter]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await start_or_close(consumer)
    try:
        partitions = consumer.partitions_for_topic(dlq_topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(dlq_topic) or set()
        tps = [TopicPartition(dlq_topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        if group is None:
            await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= end[tp]:
                        continue
                    yield (
                        consumer,
                        DeadLetter(
                            dlq_topic, r.partition, r.offset, r.key, r.value, list(r.headers or [])
                        ),
                    )
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
    finally:
        await consumer.stop()


async def list_dead_letters(bootstrap: str, topics: Sequence[str]) -> list[DeadLetter]:
    found = []
    for topic in topics:
        async for _, letter in _read(bootstrap, topic + DLQ_SUFFIX, None):
            found.append(letter)
    return found


async def replay(bootstrap: str, topic: str) -> int:
    """Republish every not-yet-replayed dead letter of `topic`; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await start_or_close(producer)
    count = 0
    try:
        async for consumer, letter in _read(bootstrap, topic + DLQ_SUFFIX, REPLAY_GROUP):
            target = letter.dlq_headers.get("original_topic", topic)
            headers = [(k, v) for k, v in letter.headers if not k.startswith(DLQ_HEADER_PREFIX)]
            headers.append(("dlq.replayed_from", f"{letter.partition}:{letter.offset}".encode()))
            await producer.send_and_wait(target, letter.value, key=letter.key, headers=headers)
            tp = TopicPartition(letter.topic, letter.partition)
            await consumer.commit({tp: letter.offset + 1})
            count += 1
    finally:
        await producer.stop()
    return count


def main(argv: Sequence[str] | None = None) -> int:
    from shared.settings import ServiceSettings

    parser = argparse.ArgumentParser(
        prog="python -m shared.dlq", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--bootstrap", default=ServiceSettings().kafka_bootstrap)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="print dead letters as JSON lines")
    listing.add_argument("--topic", choices=EVENT_TOPICS, action="append")
    again = sub.add_parser("replay", help="republish dead letters to their original topic")
    again.add_argument("--topic", choices=EVENT_TOPICS, required=True)
    args = parser.parse_args(argv)
    if args.command == "list":
        letters = asyncio.run(list_dead_letters(args.bootstrap, args.topic or EVENT_TOPICS))
        for letter in letters:
            print(json.dumps(letter.as_json(), ensure_ascii=False))
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    else:
        n = asyncio.run(replay(args.bootstrap, args.topic))
        print(f"replayed {n} message(s) onto {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

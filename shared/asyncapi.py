"""AsyncAPI 3.0 catalogue of every topic, generated from the pydantic event models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import yaml
from pydantic import BaseModel

from shared.bus import DLQ_SUFFIX
from shared.events import EVENT_TYPES, Envelope, EventData

Schema = dict[str, Any]

ASYNCAPI_VERSION: Final = "3.0.0"
TITLE: Final = "Dropship fulfilment events"
REF_TEMPLATE: Final = "#/components/schemas/{model}"
KAFKA_BINDING_VERSION: Final = "0.5.0"
DLQ_REPLAYER: Final = "dlq-replay"
"""The operator tool `python -m shared.dlq` that reads dead letters and replays them."""


class Flow(NamedTuple):
    producer: str
    consumers: tuple[str, ...]


FLOWS: Final[dict[str, Flow]] = {
    "order-placed": Flow("order", ("supplier", "metrics")),
    "order-cancelled": Flow("order", ("order", "supplier", "notify", "metrics")),
    "supplier-confirmed": Flow("supplier", ("order", "metrics")),
    "order-routing-failed": Flow("supplier", ("order", "notify", "metrics")),
    "shipment-dispatched": Flow("supplier", ("order", "notify", "metrics")),
    "shipment-delayed": Flow("supplier", ("order", "notify", "metrics")),
    "shipment-delivered": Flow("supplier", ("order", "metrics")),
    "notification-sent": Flow("notify", ("metrics",)),
    "supplier-status-changed": Flow("supplier", ("notify",)),
    "order-held": Flow("order", ("supplier", "notify", "metrics")),
    "order-released": Flow("order", ("supplier", "notify", "metrics")),
    "order-lines-waiting": Flow("supplier", ("order", "notify")),
    "marketplace-sync-failed": Flow("order", ("notify", "metrics")),
    # after-sales (DESIGN §6)
    "return-requested": Flow("order", ("notify", "metrics")),
    "return-authorized": Flow("order", ("supplier", "notify", "metrics")),
    "return-rejected": Flow("order", ("notify", "metrics")),
    "return-received": Flow("order", ("metrics",)),
    "refund-issued": Flow("order", ("order", "supplier", "notify", "metrics")),
    "complaint-filed": Flow("order", ("notify", "metrics")),
    "complaint-responded": Flow("order", ("notify", "metrics")),
    "complaint-resolved": Flow("order", ("notify", "metrics")),
}
"""Which service sends each topic and which receive it (DESIGN §1); metrics reads every topic."""

SERVERS: Final[dict[str, Schema]] = {
    "production": {
        "host": "kafka:9092",
        "protocol": "kafka",
        "description": "Apache Kafka (KRaft) of docker-compose.yml and deploy/.",
    },
    "embedded": {
        "host": "127.0.0.1:9092",
        "protocol": "kafka",
        "description": "Kafka-compatible broker started by `make up` (DROPSHIP_KAFKA_BOOTSTRAP).",
    },
}

DLQ_HEADERS: Final[dict[str, str]] = {
    "dlq.error_type": "Class name of the exception of the last attempt.",
    "dlq.error_message": "Message of that exception (at most 2000 characters).",
    "dlq.attempts": "Delivery attempts made before giving up (decimal integer).",
    "dlq.original_topic": "Topic the message was consumed from.",
    "dlq.original_partition": "Partition it was consumed from (decimal integer).",
    "dlq.original_offset": "Its offset in that partition (decimal integer).",
    "dlq.consumer_group": "Consumer group whose handler failed.",
    "dlq.failed_at": "When it was dead-lettered (ISO 8601, UTC).",
}
"""Headers `shared.consumer.dead_letter_headers` adds to every dead letter."""


def catalogue_version() -> str:
    """Major version = 1 + every schema version bump, so any bump changes the catalogue's."""
    return f"{1 + sum(model.version - 1 for model in EVENT_TYPES.values())}.0.0"


def _ref(name: str) -> Schema:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _title(event_type: str) -> str:
    return event_type.replace("-", " ").capitalize()


def _key_binding(description: str) -> Schema:
    key = {"type": "string", "description": description}
    return {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}}


def component_schemas() -> dict[str, Schema]:
    """The envelope and every event model, their nested `$defs` hoisted beside them."""
    schemas: dict[str, Schema] = {}

    def add(name: str, schema: Schema) -> None:
        if schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are named {name!r}")

    models: list[type[BaseModel]] = [Envelope, *EVENT_TYPES.values()]
    for model in models:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        for name, sub in schema.pop("$defs", {}).items():
            add(name, sub)
        add(model.__name__, schema)
    return schemas


def envelope_schema(model: type[EventData]) -> Schema:
    """The CloudEvents envelope of one event type, its `data` being that type's schema."""
    schema = Envelope.model_json_schema(ref_template=REF_TEMPLATE)
    schema["title"] = f"{model.__name__}Envelope"
    props = schema["properties"]
    props["type"] = {**props["type"], "const": model.event_type}
    props["source"] = {**props["source"], "const": model.source_service}
    props["dataschema"] = {**props["dataschema"], "const": f"{model.event_type}/v{model.version}"}
    props["data"] = _ref(model.__name__)
    return schema


def _event_channel(topic: str, model: type[EventData]) -> Schema:
    flow = FLOWS[topic]
    message = {
        "name": model.__name__,
        "title": _title(topic),
        "contentType": "application/json",
        "correlationId": {"location": "$message.payload#/subject"},
        "payload": envelope_schema(model),
        "bindings": _key_binding(
            "The envelope `subject`: the order id (one partition per order), or the"
            " supplier id for supplier-status-changed."
        ),
    }
    return {
        "address": topic,
        "title": _title(topic),
        "description": (
            f"Sent by {flow.producer}, received by {', '.join(flow.consumers)}. "
            "Consumers deduplicate on the envelope `id`."
        ),
        "messages": {model.__name__: message},
    }


def _dead_letter_channel(topic: str, model: type[EventData]) -> Schema:
    headers = {
        "type": "object",
        "description": "The original message's headers, plus these.",
        "properties": {
            name: {"type": "string", "description": d} for name, d in DLQ_HEADERS.items()
        },
        "required": list(DLQ_HEADERS),
        "additionalProperties": True,
    }
    message = {
        "name": f"{model.__name__}DeadLetter",
        "title": f"{_title(topic)} dead letter",
        "contentType": "application/json",
        "headers": headers,
        "payload": {
            "description": (
                f"The original value, byte for byte: normally the {model.__name__} envelope "
                f"(channel {topic}), possibly the malformed bytes that could not be parsed."
            )
        },
        "bindings": _key_binding("The original message key (the order id)."),
    }
    return {
        "address": topic + DLQ_SUFFIX,
        "title": f"{_title(topic)} dead letters",
        "description": (
            f"Messages of {topic} a consumer gave up on after its retries. "
            f"Replay them with `python -m shared.dlq replay --topic {topic}`."
        ),
        "messages": {message["name"]: message},
    }


def _operation(service: str, action: str, channel: Schema, summary: str) -> Schema:
    address = channel["address"]
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{address}"},
        "summary": summary,
        "tags": [{"name": service}],
        "messages": [
            {"$ref": f"#/channels/{address}/messages/{name}"} for name in channel["messages"]
        ],
    }


def _operations(channels: dict[str, Schema]) -> dict[str, Schema]:
    ops: dict[str, Schema] = {}

    def add(service: str, action: str, address: str, summary: str) -> None:
        ops[f"{service}.{action}.{address}"] = _operation(
            service, action, channels[address], summary
        )

    for topic, (producer, consumers) in FLOWS.items():
        dlq = topic + DLQ_SUFFIX
        add(producer, "send", topic, f"{producer} publishes {topic} through its outbox.")
        for service in consumers:
            add(service, "receive", topic, f"{service} consumes {topic}.")
        for service in consumers:
            add(service, "send", dlq, f"{service} dead-letters {topic} it cannot process.")
        add(DLQ_REPLAYER, "receive", dlq, f"The DLQ tool lists and reads dead {topic} letters.")
        add(DLQ_REPLAYER, "send", topic, f"The DLQ tool replays dead letters onto {topic}.")
    return ops


def document() -> Schema:
    """The AsyncAPI 3.0.0 document as plain data."""
    if set(FLOWS) != set(EVENT_TYPES):
        raise ValueError(f"FLOWS and EVENT_TYPES disagree: {sorted(set(FLOWS) ^ set(EVENT_TYPES))}")
    channels = {topic: _event_channel(topic, model) for topic, model in EVENT_TYPES.items()}
    channels |= {t + DLQ_SUFFIX: _dead_letter_channel(t, m) for t, m in EVENT_TYPES.items()}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": catalogue_version(),
            "description": (
                "Every topic is named after its event type and carries CloudEvents 1.0 "
                "structured JSON envelopes keyed by order id. Money is a decimal string. "
                "Generated from shared/events.py by `make asyncapi`; do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {name: dict(server) for name, server in SERVERS.items()},
        "channels": channels,
        "operations": _operations(channels),
        "components": {"schemas": component_schemas()},
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    """The document as deterministic YAML."""
    return yaml.dump(document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.asyncapi", description=__doc__)
    parser.add_argument("--check", metavar="FILE", type=Path, help="exit 1 if FILE is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    current = args.check.read_text(encoding="utf-8") if args.check.exists() else None
    if current != text:
        print(f"{args.check} is stale: run `make asyncapi`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

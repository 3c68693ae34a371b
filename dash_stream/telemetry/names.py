"""Span names and attribute keys (OpenTelemetry messaging semantic conventions), in one place.

Span names follow `{operation} {destination}`: `send swarm.s1.agent.a7`, `process swarm.s1.agent.a7`
(`process` alone when a batch spans several topics), `deliver swarm.s1.agent.a7`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

SYSTEM: Final = "dash-stream"

# messaging semantic conventions
MESSAGING_SYSTEM: Final = "messaging.system"
DESTINATION: Final = "messaging.destination.name"
MESSAGE_ID: Final = "messaging.message.id"
BATCH_COUNT: Final = "messaging.batch.message_count"
OPERATION_TYPE: Final = "messaging.operation.type"
OPERATION_NAME: Final = "messaging.operation.name"
CONSUMER_GROUP: Final = "messaging.consumer.group.name"
CLIENT_ID: Final = "messaging.client.id"
ERROR_TYPE: Final = "error.type"

# dash-stream's own attributes
OFFSET: Final = "dash.offset"
PRIORITY: Final = "dash.priority"
EVENT_TYPE: Final = "dash.event.type"
EVENT_SOURCE: Final = "dash.event.source"
DUPLICATE: Final = "dash.duplicate"
TRANSPORT: Final = "dash.transport"
SUBSCRIPTION: Final = "dash.subscription"
SUBSCRIBER_CLOSED: Final = "dash.subscriber.closed"
LINKS_DROPPED: Final = "dash.links.dropped"
DELIVER_SPANS: Final = "dash.deliver.spans"
ROUTE: Final = "dash.bridge.route"
RECEIVER: Final = "dash.bridge.receiver"
GROUP: Final = "dash.bridge.group"
BRIDGE_MESSAGE_ID: Final = "dash.bridge.message.id"

# the operations
SEND: Final = "send"
PROCESS: Final = "process"
DELIVER: Final = "deliver"
FORWARD: Final = "forward"
DIGEST: Final = "digest"


def span_name(operation: str, topics: Iterable[str]) -> str:
    """`{operation} {topic}` when every topic is the same one, else the bare operation."""
    first: str | None = None
    for topic in topics:
        if first is None:
            first = topic
        elif topic != first:
            return operation
    return operation if first is None else f"{operation} {first}"

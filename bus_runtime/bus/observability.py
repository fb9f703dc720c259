"""Observability of the bus: a small metrics hook and the structured log fields.

`BusMetrics` has one method per thing worth counting; its methods do nothing, so a
subclass overrides only what it needs. Adapters (`bus_runtime.contrib.prometheus`, or an
OpenTelemetry one of your own) turn the calls into instruments. Calls happen on the event
loop, once per publish and per handled message: keep them cheap and never raise.

Log records of `bus_runtime.bus` carry their fields as `extra` (event_id, topic, subject,
stream, consumer, stream_seq, num_delivered, trace_id), so a JSON log formatter emits them
as fields; the message text repeats the important ones for plain-text logs.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("bus_runtime.bus")

# Outcomes of one delivered message (the `outcome` argument of `BusMetrics.handled`).
ACKED = "acked"
RETRIED = "retried"  # handler failed, NAK with a delay: the server redelivers it
DEAD_LETTERED = "dead_lettered"
LEFT = "left"  # could not be dead-lettered: left in the stream, logged as an error
RETURNED = "returned"  # fetched, still not started when stop's grace ran out: NAK, no delay
SKIPPED = "skipped"  # a replayed dead letter meant for another consumer of the stream: acked


class BusMetrics:
    """Counters and latencies of a bus; subclass and override what you record."""

    def published(self, topic: str, ok: bool, seconds: float, attempts: int) -> None:
        """One publish finished: acknowledged (`ok`) or given up after `attempts` sends.

        Args:
            topic: The topic name.
            ok: True when the server acknowledged it (also for a deduplicated retry).
            seconds: From the first send to the outcome.
            attempts: Sends made (1 when no retry was needed).
        """

    def handled(self, topic: str, consumer: str, outcome: str, seconds: float) -> None:
        """One delivered message was dealt with.

        Args:
            topic: The topic name (or the subject when the message had no known topic).
            consumer: The durable consumer's name.
            outcome: `acked`, `retried`, `dead_lettered`, `left`, `returned` or `skipped`.
            seconds: Time in the handler (0 when it did not run).
        """

    def dead_lettered(self, stream: str, consumer: str, reason: str) -> None:
        """A message went to the dead letters (`reason`: handler-failed, schema, not-json ...)."""


def log_fields(**fields: Any) -> dict[str, Any]:
    """The `extra` of a log record: the bus's fields, None values left out."""
    return {k: v for k, v in fields.items() if v is not None}

"""`BusMetrics` for prometheus_client (install the `prometheus` extra).

    from bus_runtime.contrib.prometheus import PrometheusMetrics
    bus = create_event_bus("nats", ..., metrics=PrometheusMetrics())

Metrics (with the default prefix `natstopo_bus`):
- `natstopo_bus_published_total{topic, result}` (result: ok | failed)
- `natstopo_bus_publish_seconds{topic}` histogram, first send to acknowledgement
- `natstopo_bus_publish_retries_total{topic}` extra sends after timeouts or no responders
- `natstopo_bus_handled_total{topic, consumer, outcome}`
- `natstopo_bus_handler_seconds{topic, consumer}` histogram
- `natstopo_bus_dead_letters_total{stream, consumer, reason}`
"""

from __future__ import annotations

import importlib
from typing import Any

from ..bus.observability import BusMetrics


class PrometheusMetrics(BusMetrics):
    """Records the bus's counters and latencies in a prometheus_client registry.

    Args:
        registry: A `prometheus_client.CollectorRegistry`; the default registry if None.
        prefix: Prefix of every metric name.
    """

    def __init__(self, registry: Any = None, prefix: str = "natstopo_bus") -> None:
        # Imported here, not at the top: bus_runtime installs without the extra, and its
        # type check must pass whether or not prometheus_client is there.
        prom = importlib.import_module("prometheus_client")
        Counter, Histogram = prom.Counter, prom.Histogram
        reg = registry if registry is not None else prom.REGISTRY
        self.published_total = Counter(
            f"{prefix}_published", "Publishes by outcome", ["topic", "result"], registry=reg
        )
        self.publish_seconds = Histogram(
            f"{prefix}_publish_seconds", "First send to acknowledgement", ["topic"], registry=reg
        )
        self.publish_retries = Counter(
            f"{prefix}_publish_retries", "Publishes sent again", ["topic"], registry=reg
        )
        self.handled_total = Counter(
            f"{prefix}_handled",
            "Delivered messages by outcome",
            ["topic", "consumer", "outcome"],
            registry=reg,
        )
        self.handler_seconds = Histogram(
            f"{prefix}_handler_seconds", "Time in handlers", ["topic", "consumer"], registry=reg
        )
        self.dead_letters = Counter(
            f"{prefix}_dead_letters",
            "Messages sent to the dead letters",
            ["stream", "consumer", "reason"],
            registry=reg,
        )

    def published(self, topic: str, ok: bool, seconds: float, attempts: int) -> None:
        self.published_total.labels(topic, "ok" if ok else "failed").inc()
        if ok:
            self.publish_seconds.labels(topic).observe(seconds)
        if attempts > 1:
            self.publish_retries.labels(topic).inc(attempts - 1)

    def handled(self, topic: str, consumer: str, outcome: str, seconds: float) -> None:
        self.handled_total.labels(topic, consumer, outcome).inc()
        if seconds:
            self.handler_seconds.labels(topic, consumer).observe(seconds)

    def dead_lettered(self, stream: str, consumer: str, reason: str) -> None:
        self.dead_letters.labels(stream, consumer, reason).inc()

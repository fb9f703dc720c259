"""NATSEventBus: publish and consume only what the topology declares, on JetStream.

Publishing is pipelined: each publish is sent with a reply subject of the bus's own
acknowledgement inbox and resolves a future when the server's PubAck arrives, so many
publishes are in flight at once (a bounded window). A timeout, no-responders or a lost
connection sends it again with the same `Nats-Msg-Id` after a bounded backoff; the
stream's duplicate window keeps a retried publish stored once. `publish` returns True
once acknowledged (also when the server says "duplicate"), False when the retries ran out.

Consuming binds to the durable pull consumer the topology declares for this service and
topic; it never creates or changes one (except `auto_provision=True`, through the
reconciler). Pull requests of `fetch_batch` messages are kept flowing (the next is sent
when half of the last is handled), `concurrency` workers run the handlers, and every
outcome is explicit: ack; NAK with the declared backoff; `in_progress` while a message
waits or runs close to its ack_wait; on the last allowed delivery, or at once for a body
that is not a valid envelope of its topic, a copy to the stream's dead-letter stream and
then `term`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from .._errors import BusClosedError, BusError, SetupError, StartupCheckError
from ..jetstream.connect import split_servers
from ..topology.model import Topology
from .binding import ServiceBinding, resolve_topology
from .contract import Handler
from .envelope import EventPayload
from .observability import (
    BusMetrics,
    log_fields,
    logger,
)
from .publisher import Publisher
from .pull_consumer import ConsumerRunner

DEFAULT_SERVERS = "nats://localhost:4222"


class NATSEventBus:
    """The event bus of one service of a topology, on NATS JetStream.

    Args:
        servers: NATS URL(s): a list, or one string (comma-separated for several).
        topology: The topology file (or an already loaded `Topology`).
        service: The service this bus publishes and consumes for.
        environment: The environment whose overrides apply (the Pulumi stack name).
        startup_check: `error` (refuse to start when the server's streams or consumers
            that this service uses differ from the topology), `warn` (log and start), or
            `off`.
        auto_provision: For local development only: apply the topology's streams and
            consumers of this service through the reconciler at start (never destructive).
        publish_timeout: Seconds to wait for one acknowledgement before sending again.
        publish_retry_for: Seconds after the first send when a publish gives up (False).
        max_in_flight: Publishes awaiting their acknowledgement at most (the window).
        stop_timeout: Seconds `stop` waits for running handlers and in-flight publishes.
        pull_expires: Seconds a pull request waits on the server; bounds `stop`'s wait too.
        metrics: A `BusMetrics` (e.g. `bus_runtime.contrib.prometheus.PrometheusMetrics`).
        connect_options: Extra keyword arguments for `nats.connect`.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = DEFAULT_SERVERS,
        *,
        topology: Topology | str | os.PathLike[str] | None = None,
        service: str | None = None,
        environment: str | None = None,
        startup_check: str = "error",
        auto_provision: bool = False,
        publish_timeout: float = 3.0,
        publish_retry_for: float = 30.0,
        max_in_flight: int = 4096,
        stop_timeout: float = 30.0,
        pull_expires: float = 1.0,
        metrics: BusMetrics | None = None,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        if topology is None or service is None:
            raise SetupError(
                "NATSEventBus needs `topology` (the topology file) and `service` (the "
                "service it runs as): streams, subjects and consumers come from the topology"
            )
        if startup_check not in ("error", "warn", "off"):
            raise SetupError(f"startup_check must be error, warn or off, not {startup_check!r}")
        self.topology = resolve_topology(topology, environment)
        self.service = service
        self.binding = ServiceBinding(self.topology, service)
        self.servers = list(split_servers(servers))
        self.startup_check = startup_check
        self.auto_provision = auto_provision
        self.publish_timeout = publish_timeout
        self.publish_retry_for = publish_retry_for
        self.max_in_flight = max_in_flight
        self.stop_timeout = stop_timeout
        self.pull_expires = pull_expires
        self.metrics = metrics or BusMetrics()
        self.connect_options = dict(connect_options or {})
        self.debug_logging = logger.isEnabledFor(logging.DEBUG)
        self.nc: Client | None = None
        self._publisher: Publisher | None = None
        self._runners: dict[str, ConsumerRunner] = {}
        self._state = "new"

    # -- lifecycle
    async def start(self) -> None:
        """Connect, check (or provision) this service's streams and consumers, start consuming."""
        if self._state != "new":
            raise BusClosedError(f"start() called on a bus that is {self._state}")
        self._state = "starting"
        options: dict[str, Any] = {
            "name": f"natstopo:{self.topology.name}:{self.service}",
            "reconnect_time_wait": 0.5,
            "max_reconnect_attempts": -1,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        options.update(self.connect_options)
        try:
            self.nc = await nats.connect(servers=self.servers, **options)
        except Exception as exc:
            self._state = "new"
            raise BusError(f"cannot connect to {', '.join(self.servers)}: {exc}") from exc
        try:
            await self._check_server()
            self._publisher = Publisher(
                self.nc,
                timeout=self.publish_timeout,
                retry_for=self.publish_retry_for,
                max_in_flight=self.max_in_flight,
                metrics=self.metrics,
            )
            await self._publisher.start()
            self._state = "started"
            for runner in self._runners.values():
                await runner.start(self.nc)
        except BaseException:
            self._state = "new"
            await self.nc.close()
            self.nc = None
            raise
        logger.info(
            "bus of %s started on %s (topology %s, %s)",
            self.service,
            self.nc.connected_url.netloc if self.nc.connected_url else self.servers,
            self.topology.name,
            self.topology.environment or "base",
        )

    def used_assets(self) -> tuple[set[str], set[tuple[str, str]]]:
        """The streams and (stream, consumer) pairs this service publishes to or consumes."""
        streams = {t.stream for t in self.topology.topics_published_by(self.service)}
        consumers = {(c.stream, c.name) for c in self.topology.consumers_of(self.service)}
        streams |= {s for s, _ in consumers}
        streams |= {
            d for s in list(streams) if (d := self.topology.stream(s).dead_letter) is not None
        }
        return streams, consumers

    async def _check_server(self) -> None:
        if self.startup_check == "off" and not self.auto_provision:
            return
        from ..reconcile.apply import apply_plan
        from ..reconcile.planner import plan_changes

        assert self.nc is not None
        streams, consumers = self.used_assets()
        plan = await plan_changes(
            self.nc, self.topology, only_streams=sorted(streams), only_consumers=sorted(consumers)
        )
        if not plan.has_changes:
            return
        if self.auto_provision:
            logger.warning(
                "auto_provision: applying the topology for %s:\n%s", self.service, plan.to_text()
            )
            await apply_plan(self.nc, plan, allow_destructive=False)
            return
        lines = [line for line in plan.to_text().splitlines() if line.strip()]
        if self.startup_check == "error":
            raise StartupCheckError(self.service, lines)
        logger.warning(
            "service %s: the server differs from the topology (starting anyway):\n  %s",
            self.service,
            "\n  ".join(lines),
        )

    async def stop(self) -> None:
        """Stop consuming (running handlers finish), wait for publishes, drain, close."""
        if self._state in ("stopping", "stopped"):
            return
        if self._state != "started":
            self._state = "stopped"
            return
        self._state = "stopping"
        await asyncio.gather(*(r.stop(self.stop_timeout) for r in self._runners.values()))
        if self._publisher is not None:
            await self._publisher.close(self.stop_timeout)
        if self.nc is not None:
            try:
                await self.nc.drain()
            except nats.errors.Error:
                await self.nc.close()
        self._state = "stopped"
        logger.info("bus of %s stopped", self.service)

    async def __aenter__(self) -> NATSEventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("nats: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if self._state == "started":
            logger.warning("nats: disconnected from the server; reconnecting")

    async def _on_reconnected(self) -> None:
        url = self.nc.connected_url.netloc if self.nc and self.nc.connected_url else "?"
        logger.warning("nats: reconnected to %s", url)
        for runner in self._runners.values():
            runner.connection_restored()

    # -- publishing
    def _require_started(self) -> Publisher:
        # While stopping, handlers that are finishing may still publish (the next job of
        # a pipeline); the publisher refuses once it is closed.
        if self._state not in ("started", "stopping") or self._publisher is None:
            raise BusClosedError(f"the bus is {self._state}: call `await bus.start()` first")
        return self._publisher

    async def publish(
        self, topic: str, payload: EventPayload, *, tokens: Sequence[str] = ()
    ) -> bool:
        """Publish one event; True once the server stored it, False after the retries failed.

        Args:
            topic: A topic this service is a declared publisher of.
            payload: The event; `payload.data` must satisfy the topic's schema.
            tokens: The concrete values of the topic's `*` tokens, in order
                (`publish("firm.*.sync_completed", p, tokens=["iris"])`).

        Raises:
            TopicNotDeclaredError: The topic is not declared, or not published by this service.
            PayloadValidationError: `payload.data` fails the topic's schema.
            SetupError: Wrong count of `tokens`.
            BusClosedError: The bus is not started.
        """
        _target, subject, body, headers = self.binding.prepare(topic, payload, tuple(tokens))
        publisher = self._require_started()
        return await (await publisher.send(topic, subject, body, headers))

    async def publish_many(
        self, topic: str, payloads: Iterable[EventPayload], *, tokens: Sequence[str] = ()
    ) -> list[bool]:
        """Publish many events of one topic, pipelined; one result per payload, in order.

        Every payload is checked before the first is sent: a refusal sends nothing.
        """
        tok = tuple(tokens)
        prepared = [self.binding.prepare(topic, p, tok) for p in payloads]
        publisher = self._require_started()
        futures = [await publisher.send(topic, s, b, h) for _t, s, b, h in prepared]
        return [await f for f in futures]

    async def publish_raw(
        self, label: str, subject: str, body: bytes, headers: dict[str, str]
    ) -> bool:
        """Publish bytes as they are (dead letters, replays): retries as `publish`, no checks."""
        publisher = self._require_started()
        return await (await publisher.send(label, subject, body, headers))

    # -- consuming
    async def subscribe(self, topic: str, handler: Handler) -> None:
        """Handle `topic` through the durable consumer the topology declares for this service.

        `handler(topic, payload)` returning means done (ack); raising means retry (NAK with
        the consumer's backoff) until the last allowed delivery, which goes to the dead
        letters. Subscribe every topic of a consumer before `start()` (or right after one
        another): a message of a topic with no handler counts as a failed delivery.

        Raises:
            TopicNotDeclaredError: The topic is unknown, or no consumer of this service takes it.
        """
        consumer = self.binding.consumer_for(topic)
        if consumer.ack_policy != "explicit":
            raise SetupError(
                f"consumer `{consumer.name}` has ack_policy {consumer.ack_policy}: the bus acks, "
                "retries and dead-letters each message on its own and needs `explicit`"
            )
        runner = self._runners.get(consumer.name)
        if runner is None:
            runner = ConsumerRunner(self, consumer)
            self._runners[consumer.name] = runner
        if topic in runner.handlers:
            raise SetupError(f"topic `{topic}` already has a handler on this bus")
        runner.handlers[topic] = handler
        if self._state in ("stopping", "stopped"):
            raise BusClosedError(f"the bus is {self._state}")
        if self._state == "started" and not runner.started and self.nc is not None:
            await runner.start(self.nc)
        logger.info(
            "subscribed to %s through consumer %s of stream %s",
            topic,
            consumer.name,
            consumer.stream,
            extra=log_fields(topic=topic, consumer=consumer.name, stream=consumer.stream),
        )

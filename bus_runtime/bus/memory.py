"""MemoryEventBus: the NATS bus's semantics in one process, for application tests.

Same refusals (undeclared topic, not a publisher, schema, size, no consumer, a handler
that is not async), same envelope and headers, same consumer settings: each declared
consumer of a stream gets every message of its topics; a handler that raises, or runs
past the consumer's `handler_timeout`, is redelivered after the consumer's backoff
(multiplied by `time_scale`, so a test can run a `[1m, 5m]` backoff in milliseconds)
until `max_deliver`; the last failure, or a body that is not a valid envelope, goes to the
stream's dead-letter stream with the same headers as on NATS (or, with no dead-letter
stream or one that refuses it, is retried like any failure and finally left in its
stream, as the server does); a replay meant for another consumer is skipped;
`Nats-Msg-Id` deduplicates within the stream's duplicate window; `max_msg_size`, and
`max_msgs` / `max_bytes` with `discard: new`, refuse a message (publish returns False).
Several buses (services) share one `MemoryBroker`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import BusClosedError, BusError, InvalidEnvelopeError, SetupError
from ..topology.model import Consumer, Topology
from ..topology.subjects import subject_matches
from .binding import ConsumedTopics, ServiceBinding, header_bytes, resolve_topology
from .contract import (
    HANDLING,
    ContextHandler,
    Delivery,
    Handler,
    handler_arity,
    stop_outside_handlers,
)
from .delivery import REPLAY_FOR, REPLAYED_FROM, dead_letter_headers, retry_delay
from .envelope import MSG_ID_HEADER, EventPayload
from .observability import (
    ACKED,
    DEAD_LETTERED,
    LEFT,
    RETRIED,
    SKIPPED,
    BusMetrics,
    log_fields,
    logger,
)
from .options import (
    incomplete_consumer_text,
    mapping_argument,
    replaced_arguments,
    seconds,
    service_argument,
    tokens_argument,
    topology_argument,
    unknown_arguments,
)

DEFAULT_DUPLICATE_WINDOW = 120.0
# NATSEventBus options that mean nothing in memory: accepted (so the same settings can
# build either bus) and ignored.
_NATS_ONLY_OPTIONS = frozenset(
    {
        "servers",
        "startup_check",
        "auto_provision",
        "publish_timeout",
        "publish_retry_for",
        "max_in_flight",
        "pull_expires",
        "start_timeout",
        "connect_options",
        "connection",
        "user",
        "password",
        "token",
        "creds",
        "nkey_seed",
    }
)
_OPTIONS = (
    "topology",
    "service",
    "environment",
    "broker",
    "time_scale",
    "metrics",
    "stop_timeout",
    *_NATS_ONLY_OPTIONS,
)


@dataclass
class StoredMessage:
    """A message kept by a `MemoryBroker` stream.

    Attributes:
        stream: The stream's name.
        seq: Its sequence in the stream (from 1).
        subject: The subject it was published on.
        data: The body.
        headers: The headers.
        stored_ns: When it was stored (ns since the epoch), as the server stamps it.
    """

    stream: str
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    stored_ns: int = 0


class _MemConsumer:
    """One durable consumer: messages waiting, delivery counts, attached handlers."""

    def __init__(self, broker: MemoryBroker, consumer: Consumer) -> None:
        self.broker = broker
        self.consumer = consumer
        self.ready: deque[StoredMessage] = deque()
        self.deliveries: dict[int, int] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.running = 0
        self.attached = False  # a bus runs handlers for it
        self.wakeup: asyncio.Event | None = None

    def offer(self, msg: StoredMessage) -> None:
        self.ready.append(msg)
        if self.wakeup is not None:
            self.wakeup.set()

    def redeliver_later(self, msg: StoredMessage, delay: float) -> None:
        loop = asyncio.get_running_loop()

        def due() -> None:
            self.timers.pop(msg.seq, None)
            self.offer(msg)

        self.timers[msg.seq] = loop.call_later(delay * self.broker.time_scale, due)

    @property
    def idle(self) -> bool:
        return not self.ready and not self.timers and self.running == 0


class MemoryBroker:
    """The streams and durable consumers of one topology, kept in this process.

    Args:
        topology: The (effective) topology.
        time_scale: Multiplies every backoff delay (0.001 runs a minute in 60 ms).
    """

    def __init__(self, topology: Topology, time_scale: float = 1.0) -> None:
        self.topology = topology
        self.time_scale = seconds("time_scale", time_scale, allow_equal=True)
        self.streams: dict[str, list[StoredMessage]] = {s.name: [] for s in topology.streams}
        self._dedup: dict[str, dict[str, tuple[int, float]]] = {
            s.name: {} for s in topology.streams
        }
        self._seq: dict[str, int] = dict.fromkeys(self.streams, 0)
        self._bytes: dict[str, int] = dict.fromkeys(self.streams, 0)
        self.consumers: dict[tuple[str, str], _MemConsumer] = {
            (c.stream, c.name): _MemConsumer(self, c) for c in topology.consumers
        }
        # Messages whose last delivery failed and that no dead-letter stream took.
        self.left: list[StoredMessage] = []

    def store(
        self, stream_name: str, subject: str, data: bytes, headers: dict[str, str]
    ) -> int | None:
        """Store a message (deduplicated by `Nats-Msg-Id`); its sequence, None if refused.

        Refused as the server would: larger than the stream's `max_msg_size`, or the stream
        is full (`max_msgs`, `max_bytes`) and discards new messages. With `discard: old`
        the oldest messages make room.
        """
        stream = self.topology.stream(stream_name)
        now = time.monotonic()
        msg_id = headers.get(MSG_ID_HEADER)
        window = (
            (stream.duplicate_window / 1e9) if stream.duplicate_window else DEFAULT_DUPLICATE_WINDOW
        )
        if msg_id:
            seen = self._dedup[stream_name].get(msg_id)
            if seen is not None and now - seen[1] < window:
                return seen[0]
        size = len(data) + header_bytes(headers)
        if stream.max_msg_size is not None and 0 < stream.max_msg_size < size:
            return None
        kept = self.streams[stream_name]
        # Limits count what a limits stream keeps; interest and work-queue streams drop
        # acknowledged messages, which this broker keeps for inspection: not emulated.
        limited = stream.retention == "limits"
        max_msgs = stream.max_msgs if limited and stream.max_msgs and stream.max_msgs > 0 else 0
        max_bytes = stream.max_bytes if limited and stream.max_bytes and stream.max_bytes > 0 else 0
        full = (max_msgs and len(kept) >= max_msgs) or (
            max_bytes and self._bytes[stream_name] + size > max_bytes
        )
        if full and stream.discard == "new":
            return None
        while kept and (
            (max_msgs and len(kept) >= max_msgs)
            or (max_bytes and self._bytes[stream_name] + size > max_bytes)
        ):
            old = kept.pop(0)
            self._bytes[stream_name] -= len(old.data) + header_bytes(old.headers)
        self._seq[stream_name] += 1
        seq = self._seq[stream_name]
        msg = StoredMessage(stream_name, seq, subject, data, dict(headers), time.time_ns())
        kept.append(msg)
        self._bytes[stream_name] += size
        if msg_id:
            self._dedup[stream_name][msg_id] = (seq, now)
        for c in stream.consumers:
            if not c.filter_subjects or any(subject_matches(f, subject) for f in c.filter_subjects):
                self.consumers[(stream_name, c.name)].offer(msg)
        return seq

    def messages(self, stream: str) -> list[StoredMessage]:
        """Every message stored in `stream`, oldest first (acked ones included)."""
        return list(self.streams[stream])

    def dead_letters(self, stream: str | None = None) -> list[StoredMessage]:
        """The dead letters: messages of every dead-letter stream (or of `stream`)."""
        names = (
            [stream] if stream else [s.name for s in self.topology.streams if s.dead_letter_sources]
        )
        return [m for n in names for m in self.streams[n]]

    @property
    def idle(self) -> bool:
        """No message waits for a handler that some bus runs, a redelivery, or a handler.

        Consumers that no bus subscribed to are left out: their messages wait, as on a
        server, for a service that is not running here.
        """
        return all(c.idle for c in self.consumers.values() if c.attached)


class MemoryEventBus:
    """The event bus of one service, in memory (see the module's docstring).

    Args:
        topology: The topology file or a loaded `Topology`.
        service: The service this bus publishes and consumes for.
        environment: The environment whose overrides apply.
        broker: Share one between the buses of several services; a new one by default.
        time_scale: For a new broker: multiplies backoff delays.
        metrics: A `BusMetrics`.
        stop_timeout: Seconds `stop` waits for running handlers.
        nats_options: NATSEventBus-only options (`servers`, `startup_check` ...), ignored.
    """

    def __init__(
        self,
        *replaced: object,
        topology: Topology | str | os.PathLike[str] | None = None,
        service: str | None = None,
        environment: str | None = None,
        broker: MemoryBroker | None = None,
        time_scale: float = 1.0,
        metrics: BusMetrics | None = None,
        stop_timeout: float = 30.0,
        **nats_options: Any,
    ) -> None:
        replaced_arguments("MemoryEventBus", replaced, nats_options)
        unknown_arguments("MemoryEventBus", set(nats_options) - _NATS_ONLY_OPTIONS, _OPTIONS)
        if broker is not None and not isinstance(broker, MemoryBroker):
            raise SetupError(f"`broker` must be a MemoryBroker, got {type(broker).__name__}")
        if topology is None and broker is not None:
            topology = broker.topology
        if topology is None or service is None:
            raise SetupError("MemoryEventBus needs `topology` and `service`")
        if metrics is not None and not isinstance(metrics, BusMetrics):
            raise SetupError(f"`metrics` must be a BusMetrics, got {type(metrics).__name__}")
        mapping_argument("connect_options", nats_options.get("connect_options"))
        self.stop_timeout = seconds("stop_timeout", stop_timeout, allow_equal=True)
        self.topology = resolve_topology(topology_argument("MemoryEventBus", topology), environment)
        self.service = service_argument("MemoryEventBus", service)
        self.binding = ServiceBinding(self.topology, service)
        self.broker = broker or MemoryBroker(self.topology, time_scale)
        self.metrics = metrics or BusMetrics()
        self._handlers: dict[str, dict[str, tuple[Any, bool]]] = {}
        self._topics: dict[str, ConsumedTopics] = {}
        self._workers: dict[str, list[asyncio.Task[None]]] = {}
        self._state = "new"
        self._stopped: asyncio.Future[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """As `NATSEventBus.start` (no connection): refuses a consumer with topics missing."""
        if self._state != "new":
            raise BusClosedError(f"start() called on a bus that is {self._state}")
        for name in self._handlers:
            missing = self._missing(name)
            if missing:
                raise SetupError(incomplete_consumer_text(name, missing))
        self._state = "started"
        for name in self._handlers:
            self._start_workers(name)

    async def stop(self) -> None:
        """Stop taking messages; running handlers finish (unstarted ones stay queued).

        From a handler, it starts the stop and returns (the stop waits for the handlers);
        a second call waits for the first.
        """
        if HANDLING.get() is self:  # from a handler, or a task it started
            if self._stop_task is None:
                self._stop_task = stop_outside_handlers(self.stop)
            return
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
            return
        if self._state != "started":
            self._state = "stopped"
            return
        self._stopped = asyncio.get_running_loop().create_future()
        try:
            await self._stop()
        finally:
            self._stopped.set_result(None)

    async def _stop(self) -> None:
        self._state = "stopping"
        for (_s, name), mc in self.broker.consumers.items():
            if name in self._workers and mc.wakeup is not None:
                mc.wakeup.set()
        tasks = [t for ts in self._workers.values() for t in ts]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self._state = "stopped"

    async def __aenter__(self) -> MemoryEventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def settle(self, within: float = 10.0) -> None:
        """Wait until every message was handled, retried to the end or dead-lettered."""
        deadline = time.monotonic() + within
        while not self.broker.idle:
            if time.monotonic() > deadline:
                raise TimeoutError("messages still pending in the memory broker")
            await asyncio.sleep(0.005)

    # -- publishing
    def _require_started(self) -> None:
        if self._state not in ("started", "stopping"):  # finishing handlers may publish
            raise BusClosedError(f"the bus is {self._state}: call `await bus.start()` first")

    async def publish(
        self, topic: str, payload: EventPayload, *, tokens: Sequence[str] = ()
    ) -> bool:
        """As `NATSEventBus.publish`: refusals raise; True once stored."""
        target, subject, body, headers = self.binding.prepare(
            topic, payload, tokens if type(tokens) is tuple else tokens_argument(tokens)
        )
        self._require_started()
        ok = self.broker.store(target.stream, subject, body, headers) is not None
        self.metrics.published(topic, ok, 0.0, 1)
        # A suspension point, as on NATS (which awaits the acknowledgement): a task that
        # publishes in a loop must not starve the handlers and everything else.
        await asyncio.sleep(0)
        return ok

    async def publish_many(
        self, topic: str, payloads: Iterable[EventPayload], *, tokens: Sequence[str] = ()
    ) -> list[bool]:
        tok = tokens_argument(tokens)
        prepared = [self.binding.prepare(topic, p, tok) for p in payloads]
        self._require_started()
        results = []
        for target, subject, body, headers in prepared:
            ok = self.broker.store(target.stream, subject, body, headers) is not None
            self.metrics.published(topic, ok, 0.0, 1)
            results.append(ok)
        await asyncio.sleep(0)  # a suspension point, as on NATS
        return results

    # -- consuming
    async def subscribe(self, topic: str, handler: Handler | ContextHandler) -> None:
        """As `NATSEventBus.subscribe`."""
        consumer = self.binding.consumer_for(topic)
        if consumer.ack_policy != "explicit":
            raise SetupError(
                f"consumer `{consumer.name}` has ack_policy {consumer.ack_policy}: the bus acks, "
                "retries and dead-letters each message on its own and needs `explicit`"
            )
        if consumer.headers_only:
            raise SetupError(
                f"consumer `{consumer.name}` is headers_only: the bus needs every message's body"
            )
        arity = handler_arity(handler, topic)
        if self._state in ("stopping", "stopped"):
            raise BusClosedError(f"the bus is {self._state}")
        if consumer.name not in self._topics:
            self._topics[consumer.name] = ConsumedTopics(self.binding, consumer)
        handlers = self._handlers.setdefault(consumer.name, {})
        if topic in handlers:
            raise SetupError(f"topic `{topic}` already has a handler on this bus")
        handlers[topic] = (handler, arity == 3)
        if self._state == "started" and not self._missing(consumer.name):
            self._start_workers(consumer.name)

    def _missing(self, name: str) -> list[str]:
        handlers = self._handlers.get(name, {})
        return [t.name for t in self._topics[name].topics if t.name not in handlers]

    def _start_workers(self, name: str) -> None:
        if name in self._workers or self._missing(name):
            return
        mc = next(m for (_s, n), m in self.broker.consumers.items() if n == name)
        mc.wakeup = mc.wakeup or asyncio.Event()
        mc.attached = True
        loop = asyncio.get_running_loop()
        self._workers[name] = [
            loop.create_task(self._work(mc)) for _ in range(max(1, mc.consumer.concurrency))
        ]

    async def _work(self, mc: _MemConsumer) -> None:
        assert mc.wakeup is not None
        while self._state == "started":
            if not mc.ready:
                mc.wakeup.clear()
                await mc.wakeup.wait()
                continue
            msg = mc.ready.popleft()
            mc.running += 1
            try:
                await self._handle(mc, msg)
            finally:
                mc.running -= 1
            await asyncio.sleep(0)

    async def _handle(self, mc: _MemConsumer, msg: StoredMessage) -> None:
        consumer = mc.consumer
        target = msg.headers.get(REPLAY_FOR)
        if target is not None and target != consumer.name:
            self.metrics.handled(msg.subject, consumer.name, SKIPPED, 0.0)
            return
        n = mc.deliveries.get(msg.seq, 0) + 1
        mc.deliveries[msg.seq] = n
        max_deliver = consumer.max_deliver if consumer.max_deliver is not None else -1
        try:
            topic, payload, skew = self._topics[consumer.name].decode(msg.subject, msg.data)
        except InvalidEnvelopeError as exc:
            self._dead_letter(mc, msg, n, exc.reason, str(exc), msg.subject)
            return
        handler, with_delivery = self._handlers[consumer.name][topic.name]
        started = time.perf_counter()
        timeout = consumer.handler_timeout / 1e9
        deadline = asyncio.timeout(timeout)
        handling = HANDLING.set(self)
        try:
            async with deadline:
                try:
                    if with_delivery:
                        delivery = Delivery(
                            topic=topic.name,
                            subject=msg.subject,
                            stream=msg.stream,
                            consumer=consumer.name,
                            stream_seq=msg.seq,
                            num_delivered=n,
                            max_deliver=max_deliver,
                            headers=dict(msg.headers),
                            replayed_from=msg.headers.get(REPLAYED_FROM),
                            schema_error=skew,
                        )
                        await handler(topic.name, payload, delivery)
                    else:
                        await handler(topic.name, payload)
                finally:
                    HANDLING.reset(handling)
            if deadline.expired():
                raise TimeoutError
        except (KeyboardInterrupt, SystemExit):
            mc.offer(msg)  # handed back, then let through to end the program
            raise
        except BaseException as exc:
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise
            elapsed = time.perf_counter() - started
            if deadline.expired():
                error = (
                    f"HandlerTimeout: handler ran longer than handler_timeout {timeout:g}s of "
                    f"consumer `{consumer.name}` and was cancelled"
                )
            else:
                error = f"{type(exc).__name__}: {exc}"
            if 0 < max_deliver <= n:
                logger.error(
                    "handler of %s failed on the last allowed delivery (%d of %d): %s",
                    topic.name,
                    n,
                    max_deliver,
                    error,
                    extra=log_fields(event_id=payload.event_id, topic=topic.name, num_delivered=n),
                )
                self._dead_letter(mc, msg, n, "handler-failed", error, topic.name, elapsed)
            else:
                mc.redeliver_later(msg, retry_delay(consumer, n))
                self.metrics.handled(topic.name, consumer.name, RETRIED, elapsed)
            return
        mc.deliveries.pop(msg.seq, None)
        self.metrics.handled(topic.name, consumer.name, ACKED, time.perf_counter() - started)

    def _dead_letter(
        self,
        mc: _MemConsumer,
        msg: StoredMessage,
        n: int,
        reason: str,
        error: str,
        topic: str,
        elapsed: float = 0.0,
    ) -> None:
        consumer = mc.consumer
        stream = self.topology.stream(consumer.stream)
        max_deliver = consumer.max_deliver if consumer.max_deliver is not None else -1
        final = 0 < max_deliver <= n
        why = f"stream {stream.name} declares no dead_letter"
        if stream.dead_letter is not None:
            dl = self.topology.stream(stream.dead_letter)
            headers = dead_letter_headers(
                msg.headers,
                stream=stream.name,
                consumer=consumer.name,
                subject=msg.subject,
                seq=msg.seq,
                stored_ns=msg.stored_ns,
                deliveries=n,
                reason=reason,
                error=error,
            )
            why = f"dead-letter stream {dl.name} did not take it"
            try:
                mms = dl.max_msg_size if dl.max_msg_size and dl.max_msg_size > 0 else 0
                self.binding.check_size(f"dlq:{topic}", dl.name, mms, len(msg.data), headers)
                stored = self.broker.store(
                    dl.name, dl.dead_letter_subject(stream.name, msg.subject), msg.data, headers
                )
            except BusError as exc:
                stored, why = None, f"{why}: {exc}"
            if stored is not None:
                mc.deliveries.pop(msg.seq, None)
                self.metrics.dead_lettered(stream.name, consumer.name, reason)
                self.metrics.handled(topic, consumer.name, DEAD_LETTERED, elapsed)
                logger.warning(
                    "dead-lettered seq %d of %s after %d deliveries (%s): %s",
                    msg.seq,
                    stream.name,
                    n,
                    reason,
                    error,
                )
                return
        if final:
            mc.deliveries.pop(msg.seq, None)
            self.broker.left.append(msg)
            logger.error(
                "message seq %d of %s (%s) failed its last delivery and %s: left in the stream: %s",
                msg.seq,
                stream.name,
                topic,
                why,
                error,
            )
            self.metrics.handled(topic, consumer.name, LEFT, elapsed)
            return
        delay = retry_delay(consumer, n)
        logger.error(
            "message seq %d of %s (%s) is not processable (%s) and %s: redelivery in %.3gs",
            msg.seq,
            stream.name,
            topic,
            error,
            why,
            delay,
        )
        mc.redeliver_later(msg, delay)
        self.metrics.handled(topic, consumer.name, RETRIED, elapsed)

"""Runs the handlers of one durable pull consumer with bounded concurrency.

Pull requests of `fetch_batch` messages are kept flowing (the next is sent when half of
the last is handled), `concurrency` workers run the handlers, and every outcome is
explicit: ack; NAK with the declared backoff; `in_progress` while a message waits or runs
close to its ack_wait; on the last allowed delivery, or at once for a body that is not a
valid envelope of its topic, a copy to the stream's dead-letter stream and then `term`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any, Protocol

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from .._errors import BusError, InvalidEnvelopeError
from ..topology.model import Consumer, Stream, Topology
from .binding import ConsumedTopics, ServiceBinding
from .contract import Handler
from .delivery import dead_letter_headers, heartbeat_after, retry_delay
from .envelope import EventPayload
from .observability import (
    ACKED,
    DEAD_LETTERED,
    LEFT,
    RETRIED,
    RETURNED,
    BusMetrics,
    log_fields,
    logger,
)


class RunnerHost(Protocol):
    """What a runner needs of the bus that owns it."""

    topology: Topology
    binding: ServiceBinding
    metrics: BusMetrics
    pull_expires: float
    debug_logging: bool

    async def publish_raw(
        self, label: str, subject: str, body: bytes, headers: dict[str, str]
    ) -> bool: ...


class ConsumerRunner:
    """Runs the handlers of one durable pull consumer with bounded concurrency."""

    def __init__(self, bus: RunnerHost, consumer: Consumer) -> None:
        self._bus = bus
        self.consumer = consumer
        self.stream: Stream = bus.topology.stream(consumer.stream)
        self.topics = ConsumedTopics(bus.binding, consumer)
        self.handlers: dict[str, Handler] = {}
        self._nc: Client | None = None
        # A pull above the consumer's own request limits is refused (409 Exceeded ...).
        self._batch = max(1, consumer.fetch_batch)
        if consumer.max_request_batch:
            self._batch = min(self._batch, consumer.max_request_batch)
        self._low_water = self._batch // 2
        self._max_deliver = consumer.max_deliver if consumer.max_deliver is not None else -1
        self._hb_after = heartbeat_after(consumer)
        self._expires = bus.pull_expires
        if consumer.max_request_expires:
            self._expires = min(self._expires, consumer.max_request_expires / 1e9)
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream.name}.{consumer.name}"
        self._pull_body = json.dumps(
            {"batch": self._batch, "expires": int(self._expires * 1e9)}
        ).encode()
        self._buf: deque[Msg] = deque()
        self._idle_workers: deque[asyncio.Future[None]] = deque()
        self._held: dict[int, list[Any]] = {}  # id(msg) -> [msg, last touch]
        self._req_no = 0
        self._req_active = False
        self._req_received = 0
        self._req_deadline = 0.0
        self._req_ended = asyncio.Event()
        self._next_pull_at = 0.0
        self._inbox = ""
        self._stopping = False
        self._closing = False
        self._warned = False
        self._workers: list[asyncio.Task[None]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._sub: Any = None
        self.started = False

    async def start(self, nc: Client) -> None:
        self._nc = nc
        self.started = True
        loop = asyncio.get_running_loop()
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox + ".*", cb=self._on_msg)
        self._workers = [
            loop.create_task(self._work()) for _ in range(max(1, self.consumer.concurrency))
        ]
        self._ticker = loop.create_task(self._tick())
        await self._pull()

    # -- pull requests
    async def _pull(self) -> None:
        if self._req_active or self._stopping or self._nc is None:
            return
        now = time.monotonic()
        if now < self._next_pull_at:
            return
        self._req_no += 1
        self._req_active = True
        self._req_ended.clear()
        self._req_received = 0
        self._req_deadline = now + self._expires + 2.0
        try:
            await self._nc.publish(
                self._next_subject, self._pull_body, reply=f"{self._inbox}.{self._req_no}"
            )
        except nats.errors.Error as exc:
            self._end_request(pause=1.0)
            logger.warning(
                "consumer %s: pull request not sent (%s); trying again",
                self.consumer.name,
                type(exc).__name__,
                extra=log_fields(consumer=self.consumer.name, stream=self.stream.name),
            )

    def connection_restored(self) -> None:
        """After a reconnect the open pull request may be gone with the old server: ask again."""
        if self._req_active:
            self._end_request()

    def _end_request(self, pause: float = 0.0) -> None:
        self._req_active = False
        self._req_ended.set()
        if pause:
            self._next_pull_at = time.monotonic() + pause

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a stream message ($JS.ACK... reply)
            self._warned = False
            self._buf.append(msg)
            self._held[id(msg)] = [msg, time.monotonic()]
            self._req_received += 1
            if self._req_received >= self._batch:
                self._end_request()
            while self._idle_workers:
                waiter = self._idle_workers.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "100":
            return  # idle heartbeat
        if msg.subject != f"{self._inbox}.{self._req_no}":
            return  # the end of an older request
        description = headers.get("Description", "")
        if status in ("404", "408"):
            self._end_request()  # no messages / expired: the normal end of a long poll
        elif status == "409" and not description.startswith(("Consumer Deleted", "Exceeded Max")):
            # leadership change, server shutdown, batch completed ...: ask again
            self._end_request(pause=0.1)
            logger.debug("consumer %s: pull ended: 409 %s", self.consumer.name, description)
        else:
            self._end_request(pause=1.0)
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True  # once until messages flow again, not every second
            logger.log(
                level,
                "consumer %s of stream %s: pull request ended with %s %s",
                self.consumer.name,
                self.stream.name,
                status,
                description or "no responders (is the consumer there?)",
                extra=log_fields(consumer=self.consumer.name, stream=self.stream.name),
            )
        if len(self._buf) <= self._low_water:
            await self._pull()

    async def _tick(self) -> None:
        """Keep pull requests flowing, and send `in_progress` for messages held long."""
        interval = max(0.02, min(self._hb_after / 2, 0.25))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self._req_active and now > self._req_deadline:
                self._end_request()  # lost (server restarted, reconnect): ask again
            if not self._req_active and len(self._buf) <= self._low_water:
                await self._pull()
            limit = now - self._hb_after
            for entry in list(self._held.values()):
                if entry[1] <= limit:
                    entry[1] = now
                    with contextlib.suppress(nats.errors.Error):
                        await entry[0].in_progress()

    # -- handling
    async def _work(self) -> None:
        buf = self._buf
        loop = asyncio.get_running_loop()
        while True:
            if buf:
                msg = buf.popleft()
                if not self._req_active and len(buf) <= self._low_water:
                    await self._pull()
                await self._handle(msg)
                continue
            if self._closing:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._idle_workers.append(waiter)
            await waiter

    async def _handle(self, msg: Msg) -> None:
        bus = self._bus
        try:
            topic, payload = self.topics.decode(msg.subject, msg.data)
        except InvalidEnvelopeError as exc:
            await self._dead_letter(msg, exc.reason, str(exc), msg.subject, None)
            return
        handler = self.handlers.get(topic.name)
        started = time.perf_counter()
        try:
            if handler is None:
                raise BusError(
                    f"no handler subscribed for topic `{topic.name}` of consumer "
                    f"`{self.consumer.name}`"
                )
            await handler(topic.name, payload)
        except Exception as exc:
            await self._failed(msg, topic.name, payload, exc, time.perf_counter() - started)
            return
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the bus is cancelling this worker (stop timeout)
            # a CancelledError raised by the handler's own code: a failure like any other
            await self._failed(msg, topic.name, payload, exc, time.perf_counter() - started)
            return
        elapsed = time.perf_counter() - started
        self._held.pop(id(msg), None)
        try:
            await msg.ack()
        except nats.errors.Error as exc:
            logger.error(
                "ack of %s failed (%s): it will be redelivered",
                payload.event_id,
                type(exc).__name__,
                extra=log_fields(event_id=payload.event_id, topic=topic.name),
            )
            return
        bus.metrics.handled(topic.name, self.consumer.name, ACKED, elapsed)
        if bus.debug_logging:
            meta = msg.metadata
            logger.debug(
                "handled %s %s",
                topic.name,
                payload.event_id,
                extra=log_fields(
                    event_id=payload.event_id,
                    topic=topic.name,
                    stream=self.stream.name,
                    consumer=self.consumer.name,
                    stream_seq=meta.sequence.stream,
                    num_delivered=meta.num_delivered,
                    trace_id=payload.trace_id,
                ),
            )

    async def _failed(
        self, msg: Msg, topic: str, payload: EventPayload, exc: BaseException, elapsed: float
    ) -> None:
        meta = msg.metadata
        n = meta.num_delivered
        error = f"{type(exc).__name__}: {exc}"
        fields = log_fields(
            event_id=payload.event_id,
            topic=topic,
            stream=self.stream.name,
            consumer=self.consumer.name,
            stream_seq=meta.sequence.stream,
            num_delivered=n,
            trace_id=payload.trace_id,
        )
        if 0 < self._max_deliver <= n:
            logger.error(
                "handler of %s failed on the last allowed delivery (%d of %d): %s",
                topic,
                n,
                self._max_deliver,
                error,
                exc_info=exc,
                extra=fields,
            )
            await self._dead_letter(msg, "handler-failed", error, topic, payload, elapsed)
            return
        delay = retry_delay(self.consumer, n)
        logger.warning(
            "handler of %s failed (delivery %d of %s): %s; redelivery in %.3gs",
            topic,
            n,
            self._max_deliver if self._max_deliver > 0 else "unlimited",
            error,
            delay,
            extra=fields,
        )
        self._held.pop(id(msg), None)
        with contextlib.suppress(nats.errors.Error):
            await msg.nak(delay=delay)
        self._bus.metrics.handled(topic, self.consumer.name, RETRIED, elapsed)

    async def _dead_letter(
        self,
        msg: Msg,
        reason: str,
        error: str,
        topic: str,
        payload: EventPayload | None,
        elapsed: float = 0.0,
    ) -> None:
        bus = self._bus
        meta = msg.metadata
        n = meta.num_delivered
        seq = meta.sequence.stream
        fields = log_fields(
            event_id=payload.event_id if payload else None,
            topic=topic,
            subject=msg.subject,
            stream=self.stream.name,
            consumer=self.consumer.name,
            stream_seq=seq,
            num_delivered=n,
            trace_id=payload.trace_id if payload else None,
            reason=reason,
        )
        final = 0 < self._max_deliver <= n
        ok = False
        if self.stream.dead_letter is not None:
            dl = bus.topology.stream(self.stream.dead_letter)
            headers = dead_letter_headers(
                msg.headers,
                stream=self.stream.name,
                consumer=self.consumer.name,
                subject=msg.subject,
                seq=seq,
                deliveries=n,
                reason=reason,
                error=error,
            )
            subject = dl.dead_letter_subject(self.stream.name, msg.subject)
            try:
                ok = await bus.publish_raw(f"dlq:{topic}", subject, msg.data, headers)
            except BusError:
                ok = False
            if ok:
                self._held.pop(id(msg), None)
                with contextlib.suppress(nats.errors.Error):
                    await msg.term()
                bus.metrics.dead_lettered(self.stream.name, self.consumer.name, reason)
                bus.metrics.handled(topic, self.consumer.name, DEAD_LETTERED, elapsed)
                logger.warning(
                    "dead-lettered %s seq %d of %s after %d deliveries (%s) to %s: %s",
                    topic,
                    seq,
                    self.stream.name,
                    n,
                    reason,
                    subject,
                    error,
                    extra=fields,
                )
                return
        where = (
            f"dead-letter stream {self.stream.dead_letter} did not take it"
            if self.stream.dead_letter
            else f"stream {self.stream.name} declares no dead_letter"
        )
        self._held.pop(id(msg), None)
        if final:
            # The server delivers it no more; it stays in the stream for `natstopo` to find.
            logger.error(
                "message seq %d of %s (%s) failed its last delivery and %s: left in the stream: %s",
                seq,
                self.stream.name,
                topic,
                where,
                error,
                extra=fields,
            )
            bus.metrics.handled(topic, self.consumer.name, LEFT, elapsed)
            return
        delay = retry_delay(self.consumer, n)
        logger.error(
            "message seq %d of %s (%s) is not processable (%s) and %s: redelivery in %.3gs",
            seq,
            self.stream.name,
            topic,
            error,
            where,
            delay,
            extra=fields,
        )
        with contextlib.suppress(nats.errors.Error):
            await msg.nak(delay=delay)
        bus.metrics.handled(topic, self.consumer.name, RETRIED, elapsed)

    async def stop(self, grace: float) -> None:
        """Stop pulling, return unstarted messages, let running handlers finish (`grace` s)."""
        self._stopping = True
        if not self.started:
            return
        if self._req_active:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._req_ended.wait(), max(0.0, self._req_deadline - time.monotonic())
                )
        while self._buf:
            msg = self._buf.popleft()
            self._held.pop(id(msg), None)
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()
            topic = self.topics.topic_of(msg.subject)
            label = topic.name if topic is not None else msg.subject
            self._bus.metrics.handled(label, self.consumer.name, RETURNED, 0.0)
        self._closing = True
        while self._idle_workers:
            waiter = self._idle_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._workers:
            _done, pending = await asyncio.wait(self._workers, timeout=grace)
            for task in pending:
                logger.error(
                    "consumer %s: a handler still ran after %ss; cancelled (its message "
                    "is redelivered after ack_wait)",
                    self.consumer.name,
                    grace,
                    extra=log_fields(consumer=self.consumer.name, stream=self.stream.name),
                )
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()

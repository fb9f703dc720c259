"""Runs the handlers of one durable pull consumer with bounded concurrency.

The runner keeps at most `max(concurrency, fetch_batch)` messages in flight (running,
received and still requested; at most `fetch_batch` per pull request, the next asked for
when half a batch is free), and a stop handles every message it received instead of
handing it back: a NAK would use one of the message's deliveries, so a restart plus one
real failure could dead-letter it. Every outcome is explicit: ack; NAK with the declared
backoff; `in_progress` while a message waits or its handler runs close to its ack
deadline, up to `handler_timeout`, when the handler is cancelled and the delivery counts
as failed; on the last allowed delivery, or at once for a body that is not a valid
envelope of its topic, a copy to the stream's dead-letter stream, then `term`. A replayed
dead letter meant for another consumer of the stream is acked unhandled.
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

from .._errors import BusError, InvalidEnvelopeError, SetupError
from ..topology.model import Consumer, Stream, Topology
from .binding import ConsumedTopics, ServiceBinding
from .contract import HANDLING, Delivery
from .delivery import (
    REPLAY_FOR,
    REPLAYED_FROM,
    dead_letter_headers,
    handler_timeout,
    heartbeat_after,
    nak_delay,
    retry_delay,
    stored_ns_of,
)
from .envelope import EventPayload
from .observability import (
    ACKED,
    DEAD_LETTERED,
    LEFT,
    RETRIED,
    RETURNED,
    SKIPPED,
    BusMetrics,
    log_fields,
    logger,
)
from .outbox import Outbox, deliver_directly

# What a handler call is: the callable and whether it takes the Delivery as a third argument.
HandlerEntry = tuple[Any, bool]
_NEVER = float("inf")


class RunnerHost(Protocol):
    """What a runner needs of the bus that owns it."""

    topology: Topology
    binding: ServiceBinding
    metrics: BusMetrics
    pull_expires: float
    debug_logging: bool
    api_prefix: str  # `$JS.API`, or `$JS.<domain>.API`

    async def publish_raw(
        self, label: str, subject: str, body: bytes, headers: dict[str, str]
    ) -> bool: ...


# Seconds before a message handed back by a handler that ends the program comes again:
# longer than asyncio.run's shutdown, so that this process's pull requests are gone.
_EXIT_NAK_DELAY = 2.0


class HandlerTimeout(Exception):
    """A handler ran longer than its consumer's `handler_timeout` and was cancelled."""


class ConsumerRunner:
    """Runs the handlers of one durable pull consumer with bounded concurrency."""

    def __init__(self, bus: RunnerHost, consumer: Consumer) -> None:
        self._bus = bus
        self.consumer = consumer
        self.stream: Stream = bus.topology.stream(consumer.stream)
        self.topics = ConsumedTopics(bus.binding, consumer)
        self.handlers: dict[str, HandlerEntry] = {}
        self._nc: Client | None = None
        self._concurrency = max(1, consumer.concurrency)
        # A pull above the consumer's own request limits is refused (409 Exceeded ...).
        self._cap = max(1, consumer.fetch_batch)
        if consumer.max_request_batch:
            self._cap = min(self._cap, consumer.max_request_batch)
        # Messages in flight at most (running, received, still requested): fetch_batch, and
        # never fewer than the handlers can run. Ask again once half a batch is free, so the
        # handlers do not wait for a round trip.
        self._window = max(self._concurrency, self._cap)
        self._threshold = max(1, self._cap // 2)
        self._max_deliver = consumer.max_deliver if consumer.max_deliver is not None else -1
        self._hb_after = heartbeat_after(consumer)
        self._timeout = handler_timeout(consumer)
        self._expires = bus.pull_expires
        if consumer.max_request_expires:
            self._expires = min(self._expires, consumer.max_request_expires / 1e9)
        self.next_subject = f"{bus.api_prefix}.CONSUMER.MSG.NEXT.{self.stream.name}.{consumer.name}"
        self._pull_bodies: dict[int, bytes] = {}
        self._buf: deque[Msg] = deque()
        # Workers waiting for a message; at most one is woken at a time (`_waking`), and a
        # woken worker that finds more wakes the next: a burst of a pull request's messages
        # woke every idle worker, and with handlers that never suspend the first one ran
        # them all while the others woke to an empty buffer (a task step and a future each).
        self._idle_workers: deque[asyncio.Future[bool]] = deque()
        self._waking = False
        # id(msg) -> [msg, last in_progress, handler deadline, handler's task, timed out,
        # the task the ticker cancelled]: messages received and not finished
        self._held: dict[int, list[Any]] = {}
        self._running = 0
        self._req_no = 0
        self._req_active = False
        self._req_batch = 0
        self._req_received = 0
        self._req_deadline = 0.0
        self._req_ended = asyncio.Event()
        self._next_pull_at = 0.0
        self._inbox = ""
        self._stopping = False
        self._closing = False
        self._warned = False
        self._skew_warned: set[tuple[str, str]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._outbox: Outbox | None = None
        self._status_tasks: set[asyncio.Task[None]] = set()
        self.started = False

    # -- handlers
    def add_handler(self, topic: str, handler: Any, with_delivery: bool) -> None:
        if topic in self.handlers:
            raise SetupError(f"topic `{topic}` already has a handler on this bus")
        self.handlers[topic] = (handler, with_delivery)

    def missing_topics(self) -> list[str]:
        """Topics of this consumer with no handler yet: nothing is fetched until none is left."""
        return [t.name for t in self.topics.topics if t.name not in self.handlers]

    @property
    def complete(self) -> bool:
        return not self.missing_topics()

    async def start(self, nc: Client) -> None:
        self._nc = nc
        self.started = True
        loop = asyncio.get_running_loop()
        self._outbox = Outbox(nc)
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox + ".*", cb=self._on_msg)
        deliver_directly(self._sub, self._deliver, self._delivery_failed)
        self._workers = [loop.create_task(self._work()) for _ in range(self._concurrency)]
        self._ticker = loop.create_task(self._tick())
        await self._pull()

    # -- pull requests
    def _free(self) -> int:
        outstanding = self._req_batch - self._req_received if self._req_active else 0
        return self._window - self._running - len(self._buf) - outstanding

    async def _pull(self) -> None:
        if self._req_active or self._stopping or self._nc is None:
            return
        free = self._free()
        if free < self._threshold:
            return
        now = time.monotonic()
        if now < self._next_pull_at:
            return
        batch = min(free, self._cap)
        body = self._pull_bodies.get(batch)
        if body is None:
            body = json.dumps({"batch": batch, "expires": int(self._expires * 1e9)}).encode()
            self._pull_bodies[batch] = body
        self._req_no += 1
        self._req_active = True
        self._req_ended.clear()
        self._req_batch = batch
        self._req_received = 0
        self._req_deadline = now + self._expires + 2.0
        try:
            await self._nc.publish(self.next_subject, body, reply=f"{self._inbox}.{self._req_no}")
        except (nats.errors.Error, OSError) as exc:
            self._end_request(pause=1.0)
            logger.warning(
                "consumer %s: pull request not sent (%s); trying again",
                self.consumer.name,
                type(exc).__name__,
                extra=log_fields(consumer=self.consumer.name, stream=self.stream.name),
            )
            return
        if self._outbox is not None:
            # On the wire now, while the handlers still have half a batch to work on.
            self._outbox.write_now()

    def connection_restored(self) -> None:
        """After a reconnect the open pull request may be gone with the old server: ask again."""
        if self._req_active:
            self._end_request()

    def _end_request(self, pause: float = 0.0) -> None:
        self._req_active = False
        self._req_ended.set()
        if pause:
            self._next_pull_at = time.monotonic() + pause

    def _deliver(self, msg: Msg) -> None:
        """A message as nats-py reads it (see `outbox.deliver_directly`): a stream message
        is taken at once; a status (end of a pull request) is handled by a task, in order,
        because handling it may send the next pull request."""
        if msg.reply:
            self._take(msg)
            return
        task = asyncio.get_running_loop().create_task(self._on_msg(msg))
        self._status_tasks.add(task)
        task.add_done_callback(self._status_tasks.discard)

    def _delivery_failed(self, msg: Msg, exc: Exception) -> None:
        logger.error(
            "consumer %s: taking a message failed inside the bus (%s: %s)",
            self.consumer.name,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra=log_fields(consumer=self.consumer.name, stream=self.stream.name),
        )

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:  # a stream message ($JS.ACK... reply)
            self._take(msg)
            return
        await self._on_status(msg)

    def _take(self, msg: Msg) -> None:
        """A stream message ($JS.ACK... reply): buffered for a worker."""
        self._warned = False
        self._buf.append(msg)
        self._held[id(msg)] = [msg, time.monotonic(), _NEVER, None, False, None]
        self._req_received += 1
        if self._req_active and self._req_received >= self._req_batch:
            self._end_request()
        if not self._waking:
            self._wake_one()

    def _wake_one(self) -> None:
        """Wake one idle worker, if any (see `_waking`)."""
        idle = self._idle_workers
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(True)
                self._waking = True
                return

    async def _on_status(self, msg: Msg) -> None:
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
        await self._pull()

    async def _tick(self) -> None:
        """Keep pull requests flowing, and send `in_progress` for messages held long."""
        interval = max(0.02, min(self._hb_after / 2, self._timeout / 4, 0.25))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self._req_active and now > self._req_deadline:
                self._end_request()  # lost (server restarted, reconnect): ask again
            if not self._req_active:
                await self._pull()
            limit = now - self._hb_after
            for key, entry in list(self._held.items()):
                if entry[2] < now:
                    if not entry[4] and entry[3] is not None:
                        # handler_timeout: cancel the handler; its delivery counts as failed.
                        # Checked here rather than by a timer per message (cheaper).
                        entry[4], entry[5] = True, entry[3]
                        entry[2] = now + 1.0
                        entry[3].cancel()
                        continue
                    # It ignored the cancellation and still runs: stop keeping the message
                    # alive; the server redelivers it after ack_wait.
                    del self._held[key]
                    logger.error(
                        "consumer %s: a handler ignored its cancellation at handler_timeout; "
                        "its message is no longer kept in progress",
                        self.consumer.name,
                        extra=log_fields(consumer=self.consumer.name, stream=self.stream.name),
                    )
                    continue
                if entry[1] <= limit:
                    entry[1] = now
                    with contextlib.suppress(nats.errors.Error, OSError):
                        await entry[0].in_progress()

    # -- handling
    async def _work(self) -> None:
        buf = self._buf
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()  # the task each handler runs in (the ticker cancels it)
        while True:
            if buf:
                msg = buf.popleft()
                if buf and not self._waking:
                    self._wake_one()  # more to do: the next idle worker takes the next one
                self._running += 1
                try:
                    await self._handle(msg, me)
                except Exception as exc:  # a bug of the bus: keep the worker, free the message
                    logger.exception(
                        "consumer %s: handling a message failed inside the bus (%s); it is "
                        "handed back",
                        self.consumer.name,
                        type(exc).__name__,
                        extra=log_fields(consumer=self.consumer.name, stream=self.stream.name),
                    )
                    self._held.pop(id(msg), None)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=nak_delay(self.consumer, 1))
                finally:
                    self._running -= 1
                if not self._req_active and self._free() >= self._threshold:
                    await self._pull()
                continue
            if self._closing:
                return
            waiter: asyncio.Future[bool] = loop.create_future()
            self._idle_workers.append(waiter)
            if await waiter:  # woken by _wake_one (stop wakes every worker with False)
                self._waking = False

    async def _handle(self, msg: Msg, task: asyncio.Task[Any] | None) -> None:
        bus = self._bus
        hdrs = msg.headers
        if hdrs is not None:
            target = hdrs.get(REPLAY_FOR)
            if target is not None and target != self.consumer.name:
                await self._skip(msg, target)
                return
        try:
            topic, payload, skew = self.topics.decode(msg.subject, msg.data)
        except InvalidEnvelopeError as exc:
            await self._dead_letter(msg, exc.reason, str(exc), msg.subject, None)
            return
        entry = self.handlers.get(topic.name)
        if entry is None:  # not reachable: a runner starts only with every topic's handler
            await self._failed(msg, topic.name, payload, BusError("no handler"), 0.0)
            return
        handler, with_delivery = entry
        if skew is not None:
            self._warn_skew(topic.name, skew)
        held = self._held.get(id(msg))
        if held is not None:  # the ticker cancels the handler at its deadline
            held[2] = time.monotonic() + self._timeout
            held[3] = task
        timed_out = False
        started = time.perf_counter()
        handling = HANDLING.set(self._bus)
        try:
            try:
                if with_delivery:
                    await handler(topic.name, payload, self._delivery(msg, topic.name, skew))
                else:
                    await handler(topic.name, payload)
            finally:
                HANDLING.reset(handling)
                if held is not None:
                    timed_out = held[4]
                    held[2], held[3] = _NEVER, None
                    if timed_out and held[5] is not None:
                        held[5].uncancel()  # the ticker's cancellation is dealt with here
            if timed_out:  # the handler swallowed its cancellation and returned
                raise HandlerTimeout(self._timeout_text())
        except Exception as exc:
            await self._failed(msg, topic.name, payload, exc, time.perf_counter() - started)
            return
        except asyncio.CancelledError as exc:
            error: BaseException = exc
            if timed_out:
                error = HandlerTimeout(self._timeout_text())
            else:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the bus is cancelling this worker (stop timeout)
            # the handler timed out, or its own code raised CancelledError: a failure
            await self._failed(msg, topic.name, payload, error, time.perf_counter() - started)
            return
        except (KeyboardInterrupt, SystemExit):
            # Let it end the program, but hand the message back rather than keep it in
            # progress until the process is gone.
            self._held.pop(id(msg), None)
            # A plain NAK was redelivered at once into this process's open pull request,
            # which died with it (the message then waited out its ack wait): hand it back
            # with a delay that outlasts the program's end, as a failed delivery would be.
            self._stopping = True  # the program is ending: ask for nothing more
            with contextlib.suppress(Exception):
                await msg.nak(delay=max(_EXIT_NAK_DELAY, nak_delay(self.consumer, 1)))
                # The exception stops the event loop as soon as it leaves this task: the
                # NAK must be on the wire before that, not in the client's buffer.
                if self._nc is not None:
                    await self._nc.flush(timeout=1)
            raise
        except BaseException as exc:  # another BaseException subclass: a failure, not an exit
            await self._failed(msg, topic.name, payload, exc, time.perf_counter() - started)
            return
        elapsed = time.perf_counter() - started
        self._held.pop(id(msg), None)
        try:
            outbox = self._outbox
            if outbox is None or not outbox.ack(msg):
                await msg.ack()
        except (nats.errors.Error, OSError) as exc:
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

    def _timeout_text(self) -> str:
        return (
            f"handler ran longer than handler_timeout {self._timeout:g}s of consumer "
            f"`{self.consumer.name}` and was cancelled"
        )

    def _delivery(self, msg: Msg, topic: str, skew: str | None) -> Delivery:
        meta = msg.metadata
        headers = msg.headers or {}
        return Delivery(
            topic=topic,
            subject=msg.subject,
            stream=self.stream.name,
            consumer=self.consumer.name,
            stream_seq=meta.sequence.stream,
            num_delivered=meta.num_delivered,
            max_deliver=self._max_deliver,
            headers=dict(headers),
            replayed_from=headers.get(REPLAYED_FROM),
            schema_error=skew,
        )

    def _warn_skew(self, topic: str, skew: str) -> None:
        key = (topic, skew)
        level = logging.DEBUG if key in self._skew_warned else logging.WARNING
        if len(self._skew_warned) < 1000:
            self._skew_warned.add(key)
        logger.log(
            level,
            "topic %s: a payload published under another version of its schema fails this "
            "consumer's schema (%s); handing it to the handler (see Delivery.schema_error)",
            topic,
            skew,
            extra=log_fields(topic=topic, consumer=self.consumer.name, stream=self.stream.name),
        )

    async def _skip(self, msg: Msg, target: str) -> None:
        """A replayed dead letter of another consumer of the stream: not ours to handle."""
        self._held.pop(id(msg), None)
        with contextlib.suppress(nats.errors.Error, OSError):
            await msg.ack()
        topic = self.topics.topic_of(msg.subject)
        self._bus.metrics.handled(
            topic.name if topic is not None else msg.subject, self.consumer.name, SKIPPED, 0.0
        )
        logger.debug(
            "consumer %s: skipped a replay for consumer %s",
            self.consumer.name,
            target,
            extra=log_fields(consumer=self.consumer.name, stream=self.stream.name),
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
        with contextlib.suppress(nats.errors.Error, OSError):
            await msg.nak(delay=nak_delay(self.consumer, n))
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
        why = ""
        if self.stream.dead_letter is not None:
            dl = bus.topology.stream(self.stream.dead_letter)
            headers = dead_letter_headers(
                msg.headers,
                stream=self.stream.name,
                consumer=self.consumer.name,
                subject=msg.subject,
                seq=seq,
                stored_ns=stored_ns_of(msg.reply),
                deliveries=n,
                reason=reason,
                error=error,
            )
            subject = dl.dead_letter_subject(self.stream.name, msg.subject)
            try:
                mms = dl.max_msg_size if dl.max_msg_size and dl.max_msg_size > 0 else 0
                bus.binding.check_size(f"dlq:{topic}", dl.name, mms, len(msg.data), headers)
                ok = await bus.publish_raw(f"dlq:{topic}", subject, msg.data, headers)
            except BusError as exc:
                ok, why = False, f": {exc}"
            if ok:
                self._held.pop(id(msg), None)
                with contextlib.suppress(nats.errors.Error, OSError):
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
            f"dead-letter stream {self.stream.dead_letter} did not take it{why}"
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
        with contextlib.suppress(nats.errors.Error, OSError):
            await msg.nak(delay=nak_delay(self.consumer, n))
        bus.metrics.handled(topic, self.consumer.name, RETRIED, elapsed)

    async def stop(self, grace: float) -> None:
        """Ask for no more; handle what was received; let handlers finish (`grace` s in all).

        What the open pull request still brings is handled too, not handed back: a stop
        costs no message a delivery. Only what is still unstarted after `grace` is NAKed
        (keep `fetch_batch` near `concurrency` for slow handlers, so that a stop is short).
        """
        self._stopping = True
        if not self.started:
            return
        nc = self._nc
        if self._req_active and nc is not None and nc.is_connected:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._req_ended.wait(),
                    max(0.0, min(self._req_deadline - time.monotonic(), grace)),
                )
        self._closing = True
        while self._idle_workers:
            waiter = self._idle_workers.popleft()
            if not waiter.done():
                waiter.set_result(False)
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
        while self._buf:  # only after a handler outlived `grace`
            msg = self._buf.popleft()
            self._held.pop(id(msg), None)
            self._stopping = True  # the program is ending: ask for nothing more
            with contextlib.suppress(Exception):
                await msg.nak()
            topic = self.topics.topic_of(msg.subject)
            label = topic.name if topic is not None else msg.subject
            self._bus.metrics.handled(label, self.consumer.name, RETURNED, 0.0)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._status_tasks:  # the end of the last pull request, still being handled
            await asyncio.wait(list(self._status_tasks), timeout=1.0)

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
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from ._connect import split_servers
from ._envelope import (
    MSG_ID_HEADER,
    ConsumedTopics,
    EventPayload,
    ServiceBinding,
    now_rfc3339,
)
from ._errors import (
    BusClosedError,
    BusError,
    InvalidEnvelopeError,
    SetupError,
    StartupCheckError,
)
from ._loader import load_topology
from ._model import Consumer, Stream, Topology
from ._observe import (
    ACKED,
    DEAD_LETTERED,
    LEFT,
    NAKED_ON_STOP,
    RETRIED,
    BusMetrics,
    log_fields,
    logger,
)

if TYPE_CHECKING:
    from ._memory import MemoryEventBus

Handler = Callable[[str, EventPayload], Awaitable[None]]

DEFAULT_SERVERS = "nats://localhost:4222"
DEFAULT_ACK_WAIT = 30.0  # the server's default, seconds
DEFAULT_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # NAK delays when no backoff is declared

# Headers of a dead letter (besides the original message's own headers).
DLQ_STREAM = "Natstopo-Stream"
DLQ_CONSUMER = "Natstopo-Consumer"
DLQ_SUBJECT = "Natstopo-Subject"
DLQ_SEQUENCE = "Natstopo-Stream-Seq"
DLQ_DELIVERIES = "Natstopo-Deliveries"
DLQ_REASON = "Natstopo-Reason"
DLQ_ERROR = "Natstopo-Error"
DLQ_FAILED_AT = "Natstopo-Failed-At"
DLQ_ORIGINAL_MSG_ID = "Natstopo-Msg-Id"
DLQ_HEADERS = (
    DLQ_STREAM,
    DLQ_CONSUMER,
    DLQ_SUBJECT,
    DLQ_SEQUENCE,
    DLQ_DELIVERIES,
    DLQ_REASON,
    DLQ_ERROR,
    DLQ_FAILED_AT,
    DLQ_ORIGINAL_MSG_ID,
)
_MAX_ERROR_HEADER = 1024


def header_safe(text: str, limit: int = _MAX_ERROR_HEADER) -> str:
    """A header value: one line, at most `limit` characters."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def dead_letter_headers(
    original: dict[str, str] | None,
    *,
    stream: str,
    consumer: str,
    subject: str,
    seq: int,
    deliveries: int,
    reason: str,
    error: str,
) -> dict[str, str]:
    """The headers of a dead letter: the original ones plus where and why it failed.

    `Nats-Msg-Id` becomes `<stream>:<seq>` (one dead letter per stream message, even if
    dead-lettering runs twice); the original id is kept in `Natstopo-Msg-Id`.
    """
    headers = dict(original or {})
    original_id = headers.pop(MSG_ID_HEADER, None)
    headers.update(
        {
            MSG_ID_HEADER: f"{stream}:{seq}",
            DLQ_STREAM: stream,
            DLQ_CONSUMER: consumer,
            DLQ_SUBJECT: subject,
            DLQ_SEQUENCE: str(seq),
            DLQ_DELIVERIES: str(deliveries),
            DLQ_REASON: reason,
            DLQ_ERROR: header_safe(error),
            DLQ_FAILED_AT: now_rfc3339(),
        }
    )
    if original_id:
        headers[DLQ_ORIGINAL_MSG_ID] = original_id
    return headers


def retry_delay(consumer: Consumer, num_delivered: int) -> float:
    """Seconds before redelivery after the `num_delivered`-th delivery failed.

    The consumer's declared backoff (the last value repeats), else DEFAULT_RETRY_DELAYS.
    """
    if consumer.backoff:
        return consumer.backoff[min(num_delivered, len(consumer.backoff)) - 1] / 1e9
    return DEFAULT_RETRY_DELAYS[min(num_delivered, len(DEFAULT_RETRY_DELAYS)) - 1]


def heartbeat_after(consumer: Consumer) -> float:
    """Seconds after which a held message gets an `in_progress` (half its ack deadline)."""
    waits = [consumer.ack_wait / 1e9 if consumer.ack_wait else DEFAULT_ACK_WAIT]
    if consumer.backoff:
        waits.append(min(consumer.backoff) / 1e9)
    return max(0.02, min(waits) / 2)


def resolve_topology(
    topology: Topology | str | os.PathLike[str], environment: str | None
) -> Topology:
    if isinstance(topology, Topology):
        if environment is not None and topology.environment != environment:
            raise SetupError(
                f"topology was loaded for environment {topology.environment!r}, not {environment!r}"
            )
        return topology
    return load_topology(topology, environment)


# -- publishing ----------------------------------------------------------------------------
class _Pending:
    __slots__ = ("attempts", "body", "first_sent", "future", "headers", "label", "subject", "token")

    def __init__(
        self,
        future: asyncio.Future[bool],
        label: str,
        subject: str,
        body: bytes,
        headers: dict[str, str],
    ) -> None:
        self.future = future
        self.label = label
        self.subject = subject
        self.body = body
        self.headers = headers
        self.attempts = 0
        self.first_sent = 0.0
        self.token = ""


class _Publisher:
    """Pipelined JetStream publishing with its own acknowledgement inbox."""

    def __init__(
        self,
        nc: Client,
        *,
        timeout: float,
        retry_for: float,
        max_in_flight: int,
        metrics: BusMetrics,
    ) -> None:
        self._nc = nc
        self._timeout = timeout
        self._retry_for = retry_for
        self._max_in_flight = max_in_flight
        self._metrics = metrics
        self._pending: dict[str, _Pending] = {}
        self._sent: deque[tuple[float, str, _Pending]] = deque()
        self._in_flight = 0
        self._window_waiters: deque[asyncio.Future[None]] = deque()
        self._idle: asyncio.Event = asyncio.Event()
        self._idle.set()
        self._seq = 0
        self._prefix = ""
        self._plen = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._loop = asyncio.get_running_loop()  # made by NATSEventBus.start
        self._debug = logger.isEnabledFor(logging.DEBUG)

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._plen = len(self._prefix)
        await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
        self._sweeper = self._loop.create_task(self._sweep())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def send(
        self, label: str, subject: str, body: bytes, headers: dict[str, str]
    ) -> asyncio.Future[bool]:
        """Send one message; the future resolves True on acknowledgement, False on giving up."""
        if self._closing:
            raise BusClosedError("the bus is stopping: publishing is closed")
        while self._in_flight >= self._max_in_flight:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._window_waiters.append(waiter)
            await waiter
        self._in_flight += 1
        self._idle.clear()
        p = _Pending(self._loop.create_future(), label, subject, body, headers)
        await self._send(p)
        return p.future

    async def _send(self, p: _Pending) -> None:
        self._seq += 1
        token = str(self._seq)
        p.token = token
        p.attempts += 1
        now = time.monotonic()
        if p.attempts == 1:
            p.first_sent = now
        self._pending[token] = p
        self._sent.append((now, token, p))
        try:
            await self._nc.publish(p.subject, p.body, reply=self._prefix + token, headers=p.headers)
        except (
            nats.errors.OutboundBufferLimitError,
            nats.errors.ConnectionReconnectingError,
        ) as exc:
            if self._pending.pop(token, None) is p:
                self._retry(p, f"not sent: {type(exc).__name__}")
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            if self._pending.pop(token, None) is p:
                self._finish(p, False, f"connection closed ({type(exc).__name__})")

    async def _on_reply(self, msg: Msg) -> None:
        p = self._pending.pop(msg.subject[self._plen :], None)
        if p is None:
            return  # the answer to a send that already timed out and was sent again
        data = msg.data
        if not data:
            status = msg.headers.get("Status") if msg.headers else None
            self._retry(p, "no responders" if status == "503" else f"status {status}")
            return
        if b'"error"' not in data:
            # a PubAck ({"stream":..,"seq":..[,"duplicate":true]}): stored, or stored before
            self._finish(p, True, None)
            if self._debug:
                self._log_ack(p, data)
            return
        try:
            resp = json.loads(data)
        except ValueError:
            self._finish(p, False, f"unreadable acknowledgement {data[:100]!r}")
            return
        err = resp.get("error")
        if err is None:
            self._finish(p, True, None)
        elif err.get("code") == 503:
            self._retry(p, f"{err.get('description')} (err_code {err.get('err_code')})")
        else:
            self._finish(p, False, f"{err.get('description')} (err_code {err.get('err_code')})")

    def _log_ack(self, p: _Pending, data: bytes) -> None:
        ack = json.loads(data)
        event_id = p.headers.get(MSG_ID_HEADER)
        logger.debug(
            "published %s %s stream_seq=%s%s",
            p.label,
            event_id,
            ack.get("seq"),
            " (duplicate)" if ack.get("duplicate") else "",
            extra=log_fields(
                event_id=event_id,
                topic=p.label,
                subject=p.subject,
                stream=ack.get("stream"),
                stream_seq=ack.get("seq"),
                attempts=p.attempts,
            ),
        )

    def _retry(self, p: _Pending, reason: str) -> None:
        delay = min(0.05 * 2 ** (p.attempts - 1), 1.0)
        if self._closing or time.monotonic() + delay - p.first_sent >= self._retry_for:
            self._finish(p, False, f"{reason}; gave up after {p.attempts} attempts")
            return
        logger.debug(
            "publish to %s: %s; sending again in %.2fs",
            p.subject,
            reason,
            delay,
            extra=log_fields(
                subject=p.subject, topic=p.label, event_id=p.headers.get(MSG_ID_HEADER)
            ),
        )
        asyncio.get_running_loop().call_later(delay, self._resend, p)

    def _resend(self, p: _Pending) -> None:
        if self._closing:
            self._finish(p, False, "the bus stopped while retrying")
            return
        task = asyncio.get_running_loop().create_task(self._send(p))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(self, p: _Pending, ok: bool, reason: str | None) -> None:
        if p.token == "":
            return  # finished before
        p.token = ""
        if not p.future.done():  # done: the publishing task was cancelled meanwhile
            p.future.set_result(ok)
        self._in_flight -= 1
        while self._window_waiters and self._in_flight < self._max_in_flight:
            w = self._window_waiters.popleft()
            if not w.done():
                w.set_result(None)
                break
        if self._in_flight == 0:
            self._idle.set()
        self._metrics.published(p.label, ok, time.monotonic() - p.first_sent, p.attempts)
        if not ok:
            logger.error(
                "publish of %s to %s failed: %s",
                p.headers.get(MSG_ID_HEADER),
                p.subject,
                reason,
                extra=log_fields(
                    event_id=p.headers.get(MSG_ID_HEADER), topic=p.label, subject=p.subject
                ),
            )

    async def _sweep(self) -> None:
        """Time out sends whose acknowledgement did not come within `timeout`."""
        interval = min(0.1, self._timeout / 4)
        sent = self._sent
        while True:
            await asyncio.sleep(interval)
            limit = time.monotonic() - self._timeout
            while sent and sent[0][0] <= limit:
                _, token, p = sent.popleft()
                if self._pending.get(token) is p:
                    del self._pending[token]
                    self._retry(p, f"no acknowledgement in {self._timeout}s")
            # entries of answered sends are dropped as they reach the front
            while sent and sent[0][1] not in self._pending:
                sent.popleft()

    async def close(self, grace: float) -> None:
        """Wait for in-flight publishes (at most `grace` seconds), then fail what is left."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        self._closing = True
        for p in list(self._pending.values()):
            self._finish(p, False, "the bus stopped before an acknowledgement came")
        self._pending.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


# -- consuming -----------------------------------------------------------------------------
class _ConsumerRunner:
    """Runs the handlers of one durable pull consumer with bounded concurrency."""

    def __init__(self, bus: NATSEventBus, consumer: Consumer) -> None:
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
            self._bus.metrics.handled(label, self.consumer.name, NAKED_ON_STOP, 0.0)
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


# -- the bus -------------------------------------------------------------------------------
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
        self._publisher: _Publisher | None = None
        self._runners: dict[str, _ConsumerRunner] = {}
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
            self._publisher = _Publisher(
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
        from ._reconcile import apply_plan, plan_changes

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
    def _require_started(self) -> _Publisher:
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
            runner = _ConsumerRunner(self, consumer)
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


class EventBus(Protocol):
    """What application code may rely on, whichever bus `create_event_bus` made."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(
        self, topic: str, payload: EventPayload, *, tokens: Sequence[str] = ()
    ) -> bool: ...

    async def publish_many(
        self, topic: str, payloads: Iterable[EventPayload], *, tokens: Sequence[str] = ()
    ) -> list[bool]: ...

    async def subscribe(self, topic: str, handler: Handler) -> None: ...


@overload
def create_event_bus(kind: Literal["nats"] = "nats", **kwargs: Any) -> NATSEventBus: ...
@overload
def create_event_bus(kind: Literal["memory"], **kwargs: Any) -> MemoryEventBus: ...
@overload
def create_event_bus(kind: str, **kwargs: Any) -> EventBus: ...
def create_event_bus(kind: str = "nats", **kwargs: Any) -> EventBus:
    """The source document's factory: `create_event_bus("nats", servers=..., topology=...,
    service=..., environment=...)` or `create_event_bus("memory", topology=..., service=...)`.

    Raises:
        SetupError: Unknown kind, or arguments of the source document's design that the
            topology replaces (`stream_name`, `consumer_group`).
    """
    replaced = [k for k in ("stream_name", "consumer_group") if k in kwargs]
    if replaced:
        raise SetupError(
            f"{', '.join(replaced)}: streams and consumers come from the topology now; pass "
            "topology=<file> and service=<name> instead"
        )
    if kind == "nats":
        return NATSEventBus(**kwargs)
    if kind == "memory":
        from ._memory import MemoryEventBus

        return MemoryEventBus(**kwargs)
    raise SetupError(f"unknown event bus kind {kind!r}: use 'nats' or 'memory'")

"""Pipelined JetStream publishing with the bus's own acknowledgement inbox.

Each publish is sent with a reply subject of the inbox and resolves a future when the
server's PubAck arrives, so many publishes are in flight at once (a bounded window). A
timeout, no-responders or a lost connection sends it again with the same `Nats-Msg-Id`
after a bounded backoff; the stream's duplicate window keeps a retried publish stored
once. The future is True once acknowledged (also for a duplicate), False when the retries
ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from .._errors import BusClosedError
from .envelope import MSG_ID_HEADER
from .observability import (
    BusMetrics,
    log_fields,
    logger,
)
from .outbox import Outbox, deliver_directly, header_block

# A publish that finds no responder this long is said once per subject at warning level
# (the retries go on at debug): a stream missing, or an import a reload left dead.
NO_RESPONDER_WARNING_AFTER = 2.0


class PublishBatch:
    """The results of many publishes (`publish_many`) in one future, instead of a future
    per message: it resolves to their list, in order, once every one is finished, or
    raises the first refusal's error."""

    __slots__ = ("future", "left", "results")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.future: asyncio.Future[list[bool]] = loop.create_future()
        self.results = [False] * size
        self.left = size
        if not size:
            self.future.set_result([])

    def finish(self, index: int, ok: bool) -> None:
        self.results[index] = ok
        self.left -= 1
        if not self.left and not self.future.done():
            self.future.set_result(self.results)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class PendingPublish:
    __slots__ = (
        "attempts",
        "batch",
        "body",
        "first_sent",
        "future",
        "hdr",
        "headers",
        "index",
        "label",
        "sent_at",
        "subject",
        "token",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        label: str,
        subject: str,
        body: bytes,
        headers: dict[str, str],
        hdr: bytes | None,
        batch: PublishBatch | None = None,
        index: int = 0,
    ) -> None:
        # None: the result goes to `batch`
        self.future: asyncio.Future[bool] | None = (
            None if batch is not None else loop.create_future()
        )
        self.batch = batch
        self.index = index
        self.label = label
        self.subject = subject
        self.body = body
        self.headers = headers
        self.hdr = hdr  # the header block, when the bus built and checked the headers
        self.attempts = 0
        self.first_sent = 0.0
        self.sent_at = 0.0  # of the attempt sent as `token`
        self.token = ""

    def result(self, ok: bool) -> None:
        if self.batch is not None:
            self.batch.finish(self.index, ok)
        elif not self.future.done():  # type: ignore[union-attr]  # done: cancelled meanwhile
            self.future.set_result(ok)  # type: ignore[union-attr]

    def fail(self, error: BaseException) -> None:
        if self.batch is not None:
            self.batch.fail(error)
        elif not self.future.done():  # type: ignore[union-attr]
            self.future.set_exception(error)  # type: ignore[union-attr]


class Publisher:
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
        self._pending: dict[str, PendingPublish] = {}
        # the tokens of sends in the order sent (the time is the PendingPublish's `sent_at`
        # while it is pending under that token): no tuple per send for the collector
        self._sent: deque[str] = deque()
        self._in_flight = 0
        self._window_waiters: deque[asyncio.Future[None]] = deque()
        self._idle: asyncio.Event = asyncio.Event()
        self._idle.set()
        self._seq = 0
        self._prefix = ""
        self._plen = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False  # in-flight publishes are failed, retries stop
        self._refusing = False  # no new publish is taken (in-flight ones still finish)
        self._loop = asyncio.get_running_loop()  # made by NATSEventBus.start
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._outbox = Outbox(nc)
        self._unanswered: set[str] = set()  # subjects warned of (no responder for a while)
        self._foreign_warned: set[str] = set()  # subjects a core responder answered on

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._plen = len(self._prefix)
        sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
        # The handler never waits: PubAcks go to it inside nats-py's read loop.
        deliver_directly(sub, self._handle_reply, self._reply_failed, self._handle_ack)
        self._sweeper = self._loop.create_task(self._sweep())

    def push(self) -> None:
        """Hand what is buffered to the socket now (see `Outbox.write_now`)."""
        self._outbox.write_now()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def send_nowait(
        self,
        label: str,
        subject: str,
        body: bytes,
        headers: dict[str, str],
        batch: PublishBatch | None = None,
        index: int = 0,
    ) -> PendingPublish | None:
        """`send` of headers the bus built and checked, when the window has room and the
        outbox can write it at once; None when `send` is needed (it waits, or nats-py's own
        publish raises or buffers). With `batch`, the result goes to its place `index`
        (the PendingPublish has no future)."""
        if self._refusing or self._in_flight >= self._max_in_flight or self._window_waiters:
            return None
        self._seq += 1
        token = str(self._seq)
        hdr = header_block(headers)
        if not self._outbox.hpub(subject, self._prefix + token, hdr, body):
            self._seq -= 1
            return None
        self._in_flight += 1
        self._idle.clear()
        p = PendingPublish(self._loop, label, subject, body, headers, hdr, batch, index)
        self._track(p, token)
        return p

    async def send(
        self,
        label: str,
        subject: str,
        body: bytes,
        headers: dict[str, str],
        *,
        checked: bool = False,
        hdr: bytes | None = None,
        batch: PublishBatch | None = None,
        index: int = 0,
    ) -> PendingPublish:
        """Send one message; its future (or its place in `batch`) resolves True on
        acknowledgement, False on giving up.

        `checked`: the bus built the headers itself (see `outbox.header_block`). `hdr`: the
        header block to write (`outbox.received_header_block`), `headers` being what goes
        through nats-py's publish when the outbox cannot write it.
        """
        if self._refusing:
            raise BusClosedError("the bus is stopping: publishing is closed")
        while self._in_flight >= self._max_in_flight:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._window_waiters.append(waiter)
            await waiter
            if self._refusing:
                raise BusClosedError("the bus stopped while this publish waited for the window")
        self._in_flight += 1
        self._idle.clear()
        if hdr is None and checked:
            hdr = header_block(headers)
        p = PendingPublish(self._loop, label, subject, body, headers, hdr, batch, index)
        await self._send(p)
        return p

    def _track(self, p: PendingPublish, token: str) -> None:
        """`p` is sent (again) as `token`: awaited under it, timed out by the sweeper."""
        p.token = token
        p.attempts += 1
        p.sent_at = now = time.monotonic()
        if p.attempts == 1:
            p.first_sent = now
        self._pending[token] = p
        self._sent.append(token)

    async def _send(self, p: PendingPublish) -> None:
        self._seq += 1
        token = str(self._seq)
        self._track(p, token)
        if p.hdr is not None and self._outbox.hpub(p.subject, self._prefix + token, p.hdr, p.body):
            return
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
        except Exception as exc:
            # Anything else (MaxPayloadError, a header nats-py refuses, a dead socket): the
            # same send would fail again. Fail this publish, keep the window's place free,
            # and never leave an exception in a background retry task.
            if self._pending.pop(token, None) is p:
                self._finish(p, False, f"not sent: {type(exc).__name__}: {exc}")

    async def _on_reply(self, msg: Msg) -> None:
        self._handle_reply(msg)

    def _reply_failed(self, msg: Msg, exc: Exception) -> None:
        logger.error(
            "handling the acknowledgement on %s failed: %s: %s",
            msg.subject,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )

    def _handle_ack(self, subject: bytes, data: bytes) -> None:
        """`_handle_reply` of a message without headers (a PubAck or an API error), from
        the bus's reader: its subject as read, no `Msg` built."""
        p = self._pending.pop(subject[self._plen :].decode(), None)
        if p is None:
            return  # the answer to a send that already timed out and was sent again
        if not data:
            self._retry(p, "an empty answer without a status")
            return
        self._answered(p, data)

    def _handle_reply(self, msg: Msg) -> None:
        p = self._pending.pop(msg.subject[self._plen :], None)
        if p is None:
            return  # the answer to a send that already timed out and was sent again
        data = msg.data
        if not data:
            status = msg.headers.get("Status") if msg.headers else None
            self._retry(p, "no responders" if status == "503" else f"status {status}")
            return
        self._answered(p, data)

    def _answered(self, p: PendingPublish, data: bytes) -> None:
        if data.startswith(b'{"stream":') and b'"error"' not in data:
            # a PubAck ({"stream":..,"seq":..[,"duplicate":true]}, every server version
            # measured): stored, or stored before
            self._finish(p, True, None)
            if self._debug:
                self._log_ack(p, data)
            return
        try:
            resp = json.loads(data)
        except ValueError:
            resp = None
        if type(resp) is dict:
            err = resp.get("error")
            if type(err) is dict:
                reason = f"{err.get('description')} (err_code {err.get('err_code')})"
                if err.get("code") == 503 and not _stream_full(err):
                    self._retry(p, reason)
                else:
                    self._finish(p, False, reason)
                return
            if err is None and type(resp.get("stream")) is str and type(resp.get("seq")) is int:
                self._finish(p, True, None)
                return
        self._foreign(p, data)

    def _foreign(self, p: PendingPublish, data: bytes) -> None:
        """An answer that is not a stream's: a core NATS responder on the subject. Not an
        acknowledgement: the publish waits on for the stream's (a stream may share the
        subject), and is sent again or gives up as one that got no answer."""
        self._pending[p.token] = p  # still listening on the same reply subject
        if p.subject not in self._foreign_warned:
            self._foreign_warned.add(p.subject)
            logger.warning(
                "publish to %s: answered by a responder that is not a JetStream stream "
                "(%r): not taken as stored; waiting for the stream's acknowledgement",
                p.subject,
                bytes(data[:100]),
                extra=log_fields(
                    subject=p.subject, topic=p.label, event_id=p.headers.get(MSG_ID_HEADER)
                ),
            )

    def _log_ack(self, p: PendingPublish, data: bytes) -> None:
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

    def _retry(self, p: PendingPublish, reason: str) -> None:
        delay = min(0.05 * 2 ** (p.attempts - 1), 1.0)
        waited = time.monotonic() - p.first_sent
        if (
            reason == "no responders"
            and waited >= NO_RESPONDER_WARNING_AFTER
            and p.subject not in self._unanswered
        ):
            self._unanswered.add(p.subject)  # once per subject: retries are many
            logger.warning(
                "publish to %s: no stream has answered for %.0fs (no responders); retrying "
                "for up to %gs. Is the stream provisioned on this server? With natstopo's "
                "authorization: is the service's account importing it (an account added "
                "by a config reload needs a server restart)?",
                p.subject,
                waited,
                self._retry_for,
                extra=log_fields(
                    subject=p.subject, topic=p.label, event_id=p.headers.get(MSG_ID_HEADER)
                ),
            )
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

    def _resend(self, p: PendingPublish) -> None:
        if self._closing:
            self._finish(p, False, "the bus stopped while retrying")
            return
        task = asyncio.get_running_loop().create_task(self._send(p))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(self, p: PendingPublish, ok: bool, reason: str | None) -> None:
        if p.token == "":
            return  # finished before
        p.token = ""
        p.result(ok)
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

    def refuse(self, subject: str, error: BaseException) -> int:
        """Fail every in-flight publish to `subject` (the server's permissions refused it:
        sending again cannot help) with `error`; how many. Compared without case, as nats-py
        lower-cases the server's report."""
        wanted = subject.lower()
        refused = [(t, p) for t, p in self._pending.items() if p.subject.lower() == wanted]
        for token, p in refused:
            del self._pending[token]
            p.fail(error)
            self._finish(p, False, str(error))
        return len(refused)

    async def _sweep(self) -> None:
        """Time out sends whose acknowledgement did not come within `timeout`."""
        interval = min(0.1, self._timeout / 4)
        sent = self._sent
        pending = self._pending
        while True:
            await asyncio.sleep(interval)
            limit = time.monotonic() - self._timeout
            while sent:
                token = sent[0]
                p = pending.get(token)
                if p is None:  # answered (or sent again under another token)
                    sent.popleft()
                    continue
                if p.sent_at > limit:
                    break
                sent.popleft()
                del pending[token]
                self._retry(p, f"no acknowledgement in {self._timeout}s")

    async def close(self, grace: float) -> None:
        """Take no new publish; wait for in-flight ones (at most `grace` s); fail what is left.

        The bus closes its publisher after its handlers finished, so a publish arriving now
        comes from outside a handler: refused at once (BusClosedError), or a steady stream of
        them would hold the stop for all of `grace`.
        """
        self._refusing = True
        while self._window_waiters:  # publishes waiting for room: they raise BusClosedError
            w = self._window_waiters.popleft()
            if not w.done():
                w.set_result(None)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        self._closing = True
        for p in list(self._pending.values()):
            self._finish(p, False, "the bus stopped before an acknowledgement came")
        self._pending.clear()
        # a resend still inside nats-py's publish (waiting for a forced flush that a closing
        # connection never does) would be left pending when the loop ends
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


def _stream_full(err: dict[str, Any]) -> bool:
    """A full stream that discards new messages answers 503 with err_code 10077 ("maximum
    messages exceeded", "maximum bytes exceeded", ... measured): retrying cannot help while
    nothing frees room, so the publish fails at once."""
    return err.get("err_code") == 10077 and "exceeded" in str(err.get("description", ""))

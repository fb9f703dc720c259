"""NATSEventBus: publish and consume only what the topology declares, on JetStream.

Publishing is pipelined: each publish is sent with a reply subject of the bus's own
acknowledgement inbox and resolves a future when the server's PubAck arrives, so many
publishes are in flight at once (a bounded window). A timeout, no-responders or a lost
connection sends it again with the same `Nats-Msg-Id` after a bounded backoff; the
stream's duplicate window keeps a retried publish stored once. `publish` returns True
once acknowledged (also when the server says "duplicate"), False when the retries ran out.

Consuming binds to the durable pull consumer the topology declares for this service and
topic; it never creates or changes one (except `auto_provision=True`, through the
reconciler). See `pull_consumer` for how messages are fetched, handled, retried and
dead-lettered.

`start` gives up after `start_timeout` seconds with one `ConnectError`; once connected the
bus reconnects forever. `stop` never raises for a connection that is gone.

Credentials, TLS and the JetStream domain come from `connection` (a `ConnectOptions`) or the
`NATS_*` variables `natstopo auth render` writes (`NATS_URL`, `NATS_USER`/`NATS_PASSWORD`,
`NATS_NKEY`, `NATS_CREDS`, `NATS_TOKEN`, `NATS_CA`/`NATS_CERT`/`NATS_KEY`,
`NATS_INBOX_PREFIX`, `NATS_JS_API_PREFIX`, `NATS_JS_DOMAIN`); replies arrive on the service's own inbox prefix
(`_INBOX.<service>`, the only one its permissions let it read). A publish, fetch or ack
the server's permissions refuse is a `PermissionViolationError` naming subject and service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client

from .._errors import (
    BusClosedError,
    ConnectError,
    PermissionViolationError,
    SetupError,
    StartupCheckError,
)
from ..jetstream.api import JetStreamApi
from ..jetstream.connect import ConnectOptions, new_client, split_servers
from ..jetstream.connect import _reason as connect_reason
from ..jetstream.violations import permission_violation, record_violation
from ..security.permissions import inbox_prefix as service_inbox
from ..topology.model import Topology
from .binding import ServiceBinding, resolve_topology
from .contract import HANDLING, ContextHandler, Handler, handler_arity, stop_outside_handlers
from .envelope import EventPayload
from .observability import BusMetrics, log_fields, logger
from .options import (
    count,
    incomplete_consumer_text,
    mapping_argument,
    replaced_arguments,
    seconds,
    servers_argument,
    service_argument,
    tokens_argument,
    topology_argument,
    unknown_arguments,
)
from .outbox import received_header_block
from .publisher import PublishBatch, Publisher
from .pull_consumer import ConsumerRunner

DEFAULT_SERVERS = "nats://localhost:4222"
_FROM_ENV: Any = object()  # `servers` not given: `connection`'s, else NATS_URL, else the default
_OPTIONS = (
    "servers",
    "connection",
    "user",
    "password",
    "token",
    "creds",
    "nkey_seed",
    "topology",
    "service",
    "environment",
    "startup_check",
    "auto_provision",
    "publish_timeout",
    "publish_retry_for",
    "max_in_flight",
    "stop_timeout",
    "pull_expires",
    "start_timeout",
    "metrics",
    "connect_options",
)


def _check_connect_options(options: dict[str, Any]) -> None:
    """Refuse at construction what `nats.connect` would refuse at `start()` with a raw
    TypeError: a keyword it does not take (read from its signature)."""
    import inspect

    known = set(inspect.signature(Client.connect).parameters) - {"self"}
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        from difflib import get_close_matches

        hints = [
            f"`{k}`"
            + (f" (did you mean `{m[0]}`?)" if (m := get_close_matches(k, known, 1)) else "")
            for k in unknown
        ]
        raise SetupError(
            f"`connect_options` has keyword(s) nats.connect does not take: {', '.join(hints)}"
        )


# A pull request's lifetime bound: under the server's default response threshold (2 min) of
# the service account's MSG.NEXT import (docs/security.md), with room to spare.
MAX_PULL_EXPIRES = 60.0
# publish_many hands its buffered messages to the socket every this many (~110 KB of the
# usual envelope), instead of only when the window fills.
_PUSH_EVERY = 256


def _abandon(nc: Client) -> None:
    """What a close that did not finish leaves behind (its socket would not take the last
    buffered bytes within the bound: a dead server): nats-py cancels the subscriptions'
    tasks and drops the socket only after that write, so they would wait forever and be
    destroyed pending once the connection is garbage. Cancel and drop them here."""
    subs = getattr(nc, "_subs", None)
    for sub in list(subs.values()) if isinstance(subs, dict) else ():
        task = getattr(sub, "_wait_for_msgs_task", None)
        if task is not None and not task.done():
            task.cancel()
    if isinstance(subs, dict):
        subs.clear()
    transport = getattr(nc, "_transport", None)
    if transport is not None:  # closing it twice is harmless
        with contextlib.suppress(Exception):
            transport.close()


class NATSEventBus:
    """The event bus of one service of a topology, on NATS JetStream.

    Args:
        servers: NATS URL(s): a list, or one string (comma-separated for several); by
            default `connection.servers`, else `NATS_URL`, else nats://localhost:4222.
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
        pull_expires: Seconds a pull request waits on the server (at most 60); bounds
            `stop`'s wait too.
        start_timeout: Seconds `start` tries to connect before it gives up (ConnectError).
        metrics: A `BusMetrics` (e.g. `bus_runtime.contrib.prometheus.PrometheusMetrics`).
        connect_options: Extra keyword arguments for `nats.connect`.
        connection: Credentials, TLS, inbox prefix and JetStream domain
            (default: `ConnectOptions.from_env()`, the `NATS_*` variables).
        user, password, token, creds, nkey_seed: Credentials, winning over `connection`'s
            and the environment's (`creds`, `nkey_seed`: paths of a `.creds` / seed file).

    Raises:
        SetupError: A wrong argument, or the source document's `stream_name=` /
            `consumer_group=`, which the topology replaces.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = _FROM_ENV,
        *replaced: object,
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
        start_timeout: float = 10.0,
        metrics: BusMetrics | None = None,
        connect_options: dict[str, Any] | None = None,
        connection: ConnectOptions | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds: str | None = None,
        nkey_seed: str | None = None,
        **unknown: Any,
    ) -> None:
        replaced_arguments("NATSEventBus", replaced, unknown)
        unknown_arguments("NATSEventBus", unknown, _OPTIONS)
        if topology is None or service is None:
            raise SetupError(
                "NATSEventBus needs `topology` (the topology file) and `service` (the "
                "service it runs as): streams, subjects and consumers come from the topology"
            )
        if startup_check not in ("error", "warn", "off"):
            raise SetupError(f"`startup_check` must be error, warn or off, not {startup_check!r}")
        self.publish_timeout = seconds("publish_timeout", publish_timeout)
        self.publish_retry_for = seconds("publish_retry_for", publish_retry_for, allow_equal=True)
        self.max_in_flight = count("max_in_flight", max_in_flight)
        self.stop_timeout = seconds("stop_timeout", stop_timeout, allow_equal=True)
        self.pull_expires = seconds("pull_expires", pull_expires, minimum=0.001, allow_equal=True)
        if self.pull_expires > MAX_PULL_EXPIRES:
            raise SetupError(
                f"`pull_expires` must be at most {MAX_PULL_EXPIRES:g} seconds, got "
                f"{pull_expires!r}: across a service account's import the server forwards a "
                "pull's messages for 2 minutes at most (the export's response threshold; a "
                "message delivered later waits out its ack wait), and stop() waits a pull out"
            )
        self.start_timeout = seconds("start_timeout", start_timeout)
        if metrics is not None and not isinstance(metrics, BusMetrics):
            raise SetupError(f"`metrics` must be a BusMetrics, got {type(metrics).__name__}")
        self.connect_options = mapping_argument("connect_options", connect_options)
        _check_connect_options(self.connect_options)
        self.topology = resolve_topology(topology_argument("NATSEventBus", topology), environment)
        self.service = service_argument("NATSEventBus", service)
        self.binding = ServiceBinding(self.topology, service)
        self.connection = self._connection(
            servers,
            connection,
            user=user,
            password=password,
            token=token,
            creds=creds,
            nkey_seed=nkey_seed,
        )
        self.servers = list(self.connection.servers)
        self.api_prefix = self.connection.api_prefix
        self.startup_check = startup_check
        self.auto_provision = bool(auto_provision)
        self.metrics = metrics or BusMetrics()
        self.debug_logging = logger.isEnabledFor(logging.DEBUG)
        self.nc: Client | None = None
        self._publisher: Publisher | None = None
        self._runners: dict[str, ConsumerRunner] = {}
        self._state = "new"
        self._connect_errors: list[BaseException] = []
        self._violations: list[PermissionViolationError] = []  # seen during start
        self._reported: set[str] = set()  # refused subjects logged at error level once
        self._transition: asyncio.Future[None] | None = None  # a start or stop under way
        self._stop_task: asyncio.Task[None] | None = None

    def _connection(
        self, servers: object, connection: object, **credentials: object
    ) -> ConnectOptions:
        if connection is not None and not isinstance(connection, ConnectOptions):
            raise SetupError(
                f"`connection` must be a ConnectOptions, got {type(connection).__name__}"
            )
        for name, value in credentials.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise SetupError(f"`{name}` must be a non-empty string, got {value!r}")
        try:
            base = connection if connection is not None else ConnectOptions.from_env()
        except ConnectError as exc:  # a bad NATS_JS_DOMAIN / NATS_JS_API_PREFIX
            raise SetupError(str(exc)) from exc
        values: dict[str, Any] = {k: v for k, v in credentials.items() if v is not None}
        if servers is not _FROM_ENV:
            values["servers"] = split_servers(servers_argument(servers))
        elif connection is None and not os.environ.get("NATS_URL"):
            values["servers"] = (DEFAULT_SERVERS,)
        if "user" in values or "token" in values or "creds" in values or "nkey_seed" in values:
            # explicit credentials replace the environment's, never mix with them
            for other in ("user", "password", "token", "creds", "nkey_seed"):
                values.setdefault(other, None)
        # The inbox prefix the service's permissions allow (harmless without authorization).
        values["inbox_prefix"] = base.inbox_prefix or service_inbox(self.service)
        values["name"] = f"natstopo:{self.topology.name}:{self.service}"
        options = dataclasses.replace(base, **values)
        if options.password is not None and options.user is None:
            raise SetupError("`password` needs `user` (or NATS_USER)")
        return options

    # -- lifecycle
    async def start(self) -> None:
        """Connect, check (or provision) this service's streams and consumers, start consuming.

        Raises:
            SetupError: A consumer has handlers for some of its topics only.
            ConnectError: No server answered within `start_timeout` (one line with why).
            StartupCheckError: The server differs from the topology (`startup_check="error"`).
            BusClosedError: Called twice, or after `stop`.
        """
        if self._state != "new":
            raise BusClosedError(f"start() called on a bus that is {self._state}")
        for runner in self._runners.values():
            missing = runner.missing_topics()
            if missing:
                raise SetupError(incomplete_consumer_text(runner.consumer.name, missing))
        self._state = "starting"
        self._transition = asyncio.get_running_loop().create_future()
        try:
            await self._start()
        finally:
            done, self._transition = self._transition, None
            if not done.done():
                done.set_result(None)

    async def _start(self) -> None:
        try:
            self.nc = await self._connect()
        except BaseException:
            self._state = "new"
            raise
        try:
            self.binding.max_payload = self.nc.max_payload
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
            await self._close_connection()
            raise
        logger.info(
            "bus of %s started on %s (topology %s, %s)",
            self.service,
            self._where(),
            self.topology.name,
            self.topology.environment or "base",
        )

    async def _connect(self) -> Client:
        """Connect within `start_timeout`; afterwards nats-py reconnects forever.

        nats-py's `max_reconnect_attempts=-1` governs the first connect too: it would try
        forever, so the bound is a deadline around it, and the reason is the last error seen.
        """
        options: dict[str, Any] = {
            "name": self.connection.name,
            "reconnect_time_wait": 0.5,
            "max_reconnect_attempts": -1,
            "connect_timeout": min(2.0, self.start_timeout),
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        shown = list(self.connection.shown_servers)
        try:
            options.update(self.connection.auth_kwargs())
        except ConnectError as exc:  # a credentials, nkey or TLS file that cannot be used
            raise ConnectError(shown, exc.reason) from exc
        options.update(self.connect_options)
        self._connect_errors = []
        nc = new_client(self.connection)
        try:
            await asyncio.wait_for(nc.connect(servers=self.servers, **options), self.start_timeout)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2.0)
            reasons = [connect_reason(e, options["connect_timeout"]) for e in self._connect_errors]
            if not isinstance(exc, TimeoutError):
                reasons.append(connect_reason(exc, options["connect_timeout"]))
            auth = [r for r in reasons if r.startswith("authorization failed")]
            reason = auth[0] if auth else reasons[-1] if reasons else "no server answered"
            raise ConnectError(
                shown,
                self.connection.redact(
                    f"{reason} (gave up after start_timeout {self.start_timeout:g}s)"
                ),
            ) from exc
        finally:
            self._connect_errors = []
        return nc

    def _where(self) -> str:
        """The server this bus is connected to, without credentials."""
        url = self.nc.connected_url if self.nc is not None else None
        if url is None:
            return ", ".join(self.connection.shown_servers)
        return f"{url.hostname}:{url.port}" if url.port else str(url.hostname)

    def used_assets(self) -> tuple[set[str], set[tuple[str, str]]]:
        """The streams and (stream, consumer) pairs this service publishes to, consumes or
        dead-letters to (the dead-letter streams of its consumers' streams only: a
        publisher writes no dead letter, and its permissions grant it no such stream)."""
        streams = {t.stream for t in self.topology.topics_published_by(self.service)}
        consumers = {(c.stream, c.name) for c in self.topology.consumers_of(self.service)}
        consumed = {s for s, _ in consumers}
        streams |= consumed
        streams |= {d for s in consumed if (d := self.topology.stream(s).dead_letter) is not None}
        return streams, consumers

    async def _check_server(self) -> None:
        if self.startup_check == "off" and not self.auto_provision:
            return
        from ..reconcile.apply import apply_plan
        from ..reconcile.planner import plan_changes

        assert self.nc is not None
        streams, consumers = self.used_assets()
        api = JetStreamApi(self.nc, self.api_prefix)
        try:
            # Only this service's own consumers are read: another service's consumer of a
            # stream it publishes to is none of its business, and its permissions allow
            # CONSUMER.INFO of its own consumers only (no CONSUMER.LIST).
            plan = await plan_changes(
                api,
                self.topology,
                only_streams=sorted(streams),
                only_consumers=sorted(consumers),
                every_consumer=self.auto_provision,
            )
        except Exception as exc:
            # A refused API request is dropped by the server and only times out: the
            # violation reported meanwhile is the reason.
            if self._violations:
                raise self._violations[0] from exc
            raise
        plan.changes = [
            c for c in plan.changes if c.consumer is None or (c.stream, c.consumer) in consumers
        ]
        if not plan.has_changes:
            return
        if self.auto_provision:
            logger.warning(
                "auto_provision: applying the topology for %s:\n%s", self.service, plan.to_text()
            )
            await apply_plan(api, plan, allow_destructive=False)
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
        """Stop consuming (what was received is handled), wait for publishes, close.

        Never raises because the connection is gone; bounded by `stop_timeout` (handlers,
        then in-flight publishes) plus a few seconds to close.
        """
        if HANDLING.get() is self:
            # Called from a handler (or a task it started): stopping waits for the
            # handlers, this one included. Start the stop and return; it completes once the
            # handler has returned.
            if self._stop_task is None:
                self._stop_task = stop_outside_handlers(self.stop)
            return
        while self._transition is not None:  # a start or another stop under way: after it
            await asyncio.shield(self._transition)
        if self._state == "stopped":
            return
        if self._state != "started":
            self._state = "stopped"
            return
        self._state = "stopping"
        self._transition = asyncio.get_running_loop().create_future()
        try:
            await self._stop()
        finally:
            done, self._transition = self._transition, None
            if not done.done():
                done.set_result(None)

    async def _stop(self) -> None:
        try:
            results = await asyncio.gather(
                *(r.stop(self.stop_timeout) for r in self._runners.values()),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result
                if isinstance(result, Exception):
                    logger.error(
                        "stopping a consumer failed: %s: %s", type(result).__name__, result
                    )
            if self._publisher is not None:
                await self._publisher.close(self.stop_timeout)
        finally:
            await self._close_connection()
            self._state = "stopped"
        logger.info("bus of %s stopped", self.service)

    async def _close_connection(self) -> None:
        nc, self.nc = self.nc, None
        if nc is None:
            return
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), 5.0)
        except Exception as exc:  # a dead socket: BrokenPipeError, ConnectionResetError ...
            logger.debug("drain failed (%s: %s); closing", type(exc).__name__, exc)
        if not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5.0)
        _abandon(nc)

    async def __aenter__(self) -> NATSEventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_error(self, exc: Exception) -> None:
        violation = permission_violation(exc, self.service, self._subjects())
        if violation is not None:
            if self.nc is not None:  # a JetStream request it refused then fails at once
                record_violation(self.nc, exc)
            self._refused(violation)
            return
        if self._state == "starting":
            self._connect_errors.append(exc)  # reported once, in the ConnectError
            return
        logger.warning("nats: %s: %s", type(exc).__name__, self.connection.redact(str(exc)))

    def _subjects(self) -> list[str]:
        """Subjects this bus sends to, so a violation names them in their own case (nats-py
        lower-cases the server's text)."""
        out = [r.next_subject for r in self._runners.values()]
        out += [t.subject for t in self.topology.topics_published_by(self.service)]
        streams, consumers = self.used_assets()  # what the start-up check reads
        out += [f"{self.api_prefix}.STREAM.INFO.{s}" for s in streams]
        out += [f"{self.api_prefix}.CONSUMER.INFO.{s}.{c}" for s, c in consumers]
        return out

    def _refused(self, violation: PermissionViolationError) -> None:
        """A publish or subscription the server's permissions refused."""
        if self._state == "starting":
            self._violations.append(violation)
        failed = 0
        if self._publisher is not None and violation.operation == "publish":
            failed = self._publisher.refuse(violation.subject, violation)
        key = f"{violation.operation} {violation.subject.lower()}"
        first = key not in self._reported
        self._reported.add(key)
        # Once at error level per subject: a refused fetch is asked again every second.
        logger.log(
            logging.ERROR if first else logging.DEBUG,
            "%s%s",
            violation,
            f" ({failed} publishes failed)" if failed else "",
            extra=log_fields(subject=violation.subject),
        )

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
            PayloadValidationError: Not an EventPayload, `data` not a JSON object or not
                JSON, or failing the topic's schema.
            PayloadTooLargeError: Larger than the server's max_payload or the stream's
                max_msg_size.
            SetupError: Wrong count of `tokens`.
            BusClosedError: The bus is not started.
        """
        _target, subject, body, headers = self.binding.prepare(
            topic, payload, tokens if type(tokens) is tuple else tokens_argument(tokens)
        )
        publisher = self._require_started()
        p = publisher.send_nowait(topic, subject, body, headers)
        if p is None:
            p = await publisher.send(topic, subject, body, headers, checked=True)
        assert p.future is not None  # made without a batch
        return await p.future

    async def publish_many(
        self, topic: str, payloads: Iterable[EventPayload], *, tokens: Sequence[str] = ()
    ) -> list[bool]:
        """Publish many events of one topic, pipelined; one result per payload, in order.

        Every payload is checked before the first is sent: a refusal sends nothing.
        """
        tok = tokens_argument(tokens)
        prepared = [self.binding.prepare(topic, p, tok) for p in payloads]
        publisher = self._require_started()
        batch = PublishBatch(asyncio.get_running_loop(), len(prepared))
        send_nowait = publisher.send_nowait
        for i, (_t, s, b, h) in enumerate(prepared):
            if send_nowait(topic, s, b, h, batch, i) is None:
                await publisher.send(topic, s, b, h, checked=True, batch=batch, index=i)
            if not (i + 1) % _PUSH_EVERY:
                # on the wire now, so the server stores these while the rest is buffered
                # (this loop yields only when the window is full: thousands of messages)
                publisher.push()
        return await batch.future

    async def publish_raw(
        self, label: str, subject: str, body: bytes, headers: dict[str, str]
    ) -> bool:
        """Publish bytes as they are (dead letters): retries as `publish`, no checks."""
        publisher = self._require_started()
        hdr, sendable = received_header_block(headers)
        p = await publisher.send(label, subject, body, sendable, hdr=hdr)
        assert p.future is not None  # made without a batch
        return await p.future

    # -- consuming
    async def subscribe(self, topic: str, handler: Handler | ContextHandler) -> None:
        """Handle `topic` through the durable consumer the topology declares for this service.

        `handler(topic, payload)` (or `handler(topic, payload, delivery)`, see `Delivery`)
        returning means done (ack); raising means retry (NAK with the consumer's backoff)
        until the last allowed delivery, which goes to the dead letters. A consumer is read
        once every one of its topics has a handler: subscribe them all before `start()`
        (which refuses a consumer with some missing), or one after another after it.

        Raises:
            TopicNotDeclaredError: The topic is unknown, or no consumer of this service takes it.
            SetupError: The handler is not an async function of (topic, payload[, delivery]),
                the topic has a handler already, or the consumer is not ack explicit.
            BusClosedError: The bus is stopping or stopped.
        """
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
        runner = self._runners.get(consumer.name)
        if runner is None:
            runner = ConsumerRunner(self, consumer)
            self._runners[consumer.name] = runner
        runner.add_handler(topic, handler, arity == 3)
        missing = runner.missing_topics()
        if missing:
            logger.info("%s", incomplete_consumer_text(runner.consumer.name, missing))
        elif self._state == "started" and not runner.started and self.nc is not None:
            await runner.start(self.nc)
        logger.info(
            "subscribed to %s through consumer %s of stream %s",
            topic,
            consumer.name,
            consumer.stream,
            extra=log_fields(topic=topic, consumer=consumer.name, stream=consumer.stream),
        )

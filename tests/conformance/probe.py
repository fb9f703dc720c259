"""Probe what a real JetStream server does with one stream or consumer config change.

This module is the measuring instrument of the conformance suite. It talks to a live
nats-server through the raw JetStream JSON API (`$JS.API.*` requests over nats-py), never
through bus_runtime, so what it records is the server's behaviour and not natstopo's idea
of it. One *case* describes a stream (or a consumer) before a change, the messages stored
and acknowledged before it, and the one field that changes. The probe:

1. creates the stream (and its consumers) from a minimal config plus the case's values,
2. publishes messages (old ones first, waiting so that each batch has its age at the time
   of the change) and lets each consumer fetch and acknowledge as the case says,
3. reads the server's own config (STREAM.INFO / CONSUMER.INFO), changes or removes only
   the case's field in it and sends it back, exactly as a reconciler updates an asset,
4. waits until the stream's state settles and records what happened: accepted or refused
   (with the server's error code and text), the field's value right after create and
   after the update, which stored sequences were lost, and every consumer's position.

Subjects in a case are relative: the probe prefixes every subject (stream `subjects`,
consumer `filter_subject(s)`, published subjects) with a token unique to the run, so cases
can run side by side on one server. Durations are nanoseconds and sizes bytes, as the API
takes them. Values the server leaves out of its config (it omits empty fields) are
reported as None.

Typical use::

    obs = await observe_stream_change("nats://127.0.0.1:4222", StreamCase(
        name="max_msgs-lower-below", field="max_msgs",
        before={"max_msgs": 10}, after=3, messages=(Batch("a", 8),)))
    assert obs.accepted and obs.lost_sequences == [1, 2, 3, 4, 5]
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as _field
from typing import Any, Final, Literal

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

NS: Final = 1_000_000_000
"""One second in nanoseconds (the API's duration unit)."""

API: Final = "$JS.API"
NO_MESSAGE_FOUND: Final = 10037
TEMPORARILY_UNAVAILABLE: Final = 10008

STREAM_API_KEYS: Final[Mapping[str, str]] = {
    "description": "description",
    "retention": "retention",
    "storage": "storage",
    "replicas": "num_replicas",
    "max_age": "max_age",
    "max_bytes": "max_bytes",
    "max_msgs": "max_msgs",
    "max_msgs_per_subject": "max_msgs_per_subject",
    "max_msg_size": "max_msg_size",
    "max_consumers": "max_consumers",
    "discard": "discard",
    "discard_new_per_subject": "discard_new_per_subject",
    "duplicate_window": "duplicate_window",
    "compression": "compression",
    "allow_rollup_hdrs": "allow_rollup_hdrs",
    "deny_delete": "deny_delete",
    "deny_purge": "deny_purge",
    "allow_direct": "allow_direct",
    "allow_msg_ttl": "allow_msg_ttl",
    "subject_delete_marker_ttl": "subject_delete_marker_ttl",
    "allow_batched": "allow_batched",
    "metadata": "metadata",
    "subjects": "subjects",
}
"""Topology field name -> stream config key. Names not listed map to themselves."""

CONSUMER_API_KEYS: Final[Mapping[str, str]] = {
    "description": "description",
    "ack_policy": "ack_policy",
    "ack_wait": "ack_wait",
    "max_deliver": "max_deliver",
    "backoff": "backoff",
    "max_ack_pending": "max_ack_pending",
    "deliver_policy": "deliver_policy",
    "opt_start_seq": "opt_start_seq",
    "replay_policy": "replay_policy",
    "max_waiting": "max_waiting",
    "max_request_batch": "max_batch",
    "max_request_expires": "max_expires",
    "replicas": "num_replicas",
    "mem_storage": "mem_storage",
    "headers_only": "headers_only",
    "metadata": "metadata",
    "filter_subject": "filter_subject",
    "filter_subjects": "filter_subjects",
}
"""Topology field name -> consumer config key. Names not listed map to themselves."""

_SUBJECT_KEYS: Final = frozenset({"subjects", "filter_subject", "filter_subjects"})
_SLUG_RE: Final = re.compile(r"[^A-Za-z0-9_-]+")


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
"""As a change's value: the key is removed from the config sent (not set to a default)."""

Unset = Literal[_Unset.UNSET]
JsonDict = dict[str, Any]
Restart = Callable[[], Awaitable[None]]
"""Restarts the server(s) a probe talks to, keeping their stores (e.g. the harness's)."""


# --------------------------------------------------------------------------- case types


@dataclass(frozen=True)
class Batch:
    """Messages published before the change.

    Attributes:
        subject: Relative subject (the probe adds the run's prefix), e.g. `"a"`.
        count: How many messages.
        size: Payload bytes of each message.
        age: Seconds each message is at least old when the update is sent: older batches
            are published first and the probe sleeps in between.
    """

    subject: str = "a"
    count: int = 1
    size: int = 16
    age: float = 0.0


@dataclass(frozen=True)
class ConsumerSetup:
    """A durable pull consumer that exists before the change, and how far it got.

    Attributes:
        name: Durable name.
        config: Consumer config keys beyond `durable_name` (default: `ack_policy` explicit);
            `filter_subject(s)` are relative.
        ack: How many of the delivered messages are acknowledged (the first ones).
        deliver: How many messages it fetches before the change (default: `ack`); the
            fetched but not acknowledged ones stay pending.
    """

    name: str
    config: Mapping[str, Any] = _field(default_factory=dict)
    ack: int = 0
    deliver: int | None = None

    @property
    def fetch(self) -> int:
        """How many messages are fetched (at least the acknowledged ones)."""
        return max(self.ack, self.deliver or 0)


@dataclass(frozen=True)
class StreamCase:
    """One change of one stream field, on a stream with stored messages.

    Attributes:
        name: Unique, short, used in the stream's name (`field-what`).
        field: The topology's field name (`replicas`, not `num_replicas`).
        before: Stream config keys (API names) over the minimal config
            `{"subjects": [">"]}`; subjects are relative.
        after: The field's new value in API units, or `UNSET` (the key is removed).
        extra: Other keys changed in the same update (API names), values or `UNSET`.
        messages: What is stored before the change.
        consumers: Consumers that exist before the change (interest and work-queue
            streams), created before the messages are published.
        cluster: Run on a 3-node cluster instead of a single server.
        label: What the change is, for tables (`lower below stored`).
        reverse_of: The name of the case doing the opposite change (one-way detection).
        settle: Least seconds to watch the stream after the update.
        watch: Other config keys whose values before and after a table should show
            (e.g. `duplicate_window` when `max_age` changes).
        publish_after: Messages published once the update settled, to see whether a
            limit takes effect only on the next publish (or refuses it).
        restart: Restart the server after the update and look again (only when the
            caller passes a `restart` function; such cases must run alone).
    """

    name: str
    field: str
    after: Any
    before: Mapping[str, Any] = _field(default_factory=dict)
    extra: Mapping[str, Any] = _field(default_factory=dict)
    messages: tuple[Batch, ...] = (Batch("a", 5),)
    consumers: tuple[ConsumerSetup, ...] = ()
    cluster: bool = False
    label: str = ""
    reverse_of: str | None = None
    settle: float = 0.3
    watch: tuple[str, ...] = ()
    publish_after: tuple[Batch, ...] = ()
    restart: bool = False

    @property
    def api_key(self) -> str:
        """The stream config key of `field`."""
        return STREAM_API_KEYS.get(self.field, self.field)


@dataclass(frozen=True)
class ConsumerCase:
    """One change of one consumer field, on a consumer that has delivered and acked.

    Attributes:
        name: Unique, short (`field-what`).
        field: The topology's field name (`max_request_batch`, not `max_batch`).
        after: The field's new value in API units, or `UNSET` (the key is removed).
        before: Consumer config keys over `{"durable_name": ..., "ack_policy": "explicit"}`;
            `filter_subject(s)` are relative.
        extra: Other consumer keys changed in the same update, values or `UNSET`.
        stream: Stream config keys over `{"subjects": [">"]}`.
        messages: What is stored before the consumer fetches.
        deliver: How many messages the consumer fetches before the change.
        ack: How many of those it acknowledges (the first ones).
        others: Other consumers of the stream (created first, same rules as streams').
        sample_delivery: Fetch one message after the update and record what arrives
            (payload size, headers), e.g. to see whether `headers_only` took effect.
        cluster: Run on a 3-node cluster.
        label: What the change is, for tables.
        reverse_of: The name of the case doing the opposite change.
        settle: Least seconds to watch after the update.
        watch: Other consumer config keys whose values before and after a table should
            show (e.g. `ack_wait` when `backoff` changes).
        restart: Restart the server after the update and look again (only when the
            caller passes a `restart` function; such cases must run alone).
    """

    name: str
    field: str
    after: Any
    before: Mapping[str, Any] = _field(default_factory=dict)
    extra: Mapping[str, Any] = _field(default_factory=dict)
    stream: Mapping[str, Any] = _field(default_factory=dict)
    messages: tuple[Batch, ...] = (Batch("a", 10),)
    deliver: int = 4
    ack: int = 2
    others: tuple[ConsumerSetup, ...] = ()
    sample_delivery: bool = False
    cluster: bool = False
    label: str = ""
    reverse_of: str | None = None
    settle: float = 0.3
    watch: tuple[str, ...] = ()
    restart: bool = False

    @property
    def api_key(self) -> str:
        """The consumer config key of `field`."""
        return CONSUMER_API_KEYS.get(self.field, self.field)


@dataclass(frozen=True)
class CreateCase:
    """What the server stores when an asset is created with given values.

    Attributes:
        name: Unique, short.
        kind: `"stream"` or `"consumer"`.
        config: The stream config (kind stream) or the consumer config (kind consumer)
            over the minimal one; subjects relative.
        fields: Config keys whose stored values are reported.
        stream: For consumers: the stream's config over the minimal one.
        label: What is created, for tables.
        cluster: Run on a 3-node cluster.
    """

    name: str
    kind: Literal["stream", "consumer"]
    config: Mapping[str, Any]
    fields: tuple[str, ...]
    stream: Mapping[str, Any] = _field(default_factory=dict)
    label: str = ""
    cluster: bool = False


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class ApiError:
    """An error answered by the JetStream API.

    Attributes:
        code: The HTTP-like status (`400`, `500`).
        err_code: The server's JetStream error code (`10052`).
        description: The server's text.
    """

    code: int
    err_code: int
    description: str

    def __str__(self) -> str:
        return f"{self.description} (err_code {self.err_code})"


class ApiRefusal(Exception):
    """A JetStream API request answered with an error."""

    def __init__(self, subject: str, error: ApiError) -> None:
        super().__init__(f"{subject}: {error}")
        self.error = error


@dataclass(frozen=True)
class ConsumerPosition:
    """A consumer's delivery state as CONSUMER.INFO reports it.

    Attributes:
        delivered_stream_seq: Last delivered stream sequence.
        delivered_consumer_seq: Deliveries so far (consumer sequence).
        ack_floor_stream_seq: Stream sequence below which everything is acknowledged.
        ack_floor_consumer_seq: Consumer sequence of the ack floor.
        num_pending: Messages not yet delivered.
        num_ack_pending: Delivered, not yet acknowledged.
        num_redelivered: Messages delivered more than once.
        num_waiting: Pull requests waiting.
        created: The consumer's creation timestamp (changes if it is recreated).
    """

    delivered_stream_seq: int
    delivered_consumer_seq: int
    ack_floor_stream_seq: int
    ack_floor_consumer_seq: int
    num_pending: int
    num_ack_pending: int
    num_redelivered: int
    num_waiting: int
    created: str

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ConsumerPosition:
        """Read a position from a CONSUMER.INFO response."""
        delivered = info.get("delivered") or {}
        floor = info.get("ack_floor") or {}
        return cls(
            delivered_stream_seq=int(delivered.get("stream_seq", 0)),
            delivered_consumer_seq=int(delivered.get("consumer_seq", 0)),
            ack_floor_stream_seq=int(floor.get("stream_seq", 0)),
            ack_floor_consumer_seq=int(floor.get("consumer_seq", 0)),
            num_pending=int(info.get("num_pending", 0)),
            num_ack_pending=int(info.get("num_ack_pending", 0)),
            num_redelivered=int(info.get("num_redelivered", 0)),
            num_waiting=int(info.get("num_waiting", 0)),
            created=str(info.get("created", "")),
        )

    def summary(self) -> str:
        """`delivered 4, ack floor 2, pending 6, ack pending 2`."""
        return (
            f"delivered {self.delivered_stream_seq}, ack floor {self.ack_floor_stream_seq}, "
            f"pending {self.num_pending}, ack pending {self.num_ack_pending}"
        )


@dataclass(frozen=True)
class DeliverySample:
    """What one fetch after the update delivered.

    Attributes:
        delivered: Whether a message arrived within the wait.
        payload_bytes: Its payload size.
        headers: Its headers (`Nats-Msg-Size` marks a headers-only delivery).
        stream_seq: Its stream sequence (from the ack subject).
        num_delivered: How often it has been delivered (from the ack subject).
    """

    delivered: bool
    payload_bytes: int = 0
    headers: Mapping[str, str] = _field(default_factory=dict)
    stream_seq: int = 0
    num_delivered: int = 0


@dataclass
class Observation:
    """What the server did with one change (stream or consumer).

    Attributes:
        case: The case's name.
        kind: `"stream"` or `"consumer"`.
        field: The case's topology field name.
        api_key: Its config key.
        server_version: The version the server reports (`2.10.26`).
        created: Whether the *before* state could be set up (create, consumers).
        create_error: The server's refusal of the setup, if any.
        accepted: Whether the update was accepted.
        error: The server's refusal of the update, if any.
        value_sent: The field's value in the update (`UNSET` when the key was removed).
        value_created: The field as the server reported it right after create (None:
            absent from the server's config); subjects relative, the stream's own name
            as `<name>`.
        value_after: The field as the server reports it after the update.
        config_created: The server's config right after create (what the update started
            from).
        config_sent: The config sent as the update.
        config_after: The server's config after the update.
        messages_before: Stored messages when the update was sent.
        messages_after: Stored messages once the state settled after the update.
        published_sequences: Sequences the server acknowledged when the case published
            (an interest stream without consumers acknowledges and does not keep them).
        sequences_before: Those still stored when the update was sent.
        lost_sequences: Those of `sequences_before` no longer stored after it.
        positions_before: Each consumer's position when the update was sent.
        positions_after: Each consumer's position after it (absent: consumer gone).
        subject_consumer: For consumer cases, the consumer under change.
        delivery_after: For consumer cases with `sample_delivery`, one fetch after.
        publish_errors: Publishes the server refused during setup.
        settle_seconds: How long the probe watched the stream after the update.
        publish_after_errors: Refusals of the case's `publish_after` messages.
        lost_after_publish: Sequences of `sequences_before` gone only after the
            `publish_after` messages (a limit enforced on the next publish).
        messages_after_publish: Stored messages after `publish_after` (None: not done).
        restarted: Whether the server was restarted after the update.
        after_restart_error: The server's answer to STREAM.INFO (stream cases) or
            CONSUMER.INFO (consumer cases) after the restart, if an error (the asset
            did not come back).
        value_after_restart: The field as the server reports it after the restart.
        messages_after_restart: Stored messages after the restart.
        positions_after_restart: Consumer positions after the restart.
        probe_error: A failure of the probe itself (timeout, ...), not of the server.
    """

    case: str
    kind: Literal["stream", "consumer"]
    field: str
    api_key: str
    server_version: str = ""
    created: bool = False
    create_error: ApiError | None = None
    accepted: bool = False
    error: ApiError | None = None
    value_sent: Any = None
    value_created: Any = None
    value_after: Any = None
    config_created: JsonDict = _field(default_factory=dict)
    config_sent: JsonDict = _field(default_factory=dict)
    config_after: JsonDict = _field(default_factory=dict)
    messages_before: int = 0
    messages_after: int = 0
    published_sequences: list[int] = _field(default_factory=list)
    sequences_before: list[int] = _field(default_factory=list)
    lost_sequences: list[int] = _field(default_factory=list)
    positions_before: dict[str, ConsumerPosition] = _field(default_factory=dict)
    positions_after: dict[str, ConsumerPosition] = _field(default_factory=dict)
    subject_consumer: str | None = None
    delivery_after: DeliverySample | None = None
    publish_errors: list[str] = _field(default_factory=list)
    settle_seconds: float = 0.0
    publish_after_errors: list[str] = _field(default_factory=list)
    lost_after_publish: list[int] = _field(default_factory=list)
    messages_after_publish: int | None = None
    restarted: bool = False
    after_restart_error: ApiError | None = None
    value_after_restart: Any = None
    messages_after_restart: int | None = None
    positions_after_restart: dict[str, ConsumerPosition] = _field(default_factory=dict)
    probe_error: str | None = None

    @property
    def error_code(self) -> int | None:
        """The err_code of the update's refusal (None when accepted)."""
        return self.error.err_code if self.error else None

    @property
    def lost(self) -> int:
        """How many stored messages the update cost."""
        return len(self.lost_sequences)

    @property
    def recreated(self) -> bool:
        """Whether a consumer's creation time changed (it was recreated by the update)."""
        name = self.subject_consumer
        if not name or name not in self.positions_before or name not in self.positions_after:
            return False
        return self.positions_before[name].created != self.positions_after[name].created

    @property
    def position_lost(self) -> bool:
        """Whether the changed consumer went back or vanished (its delivery position)."""
        name = self.subject_consumer
        if not name or not self.accepted:
            return False
        before = self.positions_before.get(name)
        after = self.positions_after.get(name)
        if before is None:
            return False
        if after is None or self.recreated:
            return True
        return (
            after.delivered_stream_seq < before.delivered_stream_seq
            or after.ack_floor_stream_seq < before.ack_floor_stream_seq
            or after.delivered_consumer_seq < before.delivered_consumer_seq
        )

    def to_dict(self) -> JsonDict:
        """A JSON-ready dict (`UNSET` written as the string "UNSET")."""
        out = asdict(self)
        out["value_sent"] = _json_ready(self.value_sent)
        out["error_code"] = self.error_code
        out["lost"] = self.lost
        out["position_lost"] = self.position_lost
        out["recreated"] = self.recreated
        return _json_ready(out)  # type: ignore[no-any-return]


@dataclass
class CreateObservation:
    """What the server stored for a created asset.

    Attributes:
        case: The case's name.
        kind: `"stream"` or `"consumer"`.
        server_version: The version the server reports.
        accepted: Whether the create was accepted.
        error: The refusal, if any.
        config_sent: The config sent.
        config_stored: The server's config after create.
        values: For each reported key, the stored value (None: absent).
        probe_error: A failure of the probe itself.
    """

    case: str
    kind: Literal["stream", "consumer"]
    server_version: str = ""
    accepted: bool = False
    error: ApiError | None = None
    config_sent: JsonDict = _field(default_factory=dict)
    config_stored: JsonDict = _field(default_factory=dict)
    values: JsonDict = _field(default_factory=dict)
    probe_error: str | None = None

    def to_dict(self) -> JsonDict:
        """A JSON-ready dict."""
        return _json_ready(asdict(self))  # type: ignore[no-any-return]


def _json_ready(value: Any) -> Any:
    if value is UNSET:
        return "UNSET"
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


# --------------------------------------------------------------------------- the API


class Api:
    """JetStream API requests over one connection, errors decoded into `ApiRefusal`.

    Args:
        nc: A connected nats-py client.
        timeout: Seconds to wait for each answer.
    """

    def __init__(self, nc: Client, timeout: float = 10.0) -> None:
        self.nc = nc
        self.timeout = timeout

    @property
    def server_version(self) -> str:
        """The connected server's version string."""
        v = self.nc.connected_server_version
        return f"{v.major}.{v.minor}.{v.patch}"

    async def call(self, subject: str, body: Mapping[str, Any] | None = None) -> JsonDict:
        """The decoded answer of `$JS.API.<subject>`.

        Retries a timeout or "temporarily unavailable" (a cluster electing a leader) a few
        times; creates and updates with the same config are idempotent.

        Args:
            subject: The API subject after `$JS.API.`.
            body: The JSON request (None: empty payload).

        Returns:
            The answer's JSON object.

        Raises:
            ApiRefusal: The server answered an error.
            TimeoutError: No answer after the retries.
        """
        payload = json.dumps(body).encode() if body is not None else b""
        full = f"{API}.{subject}"
        for attempt in range(4):
            last = attempt == 3
            try:
                msg = await self.nc.request(full, payload, timeout=self.timeout)
            except (TimeoutError, NoRespondersError):
                if last:
                    raise
                await asyncio.sleep(0.3 * 2**attempt)
                continue
            data: JsonDict = json.loads(msg.data) if msg.data else {}
            err = data.get("error")
            if not isinstance(err, dict):
                return data
            error = ApiError(
                int(err.get("code", 0)), int(err.get("err_code", 0)), str(err.get("description"))
            )
            if error.err_code == TEMPORARILY_UNAVAILABLE and not last:
                await asyncio.sleep(0.3 * 2**attempt)
                continue
            raise ApiRefusal(full, error)
        raise AssertionError("unreachable")

    async def stream_info(self, name: str) -> JsonDict:
        """STREAM.INFO of `name`."""
        return await self.call(f"STREAM.INFO.{name}")

    async def consumer_info(self, stream: str, name: str) -> JsonDict:
        """CONSUMER.INFO of `stream`/`name`."""
        return await self.call(f"CONSUMER.INFO.{stream}.{name}")

    async def create_consumer(self, stream: str, config: Mapping[str, Any]) -> JsonDict:
        """CONSUMER.CREATE of a durable (also the update, as a reconciler sends it)."""
        name = str(config["durable_name"])
        return await self.call(
            f"CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": dict(config)}
        )

    async def delete_stream(self, name: str) -> None:
        """Delete a stream, ignoring every failure (cleanup)."""
        with contextlib.suppress(ApiRefusal, TimeoutError, nats.errors.Error):
            await self.call(f"STREAM.DELETE.{name}")

    async def present(self, stream: str, seqs: Sequence[int]) -> list[int]:
        """Those of `seqs` still stored in `stream` (STREAM.MSG.GET each)."""

        async def one(seq: int) -> int | None:
            try:
                await self.call(f"STREAM.MSG.GET.{stream}", {"seq": seq})
            except ApiRefusal as exc:
                if exc.error.err_code == NO_MESSAGE_FOUND:
                    return None
                raise
            return seq

        found = await asyncio.gather(*(one(s) for s in seqs))
        return [s for s in found if s is not None]

    async def publish(self, subject: str, payload: bytes) -> int:
        """Publish to a stream and return the stored sequence.

        Raises:
            ApiRefusal: The stream refused the message (its PubAck error).
            NoRespondersError: No stream takes the subject.
        """
        msg = await self.nc.request(subject, payload, timeout=self.timeout)
        data: JsonDict = json.loads(msg.data) if msg.data else {}
        err = data.get("error")
        if isinstance(err, dict):
            raise ApiRefusal(
                subject,
                ApiError(
                    int(err.get("code", 0)),
                    int(err.get("err_code", 0)),
                    str(err.get("description")),
                ),
            )
        return int(data["seq"])

    async def fetch(
        self, stream: str, consumer: str, batch: int, expires: float = 1.0
    ) -> list[Msg]:
        """Pull up to `batch` messages (raw CONSUMER.MSG.NEXT); status replies end it."""
        if batch <= 0:
            return []
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        out: list[Msg] = []
        try:
            body = {"batch": batch, "expires": int(expires * NS)}
            await self.nc.publish(
                f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                json.dumps(body).encode(),
                reply=inbox,
            )
            deadline = time.monotonic() + expires + 1.0
            while len(out) < batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    m = await sub.next_msg(timeout=left)
                except TimeoutError:
                    break
                if m.headers and "Status" in m.headers and not m.reply:
                    break
                out.append(m)
        finally:
            await sub.unsubscribe()
        return out

    async def ack(self, msg: Msg) -> None:
        """Acknowledge a delivered message and wait for the server's confirmation."""
        await self.nc.request(msg.reply, b"+ACK", timeout=self.timeout)


async def _connect(url: str) -> Client:
    nc = await nats.connect(
        servers=[u.strip() for u in url.split(",") if u.strip()],
        connect_timeout=5,
        max_reconnect_attempts=3,
        allow_reconnect=True,
    )
    return nc


@contextlib.asynccontextmanager
async def _api(url: str | Client) -> AsyncIterator[Api]:
    if isinstance(url, Client):
        yield Api(url)
        return
    nc = await _connect(url)
    try:
        yield Api(nc)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()


# --------------------------------------------------------------------------- helpers


def _names(case_name: str) -> tuple[str, str]:
    slug = _SLUG_RE.sub("_", case_name)[:60]
    tag = uuid.uuid4().hex[:6]
    stream = f"CF_{slug}_{tag}"
    return stream, stream.lower()


def _subj(prefix: str, rel: str) -> str:
    return f"{prefix}.{rel}"


def _abs_value(key: str, value: Any, prefix: str) -> Any:
    if value is UNSET or key not in _SUBJECT_KEYS:
        return value
    if isinstance(value, str):
        return _subj(prefix, value)
    if isinstance(value, list | tuple):
        return [_subj(prefix, str(v)) for v in value]
    return value


def _rel_value(key: str, value: Any, prefix: str) -> Any:
    """A subject-valued key without the run's prefix; the stream's own name as `<name>`."""
    if key not in _SUBJECT_KEYS:
        return value
    cut = prefix + "."

    def one(s: Any) -> Any:
        if isinstance(s, str) and s.lower() == prefix:
            return "<name>"
        return s[len(cut) :] if isinstance(s, str) and s.startswith(cut) else s

    if isinstance(value, list):
        return [one(v) for v in value]
    return one(value)


def _abs_config(cfg: Mapping[str, Any], prefix: str) -> JsonDict:
    return {k: _abs_value(k, v, prefix) for k, v in cfg.items() if v is not UNSET}


def _apply(cfg: JsonDict, key: str, value: Any, prefix: str) -> None:
    if value is UNSET:
        cfg.pop(key, None)
    else:
        cfg[key] = copy.deepcopy(_abs_value(key, value, prefix))


def _stream_config(name: str, prefix: str, overrides: Mapping[str, Any]) -> JsonDict:
    cfg: JsonDict = {"name": name, "subjects": [">"]}
    cfg.update(overrides)
    return {"name": name, **_abs_config({k: v for k, v in cfg.items() if k != "name"}, prefix)}


def _consumer_config(name: str, prefix: str, overrides: Mapping[str, Any]) -> JsonDict:
    cfg: JsonDict = {"ack_policy": "explicit"}
    cfg.update(overrides)
    return {"durable_name": name, **_abs_config(cfg, prefix)}


async def _publish(api: Api, prefix: str, batches: Sequence[Batch], errors: list[str]) -> list[int]:
    """Publish the batches, oldest first, so each has its age when this returns."""
    seqs: list[int] = []
    order = sorted(batches, key=lambda b: -b.age)
    start = time.monotonic()
    oldest = order[0].age if order else 0.0
    for b in order:
        # Batch b must be published `oldest - b.age` seconds after the first one.
        wait = (oldest - b.age) - (time.monotonic() - start)
        if wait > 0:
            await asyncio.sleep(wait)
        for _ in range(b.count):
            try:
                seqs.append(await api.publish(_subj(prefix, b.subject), b"x" * b.size))
            except ApiRefusal as exc:
                errors.append(f"{b.subject}: {exc.error}")
            except NoRespondersError:
                errors.append(f"{b.subject}: no stream takes the subject (no responders)")
    # The update follows when the oldest batch has its age (the youngest then has its own).
    wait = oldest - (time.monotonic() - start)
    if wait > 0:
        await asyncio.sleep(wait)
    return seqs


async def _consume(api: Api, stream: str, name: str, fetch: int, ack: int) -> None:
    msgs = await api.fetch(stream, name, fetch)
    for m in msgs[:ack]:
        await api.ack(m)


async def _positions(api: Api, stream: str, names: Sequence[str]) -> dict[str, ConsumerPosition]:
    out: dict[str, ConsumerPosition] = {}
    for n in names:
        try:
            out[n] = ConsumerPosition.from_info(await api.consumer_info(stream, n))
        except ApiRefusal:
            continue
    return out


def _state_key(info: Mapping[str, Any]) -> tuple[int, int, int]:
    st = info.get("state") or {}
    return int(st.get("messages", 0)), int(st.get("first_seq", 0)), int(st.get("last_seq", 0))


def _cluster_ready(info: Mapping[str, Any]) -> bool:
    want = int((info.get("config") or {}).get("num_replicas", 1) or 1)
    cl = info.get("cluster") or {}
    if want <= 1:
        return True
    reps = cl.get("replicas") or []
    return bool(cl.get("leader")) and len(reps) == want - 1 and all(r.get("current") for r in reps)


async def _settle(api: Api, stream: str, least: float, cluster: bool) -> tuple[JsonDict, float]:
    """Watch STREAM.INFO until the state stops changing (and replicas are current)."""
    start = time.monotonic()
    cap = max(least, 20.0 if cluster else 2.5)
    last: tuple[int, int, int] | None = None
    stable = 0
    info: JsonDict = {}
    while True:
        info = await api.stream_info(stream)
        key = _state_key(info)
        stable = stable + 1 if key == last else 0
        last = key
        elapsed = time.monotonic() - start
        ready = not cluster or _cluster_ready(info)
        if (elapsed >= least and stable >= 2 and ready) or elapsed >= cap:
            return info, elapsed
        await asyncio.sleep(0.15)


async def _wait_stream_ready(api: Api, stream: str, cluster: bool) -> JsonDict:
    info = await api.stream_info(stream)
    if not cluster:
        return info
    deadline = time.monotonic() + 20.0
    while not _cluster_ready(info) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        info = await api.stream_info(stream)
    return info


async def _setup_stream(
    api: Api,
    obs: Observation,
    name: str,
    prefix: str,
    config: JsonDict,
    consumers: Sequence[ConsumerSetup],
    messages: Sequence[Batch],
    cluster: bool,
) -> bool:
    try:
        await api.call(f"STREAM.CREATE.{name}", config)
        await _wait_stream_ready(api, name, cluster)
        for c in consumers:
            await api.create_consumer(name, _consumer_config(c.name, prefix, c.config))
    except ApiRefusal as exc:
        obs.create_error = exc.error
        return False
    seqs = await _publish(api, prefix, messages, obs.publish_errors)
    for c in consumers:
        await _consume(api, name, c.name, c.fetch, c.ack)
    obs.published_sequences = seqs
    if cluster or any(c.ack for c in consumers):
        # Acks remove messages of interest and work-queue streams a moment later (and a
        # cluster replicates them): the *before* state is the settled one.
        await _settle(api, name, 0.0, cluster)
        if cluster:
            await _consumers_ready(api, name, [c.name for c in consumers])
    return True


def _consumer_ready(info: Mapping[str, Any]) -> bool:
    cl = info.get("cluster")
    if not isinstance(cl, dict):
        return True
    reps = cl.get("replicas") or []
    return bool(cl.get("leader")) and all(r.get("current") for r in reps)


async def _consumers_ready(api: Api, stream: str, names: Sequence[str]) -> None:
    """Wait until each consumer has a leader, current replicas and a stable position.

    Right after a consumer's replicas change, CONSUMER.INFO can answer from a consumer
    without a leader; its position then is not the consumer's.
    """
    for n in names:
        last: ConsumerPosition | None = None
        for _ in range(100):  # up to about 15 s
            try:
                info = await api.consumer_info(stream, n)
            except ApiRefusal:
                break
            pos = ConsumerPosition.from_info(info)
            if _consumer_ready(info) and pos == last:
                break
            last = pos if _consumer_ready(info) else None
            await asyncio.sleep(0.15)


# --------------------------------------------------------------------------- observe


async def observe_stream_change(
    url: str | Client, case: StreamCase, *, restart: Restart | None = None
) -> Observation:
    """Set up the case's stream, send the change as a reconciler would, record the effect.

    The update is the server's own config (STREAM.INFO) with only `case.field` (and
    `case.extra`) changed or removed. The stream is deleted afterwards.

    Args:
        url: A server URL (several comma-separated for a cluster), or a connected client
            (reused, not closed).
        case: The change.
        restart: Restarts the server (awaited) for cases with `restart`; nothing else may
            run on that server meanwhile.

    Returns:
        The observation; `probe_error` is set if the probe itself failed.
    """
    key = case.api_key
    obs = Observation(case=case.name, kind="stream", field=case.field, api_key=key)
    obs.value_sent = case.after
    name, prefix = _names(case.name)
    async with _api(url) as api:
        obs.server_version = api.server_version
        try:
            config = _stream_config(name, prefix, case.before)
            if not await _setup_stream(
                api, obs, name, prefix, config, case.consumers, case.messages, case.cluster
            ):
                return obs
            obs.created = True
            await _observe_stream_update(api, obs, case, name, prefix)
            if case.publish_after:
                await _publish_after(api, obs, case, name, prefix)
            if case.restart and restart is not None and obs.accepted:
                await _restart(api, obs, restart, name, [c.name for c in case.consumers], None)
        except (ApiRefusal, TimeoutError, nats.errors.Error, KeyError, ValueError) as exc:
            obs.probe_error = f"{type(exc).__name__}: {exc}"
        finally:
            await api.delete_stream(name)
    return obs


async def _observe_stream_update(
    api: Api, obs: Observation, case: StreamCase, name: str, prefix: str
) -> None:
    key = case.api_key
    consumers = [c.name for c in case.consumers]
    info = await api.stream_info(name)
    obs.config_created = info["config"]
    obs.value_created = _rel_value(key, info["config"].get(key), prefix)
    obs.sequences_before = await api.present(name, obs.published_sequences)
    obs.messages_before = _state_key(info)[0]
    obs.positions_before = await _positions(api, name, consumers)
    sent = copy.deepcopy(info["config"])
    _apply(sent, key, case.after, prefix)
    for k, v in case.extra.items():
        _apply(sent, k, v, prefix)
    obs.config_sent = sent
    try:
        await api.call(f"STREAM.UPDATE.{name}", sent)
        obs.accepted = True
    except ApiRefusal as exc:
        obs.error = exc.error
    after, obs.settle_seconds = await _settle(api, name, case.settle, case.cluster and obs.accepted)
    obs.config_after = after["config"]
    obs.value_after = _rel_value(key, after["config"].get(key), prefix)
    obs.messages_after = _state_key(after)[0]
    still = await api.present(name, obs.sequences_before)
    obs.lost_sequences = sorted(set(obs.sequences_before) - set(still))
    if case.cluster:
        await _consumers_ready(api, name, consumers)
    obs.positions_after = await _positions(api, name, consumers)


async def observe_consumer_change(
    url: str | Client, case: ConsumerCase, *, restart: Restart | None = None
) -> Observation:
    """Set up the case's stream and consumer, update the consumer as a reconciler would.

    The consumer (durable `C`) fetches `case.deliver` messages and acknowledges the first
    `case.ack` before the change. The update is the server's own config (CONSUMER.INFO)
    with only `case.field` (and `case.extra`) changed or removed, sent to CONSUMER.CREATE
    like a reconciler does. The stream is deleted afterwards.

    Args:
        url: A server URL (several comma-separated for a cluster), or a connected client.
        case: The change.
        restart: Restarts the server (awaited) for cases with `restart`; nothing else may
            run on that server meanwhile.

    Returns:
        The observation: positions before and after (`position_lost`, `recreated`), the
        stream's messages, and, with `sample_delivery`, one delivery after the update.
    """
    key = case.api_key
    obs = Observation(case=case.name, kind="consumer", field=case.field, api_key=key)
    obs.value_sent = case.after
    obs.subject_consumer = "C"
    name, prefix = _names(case.name)
    async with _api(url) as api:
        obs.server_version = api.server_version
        try:
            config = _stream_config(name, prefix, case.stream)
            target = ConsumerSetup("C", case.before, ack=case.ack, deliver=case.deliver)
            consumers = (*case.others, target)
            if not await _setup_stream(
                api, obs, name, prefix, config, consumers, case.messages, case.cluster
            ):
                return obs
            obs.created = True
            await _observe_consumer_update(api, obs, case, name, prefix, consumers)
            if case.restart and restart is not None and obs.accepted:
                names = [c.name for c in consumers]
                await _restart(api, obs, restart, name, names, (case.api_key, prefix))
        except (ApiRefusal, TimeoutError, nats.errors.Error, KeyError, ValueError) as exc:
            obs.probe_error = f"{type(exc).__name__}: {exc}"
        finally:
            await api.delete_stream(name)
    return obs


async def _observe_consumer_update(
    api: Api,
    obs: Observation,
    case: ConsumerCase,
    name: str,
    prefix: str,
    consumers: Sequence[ConsumerSetup],
) -> None:
    key = case.api_key
    names = [c.name for c in consumers]
    sinfo = await api.stream_info(name)
    obs.messages_before = _state_key(sinfo)[0]
    obs.sequences_before = await api.present(name, obs.published_sequences)
    cinfo = await api.consumer_info(name, "C")
    obs.config_created = cinfo["config"]
    obs.value_created = _rel_value(key, cinfo["config"].get(key), prefix)
    obs.positions_before = await _positions(api, name, names)
    sent = copy.deepcopy(cinfo["config"])
    _apply(sent, key, case.after, prefix)
    for k, v in case.extra.items():
        _apply(sent, k, v, prefix)
    obs.config_sent = sent
    try:
        await api.create_consumer(name, sent)
        obs.accepted = True
    except ApiRefusal as exc:
        obs.error = exc.error
    after, obs.settle_seconds = await _settle(api, name, case.settle, False)
    obs.messages_after = _state_key(after)[0]
    still = await api.present(name, obs.sequences_before)
    obs.lost_sequences = sorted(set(obs.sequences_before) - set(still))
    if case.cluster:
        await _consumers_ready(api, name, names)
    with contextlib.suppress(ApiRefusal):
        cafter = await api.consumer_info(name, "C")
        obs.config_after = cafter["config"]
        obs.value_after = _rel_value(key, cafter["config"].get(key), prefix)
    obs.positions_after = await _positions(api, name, names)
    if case.sample_delivery:
        msgs = await api.fetch(name, "C", 1, expires=0.5)
        obs.delivery_after = _sample(msgs[0]) if msgs else DeliverySample(delivered=False)


async def _publish_after(
    api: Api, obs: Observation, case: StreamCase, name: str, prefix: str
) -> None:
    await _publish(api, prefix, case.publish_after, obs.publish_after_errors)
    info, _ = await _settle(api, name, 0.3, False)
    obs.messages_after_publish = _state_key(info)[0]
    still = await api.present(name, obs.sequences_before)
    gone = set(obs.sequences_before) - set(still) - set(obs.lost_sequences)
    obs.lost_after_publish = sorted(gone)


async def _restart(
    api: Api,
    obs: Observation,
    restart: Restart,
    name: str,
    consumers: Sequence[str],
    consumer_key: tuple[str, str] | None,
) -> None:
    """Restart the server, then read the stream (and consumers) again."""
    await restart()
    obs.restarted = True
    for _ in range(200):  # up to 20 s for the client to reconnect
        if api.nc.is_connected:
            break
        await asyncio.sleep(0.1)
    try:
        info = await api.stream_info(name)
    except ApiRefusal as exc:
        obs.after_restart_error = exc.error
        return
    obs.messages_after_restart = _state_key(info)[0]
    if consumer_key is None:
        obs.value_after_restart = _rel_value(
            obs.api_key, info["config"].get(obs.api_key), name.lower()
        )
    else:
        key, prefix = consumer_key
        try:
            cinfo = await api.consumer_info(name, "C")
            obs.value_after_restart = _rel_value(key, cinfo["config"].get(key), prefix)
        except ApiRefusal as exc:
            obs.after_restart_error = exc.error
    obs.positions_after_restart = await _positions(api, name, consumers)


def _sample(msg: Msg) -> DeliverySample:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (v1 form)
    parts = msg.reply.split(".")
    sseq = int(parts[5]) if len(parts) >= 9 and parts[5].isdigit() else 0
    delivered = int(parts[4]) if len(parts) >= 9 and parts[4].isdigit() else 0
    return DeliverySample(
        delivered=True,
        payload_bytes=len(msg.data),
        headers=dict(msg.headers or {}),
        stream_seq=sseq,
        num_delivered=delivered,
    )


async def observe_create(url: str | Client, case: CreateCase) -> CreateObservation:
    """Create an asset with the case's values and record what the server stores.

    Args:
        url: A server URL (several comma-separated for a cluster), or a connected client.
        case: What to create; for a consumer, its stream is created first.

    Returns:
        The stored config and the values of `case.fields` (None: absent).
    """
    obs = CreateObservation(case=case.name, kind=case.kind)
    name, prefix = _names(case.name)
    async with _api(url) as api:
        obs.server_version = api.server_version
        try:
            if case.kind == "stream":
                cfg = _stream_config(name, prefix, case.config)
                obs.config_sent = cfg
                try:
                    await api.call(f"STREAM.CREATE.{name}", cfg)
                except ApiRefusal as exc:
                    obs.error = exc.error
                    return obs
                stored = (await api.stream_info(name))["config"]
            else:
                await api.call(f"STREAM.CREATE.{name}", _stream_config(name, prefix, case.stream))
                await _wait_stream_ready(api, name, case.cluster)
                cfg = _consumer_config("C", prefix, case.config)
                obs.config_sent = cfg
                try:
                    await api.create_consumer(name, cfg)
                except ApiRefusal as exc:
                    obs.error = exc.error
                    return obs
                stored = (await api.consumer_info(name, "C"))["config"]
            obs.accepted = True
            obs.config_stored = stored
            obs.values = {k: _rel_value(k, stored.get(k), prefix) for k in case.fields}
        except (ApiRefusal, TimeoutError, nats.errors.Error, KeyError, ValueError) as exc:
            obs.probe_error = f"{type(exc).__name__}: {exc}"
        finally:
            await api.delete_stream(name)
    return obs

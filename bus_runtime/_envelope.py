"""The event envelope: what an event looks like on the wire, and what a service may send.

Every event is one JSON object (the envelope) carrying the source document's
`EventPayload` fields plus the event's identity:

    {"event_id": "01J...", "topic": "document.uploaded", "occurred_at": "2026-11-29T08:15:14.123Z",
     "actor": "svc-ingestion", "tenant_id": "t-1", "trace_id": "4bf9...", "data": {...}}

Headers: `Nats-Msg-Id` is the event_id (the server's duplicate window makes a retried
publish idempotent) and `traceparent` (W3C Trace Context) is set when a trace_id is present.

`ServiceBinding` is one service's view of the topology: which topics it may publish
(with their schema checks compiled once per topic) and which it consumes through which
declared consumer. Both buses (NATS and in-memory) refuse the same things through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from ._errors import InvalidEnvelopeError, PayloadValidationError, SetupError, TopicNotDeclaredError
from ._model import Consumer, Stream, Topic, Topology
from ._schema_check import Unsupported, compile_check

# The name this module has always exported for payloads.
compile_payload_check = compile_check

MSG_ID_HEADER = "Nats-Msg-Id"
TRACEPARENT_HEADER = "traceparent"
ENVELOPE_FIELDS = ("event_id", "topic", "occurred_at", "actor", "tenant_id", "trace_id", "data")

# -- ULID ------------------------------------------------------------------------------
# A ULID is 48 bits of milliseconds then 80 random bits, written as 26 Crockford base32
# characters (130 bits: two leading zero bits). Written here 10 bits (two characters) at a
# time from a 1,024-entry table; the 10 time characters are computed once per millisecond.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_DECODE = {c: i for i, c in enumerate(_CROCKFORD)}
_ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_ulid_ms: list[Any] = [-1, ""]
# The random part needs uniqueness, not secrecy: Mersenne Twister bits are ~30x cheaper
# than a urandom syscall per event, and the `random` module reseeds itself in a forked
# child (os.register_at_fork), so forked workers do not repeat each other's ids.
_randbits = random.getrandbits


def new_event_id() -> str:
    """A new ULID: sortable by creation time (ms), 80 random bits, Crockford base32."""
    ms = time.time_ns() // 1_000_000
    cache = _ulid_ms
    if cache[0] != ms:
        p = _PAIRS
        cache[1] = (
            p[ms >> 40]
            + p[(ms >> 30) & 1023]
            + p[(ms >> 20) & 1023]
            + p[(ms >> 10) & 1023]
            + p[ms & 1023]
        )
        cache[0] = ms
    r = _randbits(80)
    p = _PAIRS
    prefix: str = cache[1]
    return (
        prefix
        + p[r >> 70]
        + p[(r >> 60) & 1023]
        + p[(r >> 50) & 1023]
        + p[(r >> 40) & 1023]
        + p[(r >> 30) & 1023]
        + p[(r >> 20) & 1023]
        + p[(r >> 10) & 1023]
        + p[r & 1023]
    )


def ulid_time_ms(event_id: str) -> int:
    """The millisecond timestamp inside a ULID.

    Raises:
        ValueError: Not a ULID.
    """
    if not _ULID_RE.match(event_id):
        raise ValueError(f"not a ULID: {event_id!r}")
    value = 0
    for ch in event_id[:10]:
        value = value * 32 + _DECODE[ch]
    return value


# -- time ------------------------------------------------------------------------------
_second_cache: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds and `Z`."""
    global _second_cache
    ns = time.time_ns()
    sec, ms = divmod(ns // 1_000_000, 1000)
    cached_sec, prefix = _second_cache
    if cached_sec != sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache = (sec, prefix)
    return f"{prefix}.{ms:03d}Z"


# -- the payload -----------------------------------------------------------------------
@dataclass(slots=True)
class EventPayload:
    """One event, as the source document defines it, plus its identity.

    Attributes:
        data: The event's content; must satisfy the topic's JSON Schema when it has one.
        actor: Who caused the event (a service or a user id).
        tenant_id: The tenant (accounting firm) the event belongs to.
        trace_id: Correlation id; sent as the W3C `traceparent` header too.
        event_id: A ULID made when the payload is made; it is the publish's `Nats-Msg-Id`,
            so publishing the same payload object twice stores it once. Give your own
            (derived from the input) to make a re-run of a job idempotent.
        occurred_at: RFC 3339 UTC time when the payload was made.
    """

    data: dict[str, Any]
    actor: str
    tenant_id: str
    trace_id: str | None = None
    event_id: str = field(default_factory=new_event_id)
    occurred_at: str = field(default_factory=now_rfc3339)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode_data = _ENCODER.encode
_encode_str = json.encoder.encode_basestring  # the C escaper json.dumps uses


def encode_envelope(topic: str, payload: EventPayload) -> bytes:
    """The envelope's JSON bytes (field order as documented).

    Written field by field (each string escaped as json.dumps would) instead of building a
    dict for json.dumps: this runs once per publish.
    """
    trace = payload.trace_id
    return (
        '{"event_id":'
        + _encode_str(payload.event_id)
        + ',"topic":'
        + _encode_str(topic)
        + ',"occurred_at":'
        + _encode_str(payload.occurred_at)
        + ',"actor":'
        + _encode_str(payload.actor)
        + ',"tenant_id":'
        + _encode_str(payload.tenant_id)
        + ',"trace_id":'
        + (_encode_str(trace) if trace is not None else "null")
        + ',"data":'
        + _encode_data(payload.data)
        + "}"
    ).encode()


def decode_envelope(body: bytes) -> tuple[str, EventPayload]:
    """The topic name and payload of an envelope.

    Raises:
        InvalidEnvelopeError: The body is not JSON, not an object, or misses a field.
    """
    try:
        env = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEnvelopeError("not-json", f"body is not JSON: {exc}") from None
    if type(env) is not dict:
        raise InvalidEnvelopeError("not-an-object", "body is not a JSON object")
    try:
        topic = env["topic"]
        payload = EventPayload(
            data=env["data"],
            actor=env["actor"],
            tenant_id=env["tenant_id"],
            trace_id=env.get("trace_id"),
            event_id=env["event_id"],
            occurred_at=env["occurred_at"],
        )
    except KeyError as exc:
        raise InvalidEnvelopeError(
            "missing-field", f"envelope misses the field {exc.args[0]!r}"
        ) from None
    if type(topic) is not str or type(payload.event_id) is not str:
        raise InvalidEnvelopeError("bad-field", "envelope `topic` and `event_id` must be strings")
    return topic, payload


# -- W3C trace context -------------------------------------------------------------------
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_HEX32_RE = re.compile(r"^[0-9a-f]{32}$")


_trace_prefixes: dict[str, str] = {}


def traceparent_for(trace_id: str) -> str:
    """A W3C `traceparent` header value for `trace_id`.

    A full traceparent is passed through; 32 hex digits are used as the trace-id; any other
    string is hashed into one (so one trace_id always maps to the same trace). The
    parent-id (span) is fresh per event.
    """
    prefix = _trace_prefixes.get(trace_id)
    if prefix is None:
        if _TRACEPARENT_RE.match(trace_id):
            return trace_id
        tid = trace_id.lower()
        if not _HEX32_RE.match(tid) or tid == "0" * 32:
            tid = hashlib.sha256(trace_id.encode()).hexdigest()[:32]
        prefix = f"00-{tid}-"
        if len(_trace_prefixes) >= 4096:  # one trace per request: keep the cache small
            _trace_prefixes.clear()
        _trace_prefixes[trace_id] = prefix
    return prefix + os.urandom(8).hex() + "-01"


# -- payload schemas ---------------------------------------------------------------------
class PayloadSchema:
    """One topic's JSON Schema, compiled once: a fast yes/no check, jsonschema for the why.

    The fast check (generated code for the schema's keywords) answers valid payloads in a few
    microseconds; only a refusal, or a schema using keywords it does not know, runs
    jsonschema itself, whose best-matching error names the failing path.
    """

    def __init__(self, topic: str, schema: Mapping[str, Any]) -> None:
        self.topic = topic
        cls = jsonschema.validators.validator_for(schema)
        self._validator = cls(schema)
        self.check: Callable[[Any], bool]
        try:
            self.check = compile_check(schema)
        except Unsupported:
            self.check = self._validator.is_valid

    def error(self, data: Any) -> PayloadValidationError | None:
        """The refusal of `data`, or None when it is valid."""
        err = jsonschema.exceptions.best_match(self._validator.iter_errors(data))
        if err is None:
            return None
        return PayloadValidationError(self.topic, err.message, list(err.absolute_path))

    def validate(self, data: Any) -> None:
        """Raises PayloadValidationError when `data` fails the schema."""
        if not self.check(data):
            err = self.error(data)
            if err is not None:
                raise err


# -- one service's view of the topology ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class PublishTarget:
    """A topic this service may publish, with everything a publish needs precomputed."""

    topic: Topic
    stream: str
    subject: str | None  # None when the topic has `*` tokens: filled per publish
    schema: PayloadSchema | None

    def subject_for(self, tokens: tuple[str, ...]) -> str:
        if self.subject is not None:
            if tokens:
                raise SetupError(
                    f"topic `{self.topic.name}` ({self.topic.subject}) takes no subject tokens, "
                    f"got {len(tokens)}"
                )
            return self.subject
        return self.topic.subject_for(*tokens)


class ServiceBinding:
    """What one service of a topology may publish and consume.

    Raises (from its methods) before anything is sent: `TopicNotDeclaredError` for an
    undeclared topic, a topic this service does not publish, or one it has no consumer
    for; `PayloadValidationError` for data failing the topic's schema.
    """

    def __init__(self, topology: Topology, service: str) -> None:
        try:
            topology.service(service)
        except KeyError:
            from difflib import get_close_matches

            names = [s.name for s in topology.services]
            close = get_close_matches(service, names, n=3)
            hint = f" (did you mean {', '.join(f'`{c}`' for c in close)}?)" if close else ""
            raise SetupError(
                f"service `{service}` is not declared in topology `{topology.name}`{hint}"
            ) from None
        self.topology = topology
        self.service = service
        self._targets: dict[str, PublishTarget] = {}
        self._schemas: dict[str, PayloadSchema | None] = {}

    def schema(self, topic: Topic) -> PayloadSchema | None:
        """The compiled schema of a topic (compiled on first use, then cached)."""
        try:
            return self._schemas[topic.name]
        except KeyError:
            compiled = PayloadSchema(topic.name, topic.schema) if topic.schema else None
            self._schemas[topic.name] = compiled
            return compiled

    def publish_target(self, topic_name: str) -> PublishTarget:
        """The topic `topic_name` if this service is one of its declared publishers."""
        target = self._targets.get(topic_name)
        if target is not None:
            return target
        topic = self.topology.topic(topic_name)
        if self.service not in topic.publishers:
            who = ", ".join(f"`{p}`" for p in topic.publishers) or "none"
            raise TopicNotDeclaredError(
                f"service `{self.service}` is not a declared publisher of topic `{topic_name}` "
                f"(publishers: {who})"
            )
        subject = None if "*" in topic.subject.split(".") else topic.subject
        target = PublishTarget(topic, topic.stream, subject, self.schema(topic))
        self._targets[topic_name] = target
        return target

    def consumer_for(self, topic_name: str) -> Consumer:
        """The durable consumer the topology declares for this service and topic."""
        return self.topology.consumer_for(self.service, topic_name)

    def stream(self, name: str) -> Stream:
        return self.topology.stream(name)

    def prepare(
        self, topic_name: str, payload: EventPayload, tokens: tuple[str, ...] = ()
    ) -> tuple[PublishTarget, str, bytes, dict[str, str]]:
        """Check one publish and build it: (target, subject, body, headers)."""
        target = self.publish_target(topic_name)
        subject = (
            target.subject_for(tokens) if (tokens or target.subject is None) else target.subject
        )
        schema = target.schema
        if schema is not None and not schema.check(payload.data):
            schema.validate(payload.data)
        try:
            body = encode_envelope(topic_name, payload)
        except (TypeError, ValueError) as exc:
            raise PayloadValidationError(topic_name, f"not JSON: {exc}") from exc
        headers = {MSG_ID_HEADER: payload.event_id}
        if payload.trace_id:
            headers[TRACEPARENT_HEADER] = traceparent_for(payload.trace_id)
        return target, subject, body, headers


class ConsumedTopics:
    """Maps the subject of a delivered message to the consumer's topic it belongs to."""

    def __init__(self, binding: ServiceBinding, consumer: Consumer) -> None:
        stream = binding.stream(consumer.stream)
        names = consumer.topics or tuple(t.name for t in stream.topics)
        self.topics = tuple(binding.topology.topic(n) for n in names)
        self._binding = binding
        self._by_subject: dict[str, Topic | None] = {}

    def topic_of(self, subject: str) -> Topic | None:
        try:
            return self._by_subject[subject]
        except KeyError:
            found = next((t for t in self.topics if t.matches(subject)), None)
            if len(self._by_subject) < 10_000:
                self._by_subject[subject] = found
            return found

    def decode(self, subject: str, body: bytes) -> tuple[Topic, EventPayload]:
        """Topic and payload of a delivered message, checked against the topic's schema.

        Raises:
            InvalidEnvelopeError: Unknown subject, not an envelope, another topic's
                envelope, or data failing the schema (reason `schema`).
        """
        topic = self.topic_of(subject)
        if topic is None:
            raise InvalidEnvelopeError(
                "unknown-subject", f"subject {subject!r} is not a topic of this consumer"
            )
        name, payload = decode_envelope(body)
        if name != topic.name:
            raise InvalidEnvelopeError(
                "topic-mismatch",
                f"envelope names topic {name!r} but arrived on {subject!r} (topic `{topic.name}`)",
            )
        schema = self._binding.schema(topic)
        if schema is not None and not schema.check(payload.data):
            err = schema.error(payload.data)
            if err is not None:
                raise InvalidEnvelopeError("schema", str(err))
        return topic, payload

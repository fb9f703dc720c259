"""One service's view of the topology: which topics it may publish (with their payload
schema checks compiled once per topic) and which it consumes through which declared
consumer. Both buses (NATS and in-memory) refuse the same things through it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from .._errors import (
    InvalidEnvelopeError,
    PayloadTooLargeError,
    PayloadValidationError,
    SetupError,
    TopicNotDeclaredError,
)
from ..topology.checks.references import unresolvable_refs
from ..topology.json_schema_compiler import Unsupported, compile_check
from ..topology.loader import load_topology
from ..topology.model import Consumer, Stream, Topic, Topology
from .envelope import (
    MSG_ID_HEADER,
    TRACEPARENT_HEADER,
    EventPayload,
    decode_stamped_envelope,
    encode_envelope,
    schema_field,
    traceparent_for,
)

# nats-server's default max_payload: the limit until a connection tells the real one.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
# Header bytes of a publish besides its values: `NATS/1.0\r\n`, `Key: ` and `\r\n` per
# header, the closing `\r\n`. Below `limit - _HEADER_ROOM` no exact count is needed.
_HEADER_ROOM = 2048


def header_bytes(headers: Mapping[str, str]) -> int:
    """The size of `headers` on the wire, as nats-py writes them and the server counts them."""
    return 12 + sum(len(k.encode()) + len(v.strip().encode()) + 4 for k, v in headers.items())


# The name this module has always exported for payloads.
compile_payload_check = compile_check


# -- payload schemas ---------------------------------------------------------------------
class PayloadSchema:
    """One topic's JSON Schema, compiled once: a fast yes/no check, jsonschema for the why.

    The fast check (generated code for the schema's keywords) answers valid payloads in a few
    microseconds; only a refusal, or a schema using keywords it does not know, runs
    jsonschema itself, whose best-matching error names the failing path.
    """

    def __init__(self, topic: str, schema: Mapping[str, Any]) -> None:
        self.topic = topic
        try:
            refs = unresolvable_refs(schema)
        except RecursionError:
            refs = ["it is nested too deeply to check"]
        if refs:
            # The loader refuses these; a Topology built another way meets them here,
            # before the first publish or delivery rather than inside one.
            raise SetupError(f"payload schema of topic `{topic}` cannot be used: {'; '.join(refs)}")
        cls = jsonschema.validators.validator_for(schema)
        self._validator = cls(schema)
        self.check: Callable[[Any], bool]
        try:
            self.check = compile_check(schema)
        except Unsupported:
            self.check = self._safe_is_valid

    def _safe_is_valid(self, data: Any) -> bool:
        try:
            return bool(self._validator.is_valid(data))
        except Exception as exc:  # jsonschema's own failure (a regex it cannot run ...)
            raise SetupError(
                f"payload schema of topic `{self.topic}` failed while checking: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def error(self, data: Any) -> PayloadValidationError | None:
        """The refusal of `data`, or None when it is valid."""
        try:
            err = jsonschema.exceptions.best_match(self._validator.iter_errors(data))
        except Exception as exc:
            raise SetupError(
                f"payload schema of topic `{self.topic}` failed while checking: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
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
    schema_stamp: str  # the envelope's `schema` member
    max_msg_size: int  # the stream's max_msg_size, 0 when unlimited

    def subject_for(self, tokens: tuple[str, ...]) -> str:
        if self.subject is not None:
            if tokens:
                raise SetupError(
                    f"topic `{self.topic.name}` ({self.topic.subject}) takes no subject tokens, "
                    f"got {len(tokens)}"
                )
            return self.subject
        for token in tokens:
            if type(token) is not str:
                raise SetupError(
                    f"`tokens` of topic `{self.topic.name}` must be strings (subject tokens), "
                    f"got {token!r} ({type(token).__name__})"
                )
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
        self._max_payload = DEFAULT_MAX_PAYLOAD
        streams_mms = [s.max_msg_size for s in topology.streams if s.max_msg_size]
        self._smallest_mms = min([m for m in streams_mms if m > 0], default=0)
        self._small = 0
        self.max_payload = DEFAULT_MAX_PAYLOAD  # the connected server's, once connected
        self._targets: dict[str, PublishTarget] = {}
        self._schemas: dict[str, PayloadSchema | None] = {}

    @property
    def max_payload(self) -> int:
        """The server's max_payload (the default until the bus is connected)."""
        return self._max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        self._max_payload = value
        limit = min(value, self._smallest_mms) if self._smallest_mms else value
        self._small = limit - _HEADER_ROOM  # bodies up to this size pass every limit

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
        mms = self.topology.stream(topic.stream).max_msg_size
        target = PublishTarget(
            topic,
            topic.stream,
            subject,
            self.schema(topic),
            schema_field(topic.schema_digest),
            mms if mms is not None and mms > 0 else 0,
        )
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
        """Check one publish and build it: (target, subject, body, headers).

        Raises:
            TopicNotDeclaredError: See `publish_target`.
            SetupError: Wrong subject tokens.
            PayloadValidationError: Not an EventPayload, `data` not a dict, not JSON
                (NaN, a date ...), an event_id no header can carry, or `data` failing
                the topic's schema.
            PayloadTooLargeError: Larger than the server's max_payload or the stream's
                max_msg_size.
        """
        target = self.publish_target(topic_name)
        subject = (
            target.subject_for(tokens) if (tokens or target.subject is None) else target.subject
        )
        if type(payload) is not EventPayload:
            _refuse_payload(topic_name, payload)
        data = payload.data
        if type(data) is not dict:
            raise PayloadValidationError(
                topic_name,
                f"`data` must be a dict (a JSON object), got {type(data).__name__}",
                schema=False,
            )
        event_id = payload.event_id
        if (
            type(event_id) is not str
            or not 0 < len(event_id) <= 255
            or not event_id.isprintable()
            or " " in event_id
        ):
            raise PayloadValidationError(
                topic_name,
                f"`event_id` {event_id!r} cannot be a Nats-Msg-Id: expected a string of 1 to "
                "255 characters without spaces or control characters (by default a new ULID)",
                schema=False,
            )
        schema = target.schema
        try:
            if schema is not None and not schema.check(data):
                schema.validate(data)
            body = encode_envelope(topic_name, payload, target.schema_stamp)
        except (TypeError, ValueError) as exc:
            raise PayloadValidationError(topic_name, f"not JSON: {exc}", schema=False) from exc
        except RecursionError:
            raise PayloadValidationError(
                topic_name, "`data` is nested too deeply to check and encode", schema=False
            ) from None
        headers = {MSG_ID_HEADER: event_id}
        if payload.trace_id:
            headers[TRACEPARENT_HEADER] = traceparent_for(payload.trace_id)
        if len(body) > self._small:  # else far below every limit: no exact count needed
            self.check_size(topic_name, target.stream, target.max_msg_size, len(body), headers)
        return target, subject, body, headers

    def check_size(
        self,
        label: str,
        stream: str,
        max_msg_size: int,
        body_size: int,
        headers: Mapping[str, str],
    ) -> None:
        """Raises PayloadTooLargeError when the server or `stream` would refuse the size.

        `max_msg_size` is the stream's (0: unlimited). Both limits count the body and the
        headers (measured on 2.10 and the newest server; nats-py checks only the body).
        """
        limit = self.max_payload
        if max_msg_size and max_msg_size < limit:
            limit = max_msg_size
        if body_size <= limit - _HEADER_ROOM:
            return
        size = body_size + header_bytes(headers)
        if size > self.max_payload:
            raise PayloadTooLargeError(label, size, self.max_payload, "the server's max_payload")
        if max_msg_size and size > max_msg_size:
            raise PayloadTooLargeError(label, size, max_msg_size, f"streams.{stream}.max_msg_size")


def _refuse_payload(topic: str, payload: object) -> None:
    hint = ""
    if isinstance(payload, dict):
        hint = (
            ": wrap it, EventPayload(data={...}, actor=..., tenant_id=...) (`from bus_runtime "
            "import EventPayload`)"
        )
    raise PayloadValidationError(
        topic, f"expected an EventPayload, got {type(payload).__name__}{hint}", schema=False
    )


class ConsumedTopics:
    """Maps the subject of a delivered message to the consumer's topic it belongs to.

    Every topic's payload schema is compiled here, at subscribe time, so a schema that
    cannot be used fails `subscribe` and not each delivery.
    """

    def __init__(self, binding: ServiceBinding, consumer: Consumer) -> None:
        stream = binding.stream(consumer.stream)
        names = consumer.topics or tuple(t.name for t in stream.topics)
        self.topics = tuple(binding.topology.topic(n) for n in names)
        self._binding = binding
        self._by_subject: dict[str, Topic | None] = {}
        for t in self.topics:
            binding.schema(t)

    def topic_of(self, subject: str) -> Topic | None:
        try:
            return self._by_subject[subject]
        except KeyError:
            found = next((t for t in self.topics if t.matches(subject)), None)
            if len(self._by_subject) < 10_000:
                self._by_subject[subject] = found
            return found

    def decode(self, subject: str, body: bytes) -> tuple[Topic, EventPayload, str | None]:
        """Topic, payload and schema skew of a delivered message.

        The third value is None when `data` satisfies this consumer's schema of the topic.
        When it does not and the envelope says its publisher checked it against another
        schema (`schema` digest differs: a rolling deploy of a schema change), it is the
        refusal's text and the message still goes to the handler (see docs/runtime.md).

        Raises:
            InvalidEnvelopeError: Unknown subject, not an envelope, another topic's
                envelope, or data failing the schema its publisher names as this one's,
                or with no `schema` member at all (a publisher that did not check; reason
                `schema`).
        """
        topic = self.topic_of(subject)
        if topic is None:
            raise InvalidEnvelopeError(
                "unknown-subject", f"subject {subject!r} is not a topic of this consumer"
            )
        name, payload, stamp = decode_stamped_envelope(body)
        if name != topic.name:
            raise InvalidEnvelopeError(
                "topic-mismatch",
                f"envelope names topic {name!r} but arrived on {subject!r} (topic `{topic.name}`)",
            )
        schema = self._binding.schema(topic)
        if schema is not None and not schema.check(payload.data):
            err = schema.error(payload.data)
            if err is not None:
                if stamp is None or stamp == topic.schema_digest:
                    raise InvalidEnvelopeError("schema", str(err))
                return topic, payload, str(err)
        return topic, payload, None


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

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
    PayloadValidationError,
    SetupError,
    TopicNotDeclaredError,
)
from ..topology.json_schema_compiler import Unsupported, compile_check
from ..topology.loader import load_topology
from ..topology.model import Consumer, Stream, Topic, Topology
from .envelope import (
    MSG_ID_HEADER,
    TRACEPARENT_HEADER,
    EventPayload,
    decode_envelope,
    encode_envelope,
    traceparent_for,
)

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

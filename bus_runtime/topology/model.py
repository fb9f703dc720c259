"""The one model of a topology: frozen dataclasses with the *effective* settings.

Values here are after defaults and one environment's overrides. Durations are integer
nanoseconds and sizes integer bytes, as the JetStream API takes them; a field that is
None was set nowhere: the server's own default applies, and a server holding another
value has drifted (apply resets it). Values the server stores otherwise are written as it
stores them: a limit of 0 is -1 (no limit), as the server rewrites it.
`Stream.to_stream_config()` and `Consumer.to_consumer_config()` give the JSON the server
takes; `Topology.fingerprint` is a stable hash of everything that matters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .._errors import SetupError, TopicNotDeclaredError, TopologyError
from .subjects import subject_matches

# Fields of the topology that map 1:1 to a JetStream stream config key.
STREAM_FIELD_TO_API: dict[str, str] = {
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
}
CONSUMER_FIELD_TO_API: dict[str, str] = {
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
}
DURATION_FIELDS = frozenset(
    {
        "max_age",
        "duplicate_window",
        "subject_delete_marker_ttl",
        "ack_wait",
        "backoff",
        "max_request_expires",
        "handler_timeout",
    }
)
SIZE_FIELDS = frozenset({"max_bytes", "max_msg_size"})
# Settings read by bus_runtime itself; never sent to the server.
RUNTIME_CONSUMER_FIELDS = frozenset({"fetch_batch", "concurrency", "handler_timeout"})

DEFAULT_FETCH_BATCH = 100
DEFAULT_CONCURRENCY = 16
DEFAULT_HANDLER_TIMEOUT = 5 * 60 * 1_000_000_000  # 5 minutes, in nanoseconds


def _stdlib_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _refuse(value: Any) -> Any:
    raise TypeError(f"not plain JSON: {type(value).__name__}")


@cache
def _orjson_dumps() -> Callable[[Any], bytes] | None:
    """orjson's encoder as the fingerprint uses it, or None: orjson imported on first use
    (it costs more to import than loading a small topology), and only when it writes every
    ASCII character but DEL, and 64-bit integers, as the stdlib. Subclasses (a str-valued
    Enum), dataclasses and datetimes, which orjson would write and the stdlib writes
    otherwise or refuses, go to `_refuse`, then to the stdlib."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - without the `fast` extra
        return None
    options = (
        orjson.OPT_SORT_KEYS
        | orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
    )

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=_refuse, option=options)

    text = "".join(map(chr, range(127)))
    probe = {text: [text, 0, -(2**63), 2**64 - 1, True, False, None, {}, []], "a": {"b": 1}}
    try:
        agrees = dumps(probe) == _stdlib_json(probe)
    except TypeError:
        agrees = False
    return dumps if agrees else None


def fingerprint_json(value: Any) -> bytes:
    """The bytes a fingerprint hashes: the stdlib's JSON, keys sorted, compact, ASCII only.

    Every host must write the same bytes (a pod compares the deployed topology's
    fingerprint with the one of the file it loaded), with or without orjson (the `fast`
    extra), which writes them about 5x faster: its output is taken only when it is ASCII
    without DEL (the stdlib escapes both as \\uXXXX, orjson does not), and values it
    refuses (lone surrogates, integers beyond 64 bits, non-string keys) take the stdlib.
    The model holds no floats (every number in it is an integer), which the two write
    differently, nor UUIDs or Enums that are not strings (orjson writes them, the stdlib
    refuses them).
    """
    dumps = _orjson_dumps()
    if dumps is not None:
        try:
            blob = dumps(value)
        except TypeError:
            pass
        else:
            if blob.isascii() and b"\x7f" not in blob:
                return blob
    return _stdlib_json(value)


@dataclass(frozen=True)
class Location:
    """Where something is declared in the topology file (1-based)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Service:
    """An application service that publishes and/or consumes topics.

    Attributes:
        name: Service name (lower-case, digits and dashes).
        description: What it does.
        owner: Team or person responsible, if declared.
    """

    name: str
    description: str | None = None
    owner: str | None = None


@dataclass(frozen=True)
class Topic:
    """One kind of event, published on one subject (pattern) of one stream.

    Attributes:
        name: Topic name, unique in the topology (`document.uploaded`).
        stream: Name of the stream that stores it.
        subject: `<subject_prefix>.<name>`; may hold `*` tokens.
        publishers: Services allowed to publish it.
        schema_file: The payload schema's path as written (relative to the topology file).
        schema: The loaded JSON Schema of `EventPayload.data`, or None.
        deprecated: Publishers should stop.
    """

    name: str
    stream: str
    subject: str
    description: str | None = None
    publishers: tuple[str, ...] = ()
    schema_file: str | None = None
    schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    schema_digest: str | None = None
    deprecated: bool = False
    location: Location | None = field(default=None, compare=False, hash=False, repr=False)

    def subject_for(self, *tokens: str) -> str:
        """The concrete subject, filling the topic's `*` tokens in order.

        Raises:
            SetupError: The count of tokens differs from the count of wildcards.
        """
        parts = self.subject.split(".")
        wild = [i for i, p in enumerate(parts) if p == "*"]
        if len(tokens) != len(wild):
            raise SetupError(
                f"topic `{self.name}` ({self.subject}) needs {len(wild)} subject token(s), "
                f"got {len(tokens)}"
            )
        for i, tok in zip(wild, tokens, strict=True):
            if not tok or any(c in tok for c in " .*>\t\r\n"):
                raise SetupError(f"subject token {tok!r} for topic `{self.name}` is not a token")
            parts[i] = tok
        return ".".join(parts)

    def matches(self, subject: str) -> bool:
        return subject_matches(self.subject, subject)


@dataclass(frozen=True)
class Consumer:
    """A durable pull consumer, with its effective settings.

    Attributes:
        name: Durable name (unique in its stream).
        stream: Name of the stream it reads.
        service: The service that consumes through it.
        topics: Topic names it receives; empty when it takes every subject of the stream.
        filter_subjects: The filter subjects derived from `topics`.
        fetch_batch: Runtime setting: messages per pull request at most; the bus keeps at
            most `max(concurrency, fetch_batch)` in flight.
        concurrency: Runtime setting: handlers running at once.
        handler_timeout: Runtime setting: nanoseconds one handler call may run before the
            bus cancels it and counts the delivery as failed.
    """

    name: str
    stream: str
    service: str
    topics: tuple[str, ...] = ()
    filter_subjects: tuple[str, ...] = ()
    description: str | None = None
    ack_policy: str = "explicit"
    ack_wait: int | None = None
    max_deliver: int | None = None
    backoff: tuple[int, ...] | None = None
    max_ack_pending: int | None = None
    deliver_policy: str = "all"
    opt_start_seq: int | None = None
    replay_policy: str | None = None
    max_waiting: int | None = None
    max_request_batch: int | None = None
    max_request_expires: int | None = None
    replicas: int | None = None
    mem_storage: bool | None = None
    headers_only: bool | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    fetch_batch: int = DEFAULT_FETCH_BATCH
    concurrency: int = DEFAULT_CONCURRENCY
    handler_timeout: int = DEFAULT_HANDLER_TIMEOUT
    location: Location | None = field(default=None, compare=False, hash=False, repr=False)
    field_locations: Mapping[str, Location] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def settings(self) -> dict[str, Any]:
        """The effective settings in the topology's own field names (None = not set)."""
        return {k: getattr(self, k) for k in CONSUMER_FIELD_TO_API}

    def where(self, fld: str | None = None) -> Location | None:
        """Where `fld` was set (in `defaults`, the consumer or an environment), else the consumer."""
        return self.field_locations.get(fld or "", self.location)

    def to_consumer_config(self) -> dict[str, Any]:
        """The JetStream consumer config (the JSON of `$JS.API.CONSUMER.CREATE`)."""
        cfg: dict[str, Any] = {"durable_name": self.name, "name": self.name}
        for fld, key in CONSUMER_FIELD_TO_API.items():
            value = getattr(self, fld)
            if value is None:
                continue
            cfg[key] = list(value) if isinstance(value, tuple) else value
        if len(self.filter_subjects) == 1:
            cfg["filter_subject"] = self.filter_subjects[0]
        elif self.filter_subjects:
            cfg["filter_subjects"] = list(self.filter_subjects)
        if self.metadata:
            cfg["metadata"] = dict(self.metadata)
        return cfg


@dataclass(frozen=True)
class Stream:
    """A JetStream stream with its effective settings, topics and consumers.

    Attributes:
        name: Stream name.
        subject_prefix: First token(s) of every subject of the stream.
        subjects: Every subject the stream stores (topics, then dead-letter subjects).
        dead_letter: The stream receiving this one's exhausted messages, or None.
        dead_letter_sources: Streams whose dead letters this stream receives.
    """

    name: str
    subject_prefix: str
    subjects: tuple[str, ...]
    topics: tuple[Topic, ...] = ()
    consumers: tuple[Consumer, ...] = ()
    description: str | None = None
    retention: str = "limits"
    storage: str = "file"
    replicas: int = 1
    max_age: int | None = None
    max_bytes: int | None = None
    max_msgs: int | None = None
    max_msgs_per_subject: int | None = None
    max_msg_size: int | None = None
    max_consumers: int | None = None
    discard: str = "old"
    discard_new_per_subject: bool | None = None
    duplicate_window: int | None = None
    compression: str | None = None
    allow_rollup_hdrs: bool | None = None
    deny_delete: bool | None = None
    deny_purge: bool | None = None
    allow_direct: bool | None = None
    allow_msg_ttl: bool | None = None
    subject_delete_marker_ttl: int | None = None
    allow_batched: bool | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    dead_letter: str | None = None
    dead_letter_sources: tuple[str, ...] = ()
    location: Location | None = field(default=None, compare=False, hash=False, repr=False)
    field_locations: Mapping[str, Location] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def settings(self) -> dict[str, Any]:
        """The effective settings in the topology's own field names (None = not set)."""
        return {k: getattr(self, k) for k in STREAM_FIELD_TO_API}

    def where(self, fld: str | None = None) -> Location | None:
        """Where `fld` was set (in `defaults`, the stream or an environment), else the stream."""
        return self.field_locations.get(fld or "", self.location)

    def dead_letter_subject(self, origin_stream: str, original_subject: str) -> str:
        """Subject of a dead letter from `origin_stream` that was published on `original_subject`."""
        return f"{self.subject_prefix}.{origin_stream}.{original_subject}"

    def to_stream_config(self) -> dict[str, Any]:
        """The JetStream stream config (the JSON of `$JS.API.STREAM.CREATE`)."""
        cfg: dict[str, Any] = {"name": self.name, "subjects": list(self.subjects)}
        for fld, key in STREAM_FIELD_TO_API.items():
            value = getattr(self, fld)
            if value is not None:
                cfg[key] = value
        if self.metadata:
            cfg["metadata"] = dict(self.metadata)
        return cfg

    def consumer(self, name: str) -> Consumer:
        for c in self.consumers:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class Topology:
    """A whole topology for one environment (or the base when `environment` is None).

    Attributes:
        name: The system's name; marks the assets natstopo manages.
        environment: The environment whose overrides are applied, or None.
        environments: Every environment the file declares.
        services: Declared services.
        streams: Streams in file order.
        source: The topology file.
        warnings: Valid but likely mistakes, found while loading (e.g. a topic nobody consumes on
            an interest stream, where the server would drop its events).
    """

    name: str
    environment: str | None
    services: tuple[Service, ...]
    streams: tuple[Stream, ...]
    environments: tuple[str, ...] = ()
    description: str | None = None
    version: int = 1
    source: Path | None = field(default=None, compare=False, hash=False)
    warnings: tuple[TopologyError, ...] = field(default=(), compare=False, hash=False, repr=False)

    # -- lookups ---------------------------------------------------------------------
    def stream(self, name: str) -> Stream:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def topics(self) -> tuple[Topic, ...]:
        return tuple(t for s in self.streams for t in s.topics)

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(c for s in self.streams for c in s.consumers)

    def topic(self, name: str) -> Topic:
        """The topic named `name`.

        Raises:
            TopicNotDeclaredError: No such topic; the message suggests close names.
        """
        index = self._topic_index
        if name in index:
            return index[name]
        from difflib import get_close_matches

        close = get_close_matches(name, list(index), n=3)
        hint = f" (did you mean {', '.join(f'`{c}`' for c in close)}?)" if close else ""
        raise TopicNotDeclaredError(
            f"topic `{name}` is not declared in topology `{self.name}`{hint}"
        )

    @property
    def _topic_index(self) -> dict[str, Topic]:
        cached: dict[str, Topic] | None = self.__dict__.get("_topics_cache")
        if cached is None:
            cached = {t.name: t for t in self.topics}
            object.__setattr__(self, "_topics_cache", cached)
        return cached

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def topics_published_by(self, service: str) -> tuple[Topic, ...]:
        return tuple(t for t in self.topics if service in t.publishers)

    def consumers_of(self, service: str) -> tuple[Consumer, ...]:
        return tuple(c for c in self.consumers if c.service == service)

    def consumer_for(self, service: str, topic: str) -> Consumer:
        """The consumer declared for `service` that receives `topic`.

        Raises:
            TopicNotDeclaredError: The topic is unknown, or no consumer of this service takes it.
        """
        t = self.topic(topic)
        for c in self.stream(t.stream).consumers:
            if c.service == service and (not c.topics or topic in c.topics):
                return c
        raise TopicNotDeclaredError(
            f"service `{service}` declares no consumer for topic `{topic}` "
            f"(stream `{t.stream}`); add one under streams.{t.stream}.consumers"
        )

    def iter_assets(self) -> Iterator[tuple[Stream, Consumer | None]]:
        """Each stream, then its consumers: the order in which they must be created."""
        for s in self.streams:
            yield s, None
            for c in s.consumers:
                yield s, c

    # -- identity --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything that defines the effective topology, as plain JSON-able data."""
        return {
            "version": self.version,
            "name": self.name,
            "environment": self.environment,
            "services": sorted(s.name for s in self.services),
            "streams": [
                {
                    "config": s.to_stream_config(),
                    "dead_letter": s.dead_letter,
                    "topics": [
                        {
                            "name": t.name,
                            "subject": t.subject,
                            "publishers": list(t.publishers),
                            "schema": t.schema_digest,
                            "deprecated": t.deprecated,
                        }
                        for t in s.topics
                    ],
                    "consumers": [
                        {
                            "config": c.to_consumer_config(),
                            "service": c.service,
                            "topics": list(c.topics),
                            "fetch_batch": c.fetch_batch,
                            "concurrency": c.concurrency,
                            "handler_timeout": c.handler_timeout,
                        }
                        for c in s.consumers
                    ],
                }
                for s in self.streams
            ],
        }

    @property
    def fingerprint(self) -> str:
        """Stable sha256 (hex, 16 chars) of the effective topology: equal iff nothing differs."""
        cached: str | None = self.__dict__.get("_fingerprint_cache")
        if cached is None:
            cached = hashlib.sha256(fingerprint_json(self.to_dict())).hexdigest()[:16]
            object.__setattr__(self, "_fingerprint_cache", cached)
        return cached

    def summary(self) -> str:
        return (
            f"{len(self.streams)} streams, {len(self.topics)} topics, "
            f"{len(self.consumers)} consumers, {len(self.services)} services"
        )

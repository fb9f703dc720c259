"""The AsyncAPI 3.0 document of a topology: what an AsyncAPI tool knows of the bus.

- a **channel** per topic, its address the topic's subject with each `*` token written as
  a parameter (`tax.firm.{token1}.sync_completed`), plus a channel per dead-letter flow
  (`dlq.TAX_AGENT_JOBS.{original_subject}`);
- a **message** per topic: the event envelope (`event_id`, `topic`, `occurred_at`,
  `actor`, `tenant_id`, `trace_id`, `data`) with the topic's payload schema as `data`, and
  the headers `Nats-Msg-Id` and `traceparent`;
- **operations** per service: `send` for each topic it publishes, `receive` for each topic
  one of its consumers takes, `send` of dead letters for the streams it consumes;
- **`x-jetstream`** extensions with what AsyncAPI has no field for (its NATS binding knows
  only core NATS queue groups): the stream's settings on each channel and at the root, the
  consumer's on each receive operation, in the topology's units (`7d`, `10GiB`).

Payload schemas are JSON Schema of any draft (usually 2020-12); AsyncAPI's schema dialect
is a superset of draft-07, so each is translated where a draft-07 spelling exists
(`prefixItems` -> `items` + `additionalItems`, `dependentRequired` -> `dependencies`) and
its `$ref`s are rewritten to point inside the document. What cannot be translated is kept
or replaced and reported in `AsyncApiDocument.warnings`, never dropped in silence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from .._errors import SetupError
from ..topology.model import DURATION_FIELDS, SIZE_FIELDS, Consumer, Stream, Topic, Topology
from ..topology.units import format_duration, format_size

ASYNCAPI_VERSION = "3.0.0"
CONTENT_TYPE = "application/json"

# Restated from bus_runtime.bus (review may not import the runtime; tests/test_asyncapi.py
# checks these against the runtime's own constants).
ENVELOPE_FIELDS = (
    "event_id",
    "topic",
    "occurred_at",
    "actor",
    "tenant_id",
    "trace_id",
    "schema",
    "data",
)
# Members an envelope may lack: no trace, or a publisher older than the `schema` member.
OPTIONAL_FIELDS = frozenset({"trace_id", "schema"})
MSG_ID_HEADER = "Nats-Msg-Id"
TRACEPARENT_HEADER = "traceparent"
DEAD_LETTER_HEADERS: dict[str, str] = {
    "Natstopo-Stream": "The stream the message was consumed from.",
    "Natstopo-Consumer": "The durable consumer whose deliveries were exhausted.",
    "Natstopo-Subject": "The subject the message was published on (replay publishes there).",
    "Natstopo-Stream-Seq": "The message's sequence in its stream.",
    "Natstopo-Deliveries": "How many times it was delivered.",
    "Natstopo-Reason": "Why it was dead-lettered (e.g. max_deliver reached, handler refused it).",
    "Natstopo-Error": "The last error, one line, at most 1,024 characters.",
    "Natstopo-Failed-At": "When it was dead-lettered (RFC 3339, UTC).",
    "Natstopo-Msg-Id": "The original `Nats-Msg-Id` (the event_id).",
}
_TRACEPARENT_PATTERN = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
# AsyncAPI component keys: `^[\w\d.\-_]+$`; kept ASCII so `$ref` pointers need no escaping.
_NOT_KEY = re.compile(r"[^A-Za-z0-9_.\-]")
_SERVER_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_PROTOCOLS = {"nats": "nats", "tls": "nats", "ws": "ws", "wss": "wss"}


@dataclass(frozen=True)
class AsyncApiDocument:
    """An AsyncAPI document and what could not be said in it exactly.

    Attributes:
        document: The document as plain data (dicts in a stable order).
        warnings: One line per thing translated lossily or left out, naming the place.
    """

    document: dict[str, Any]
    warnings: tuple[str, ...] = ()

    def to_yaml(self) -> str:
        return yaml.dump(
            self.document,
            Dumper=_NoAliasDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
            default_flow_style=False,
        )

    def to_json(self) -> str:
        return json.dumps(self.document, indent=2, ensure_ascii=False) + "\n"


# libyaml's emitter when PyYAML has it: 3x faster (a 10,000-topic document: 14 s, not 45 s).
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _NoAliasDumper(_SafeDumper):  # type: ignore[valid-type,misc]
    """Writes a repeated object out each time: `&id001` anchors confuse readers and tools."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def parse_server(spec: str, default_name: str) -> tuple[str, dict[str, Any]]:
    """`[NAME=]URL` -> (name, AsyncAPI Server Object). Credentials in the URL are left out.

    Raises:
        SetupError: Not a NATS URL (`nats://`, `tls://`, `ws://`, `wss://` or `host:port`).
    """
    name, sep, url = spec.partition("=")
    if not sep or "://" in name:
        name, url = default_name, spec
    if not _SERVER_NAME.match(name):
        raise SetupError(f"server name `{name}` must be letters, digits, `.`, `-` or `_`")
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        port = parts.port
    except ValueError:
        raise SetupError(f"server `{spec}`: the port is not a number") from None
    protocol = _PROTOCOLS.get(parts.scheme)
    if protocol is None or not parts.hostname:
        raise SetupError(
            f"server `{spec}` is not a NATS URL: use nats://HOST:PORT, tls://, ws:// or wss://"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    server: dict[str, Any] = {
        "host": f"{host}:{port}" if port else host,
        "protocol": protocol,
    }
    if parts.path not in ("", "/"):
        server["pathname"] = parts.path
    if parts.scheme in ("tls", "wss"):
        server["description"] = "TLS"
    return name, server


def build_asyncapi(
    topology: Topology,
    *,
    servers: Sequence[str] = (),
    doc_version: str | None = None,
) -> AsyncApiDocument:
    """The AsyncAPI 3.0 document of `topology` (one environment's effective settings).

    Args:
        topology: The loaded topology.
        servers: `[NAME=]URL` of each server; names default to the environment's name
            (numbered when there are several).
        doc_version: `info.version`; default the topology's fingerprint, which changes
            whenever the effective topology does.

    Raises:
        SetupError: A server is not a NATS URL, or two servers have the same name.
    """
    return _Builder(topology).build(servers, doc_version)


class _Keys:
    """Unique document keys from names: `firm.*.x` -> `firm._.x`; a clash gets `-2`, `-3`."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def new(self, name: str) -> str:
        base = _NOT_KEY.sub("_", name) or "_"
        key, n = base, 1
        while key in self._used:
            n += 1
            key = f"{base}-{n}"
        self._used.add(key)
        return key


class _Builder:
    def __init__(self, topology: Topology) -> None:
        self.t = topology
        self.warnings: list[str] = []
        channel_keys = _Keys()
        self.topic_key = {t.name: channel_keys.new(t.name) for t in topology.topics}
        self.dlq_key = {
            s.name: channel_keys.new(f"dead-letters.{s.name}")
            for s in topology.streams
            if s.dead_letter
        }

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    # -- the document --------------------------------------------------------------------
    def build(self, servers: Sequence[str], doc_version: str | None) -> AsyncApiDocument:
        t = self.t
        doc: dict[str, Any] = {
            "asyncapi": ASYNCAPI_VERSION,
            "id": f"urn:natstopo:{t.name}" + (f":{t.environment}" if t.environment else ""),
            "info": self._info(doc_version),
            "defaultContentType": CONTENT_TYPE,
        }
        if servers:
            doc["servers"] = self._servers(servers)
        schemas: dict[str, Any] = {}
        messages: dict[str, Any] = {}
        channels: dict[str, Any] = {}
        for topic in t.topics:
            key = self.topic_key[topic.name]
            schemas[key] = self._payload_schema(topic, key)
            schemas[f"{key}.envelope"] = self._envelope(topic, key)
            messages[key] = self._message(topic, key)
            channels[key] = self._channel(topic, key)
        for origin in t.streams:
            if origin.dead_letter:
                key = self.dlq_key[origin.name]
                messages[key] = self._dead_letter_message(origin)
                channels[key] = self._dead_letter_channel(origin, key)
        doc["channels"] = channels
        doc["operations"] = self._operations()
        schemas["EventHeaders"] = self._event_headers()
        if self.dlq_key:
            schemas["DeadLetterHeaders"] = self._dead_letter_headers()
        doc["components"] = {"schemas": schemas, "messages": messages}
        doc["x-jetstream"] = {"streams": {s.name: _stream_settings(s) for s in t.streams}}
        return AsyncApiDocument(doc, tuple(self.warnings))

    def _info(self, doc_version: str | None) -> dict[str, Any]:
        t = self.t
        description = (t.description or f"The event bus of `{t.name}`.").strip()
        env = f" (environment `{t.environment}`)" if t.environment else ""
        info: dict[str, Any] = {
            "title": t.name,
            "version": doc_version or t.fingerprint,
            "description": f"{description}\n\nGenerated by `natstopo asyncapi` from topology "
            f"`{t.name}`{env}, fingerprint `{t.fingerprint}`. Every message is a JSON "
            "envelope whose `data` follows the topic's payload schema.",
            "x-natstopo": {
                "topology": t.name,
                "environment": t.environment,
                "fingerprint": t.fingerprint,
                "format_version": t.version,
            },
        }
        return info

    def _servers(self, specs: Sequence[str]) -> dict[str, Any]:
        base = self.t.environment or "nats"
        out: dict[str, Any] = {}
        for i, spec in enumerate(specs, 1):
            name, server = parse_server(spec, base if len(specs) == 1 else f"{base}-{i}")
            if name in out:
                raise SetupError(f"two servers are named `{name}`: name them NAME=URL")
            if "@" in spec.partition("://")[2].split("/")[0]:
                self.warn(f"server `{name}`: the credentials in its URL are left out")
            if self.t.environment:
                server["tags"] = [{"name": f"env:{self.t.environment}"}]
            out[name] = server
        return out

    # -- channels and messages -----------------------------------------------------------
    def _address(self, subject: str, what: str) -> tuple[str | None, dict[str, Any]]:
        """The channel address of a subject, `*` tokens as `{tokenN}` parameters."""
        if "{" in subject or "}" in subject:
            # AsyncAPI reads braces as parameters and has no escape for them.
            self.warn(
                f"{what}: subject `{subject}` holds `{{` or `}}`, which AsyncAPI reads as a "
                "parameter: its address is left unknown (null); x-jetstream.subject has it"
            )
            return None, {}
        params: dict[str, Any] = {}
        tokens = subject.split(".")
        for i, tok in enumerate(tokens):
            if tok == "*":
                name = f"token{len(params) + 1}"
                params[name] = {
                    "description": f"Subject token {i + 1} of `{subject}` (a `*`): the "
                    "publisher gives it (`publish(topic, payload, tokens=[...])`); a consumer "
                    "of the topic receives every value."
                }
                tokens[i] = "{" + name + "}"
        return ".".join(tokens), params

    def _channel(self, topic: Topic, key: str) -> dict[str, Any]:
        stream = self.t.stream(topic.stream)
        address, params = self._address(topic.subject, f"topic `{topic.name}`")
        channel: dict[str, Any] = {"address": address, "title": topic.name}
        if topic.description:
            channel["description"] = topic.description
        channel["messages"] = {key: {"$ref": f"#/components/messages/{key}"}}
        if params:
            channel["parameters"] = params
        jetstream: dict[str, Any] = {"stream": stream.name, "subject": topic.subject}
        jetstream.update(_stream_settings(stream, with_subjects=False))
        if stream.dead_letter:
            dlq = self.t.stream(stream.dead_letter)
            jetstream["dead_letter"] = {
                "stream": dlq.name,
                "subject": dlq.dead_letter_subject(stream.name, topic.subject),
            }
        if topic.deprecated:
            jetstream["deprecated"] = True
        channel["x-jetstream"] = jetstream
        return channel

    def _message(self, topic: Topic, key: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "name": topic.name,
            "title": topic.name,
            "contentType": CONTENT_TYPE,
            "headers": {"$ref": "#/components/schemas/EventHeaders"},
            "payload": {"$ref": f"#/components/schemas/{key}.envelope"},
        }
        summary = topic.description or ""
        if topic.deprecated:
            summary = f"Deprecated: publishers should stop. {summary}".strip()
        if summary:
            message["summary"] = summary
        message["x-natstopo"] = {
            "topic": topic.name,
            "schema_file": topic.schema_file,
            "schema_digest": topic.schema_digest,
            "publishers": list(topic.publishers),
        }
        return message

    def _envelope(self, topic: Topic, key: str) -> dict[str, Any]:
        data: dict[str, Any] = (
            {"$ref": f"#/components/schemas/{key}"}
            if topic.schema is not None
            else {"type": "object", "description": "No payload schema is declared: any object."}
        )
        return {
            "type": "object",
            "description": f"The envelope of each `{topic.name}` event; `data` is its payload.",
            "required": [f for f in ENVELOPE_FIELDS if f not in OPTIONAL_FIELDS],
            "properties": {
                "event_id": {
                    "type": "string",
                    "description": "A ULID, or an id the publisher derived from its input "
                    "(a re-run then publishes the same id); also the `Nats-Msg-Id` header.",
                },
                "topic": {"type": "string", "const": topic.name},
                "occurred_at": {"type": "string", "format": "date-time"},
                "actor": {"type": "string", "description": "The service or user that caused it."},
                "tenant_id": {"type": "string", "description": "The tenant it belongs to."},
                "trace_id": {
                    "type": ["string", "null"],
                    "description": "Correlation id; also sent as the `traceparent` header.",
                },
                "schema": {
                    "type": ["string", "null"],
                    "description": "The digest of the payload schema the publisher checked "
                    "`data` against (`x-natstopo.schema_digest` of the message; null: none), "
                    "so a consumer on another schema version can tell skew from a bad payload.",
                },
                "data": data,
            },
        }

    def _payload_schema(self, topic: Topic, key: str) -> Any:
        if topic.schema is None:
            return {"type": "object", "description": "No payload schema is declared."}
        converter = _SchemaConverter(
            f"#/components/schemas/{key}",
            f"topic `{topic.name}`: payload schema `{topic.schema_file}`",
            self.warn,
        )
        return converter.convert(topic.schema, "")

    def _event_headers(self) -> dict[str, Any]:
        return {
            "type": "object",
            "required": [MSG_ID_HEADER],
            "properties": {
                MSG_ID_HEADER: {
                    "type": "string",
                    "description": "The event_id: within the stream's `duplicate_window` the "
                    "server stores a retried publish once.",
                },
                TRACEPARENT_HEADER: {
                    "type": "string",
                    "pattern": _TRACEPARENT_PATTERN,
                    "description": "W3C Trace Context, set when the event has a trace_id.",
                },
            },
        }

    def _dead_letter_headers(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            MSG_ID_HEADER: {
                "type": "string",
                "description": "`<stream>:<sequence>`: one dead letter per stream message.",
            }
        }
        props.update(
            {h: {"type": "string", "description": d} for h, d in DEAD_LETTER_HEADERS.items()}
        )
        props[TRACEPARENT_HEADER] = {"type": "string", "pattern": _TRACEPARENT_PATTERN}
        required = [h for h in props if h not in ("Natstopo-Msg-Id", TRACEPARENT_HEADER)]
        return {
            "type": "object",
            "description": "The original message's headers, with these added.",
            "required": required,
            "properties": props,
        }

    def _dead_letter_channel(self, origin: Stream, key: str) -> dict[str, Any]:
        dlq = self.t.stream(origin.dead_letter or "")
        subject = dlq.dead_letter_subject(origin.name, ">")
        address, params = self._address(
            subject.removesuffix(".>"), f"dead letters of stream `{origin.name}`"
        )
        channel: dict[str, Any] = {
            "address": f"{address}.{{original_subject}}" if address is not None else None,
            "title": f"dead letters of {origin.name}",
            "description": f"Messages of stream `{origin.name}` that exhausted their deliveries, "
            f"kept in `{dlq.name}` under `{subject}` (the original subject, all its tokens, "
            "after the prefix) for inspection and `natstopo dlq replay`.",
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        if address is not None:
            params["original_subject"] = {
                "description": "The subject the message was published on, e.g. "
                f"`{origin.topics[0].subject if origin.topics else origin.subject_prefix + '.x'}`"
                " (several tokens)."
            }
            channel["parameters"] = params
        jetstream: dict[str, Any] = {"stream": dlq.name, "subject": subject, "origin": origin.name}
        jetstream.update(_stream_settings(dlq, with_subjects=False))
        channel["x-jetstream"] = jetstream
        return channel

    def _dead_letter_message(self, origin: Stream) -> dict[str, Any]:
        envelopes = [
            {"$ref": f"#/components/schemas/{self.topic_key[t.name]}.envelope"}
            for t in origin.topics
        ]
        payload: dict[str, Any]
        if len(envelopes) > 1:
            payload = {"oneOf": envelopes}
        elif envelopes:
            payload = envelopes[0]
        else:
            payload = {"description": "The original message body, as it was published."}
        return {
            "name": f"dead-letter.{origin.name}",
            "title": f"dead letter of {origin.name}",
            "summary": "The original message, body unchanged, with where and why it failed "
            "in the headers.",
            "contentType": CONTENT_TYPE,
            "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
            "payload": payload,
        }

    # -- operations ----------------------------------------------------------------------
    def _operations(self) -> dict[str, Any]:
        ops: dict[str, Any] = {}
        by_service: dict[str, list[tuple[str, dict[str, Any]]]] = {
            s.name: [] for s in self.t.services
        }
        for topic in self.t.topics:
            key = self.topic_key[topic.name]
            for svc in topic.publishers:
                by_service.setdefault(svc, []).append(
                    (
                        f"{svc}.send.{key}",
                        self._op("send", svc, key, f"`{svc}` publishes `{topic.name}`."),
                    )
                )
        for stream in self.t.streams:
            for c in stream.consumers:
                for key, title in self._consumer_channels(stream, c):
                    op = self._op(
                        "receive",
                        c.service,
                        key,
                        f"`{c.service}` receives {title} "
                        f"through consumer `{stream.name}/{c.name}`.",
                    )
                    op["x-jetstream"] = _consumer_settings(c)
                    by_service.setdefault(c.service, []).append((f"{c.name}.receive.{key}", op))
        for origin in self.t.streams:
            if not origin.dead_letter:
                continue
            key = self.dlq_key[origin.name]
            for svc in _unique(c.service for c in origin.consumers):
                consumers = [c.name for c in origin.consumers if c.service == svc]
                op = self._op(
                    "send",
                    svc,
                    key,
                    f"The bus runtime of `{svc}` moves a message of `{origin.name}` here when "
                    "its deliveries are exhausted or the handler refuses it.",
                )
                op["x-jetstream"] = {"stream": origin.name, "consumers": consumers}
                by_service[svc].append((f"{svc}.send.{key}", op))
        for entries in by_service.values():
            ops.update(entries)
        return ops

    def _consumer_channels(self, stream: Stream, c: Consumer) -> list[tuple[str, str]]:
        if c.topics:
            return [(self.topic_key[name], f"`{name}`") for name in c.topics]
        out = [(self.topic_key[t.name], f"`{t.name}`") for t in stream.topics]
        out += [
            (self.dlq_key[src], f"dead letters of `{src}`")
            for src in stream.dead_letter_sources
            if src in self.dlq_key
        ]
        return out

    def _op(self, action: str, service: str, channel_key: str, text: str) -> dict[str, Any]:
        msg_key = channel_key  # each channel carries one message, keyed like the channel
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_key}"},
            "summary": text,
            "messages": [{"$ref": f"#/channels/{channel_key}/messages/{msg_key}"}],
            "tags": [{"name": service}],
            "x-natstopo-service": service,
        }


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _units(field: str, value: Any) -> Any:
    if field in DURATION_FIELDS:
        if isinstance(value, tuple):
            return [format_duration(v) for v in value]
        return format_duration(value)
    if field in SIZE_FIELDS:
        return format_size(value)
    return list(value) if isinstance(value, tuple) else value


def _stream_settings(s: Stream, *, with_subjects: bool = True) -> dict[str, Any]:
    """The stream's settings that the topology sets, in its units (None = server default).

    Without `with_subjects` (a channel's copy) the subjects, the description and the
    dead-letter links are left to the root's `x-jetstream.streams`.
    """
    out: dict[str, Any] = {}
    if with_subjects:
        out["subject_prefix"] = s.subject_prefix
        out["subjects"] = list(s.subjects)
    out.update(
        {
            k: _units(k, v)
            for k, v in s.settings().items()
            if v is not None and (with_subjects or k != "description")
        }
    )
    if s.metadata:
        out["metadata"] = dict(s.metadata)
    if with_subjects and s.dead_letter:
        out["dead_letter"] = s.dead_letter
    if with_subjects and s.dead_letter_sources:
        out["dead_letter_sources"] = list(s.dead_letter_sources)
    return out


def _consumer_settings(c: Consumer) -> dict[str, Any]:
    out: dict[str, Any] = {"stream": c.stream, "consumer": c.name, "durable": True}
    if c.filter_subjects:
        out["filter_subjects"] = list(c.filter_subjects)
    out.update({k: _units(k, v) for k, v in c.settings().items() if v is not None})
    if c.metadata:
        out["metadata"] = dict(c.metadata)
    out["fetch_batch"] = c.fetch_batch
    out["concurrency"] = c.concurrency
    return out


# -- payload schemas ----------------------------------------------------------------------
# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_SUB_SCHEMA = frozenset(
    {
        "items",
        "additionalItems",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAP = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
# Keywords of drafts after 07 with no draft-07 spelling: AsyncAPI tools ignore them.
_NO_DRAFT_07 = frozenset(
    {
        "unevaluatedItems",
        "unevaluatedProperties",
        "minContains",
        "maxContains",
        "$dynamicRef",
        "$recursiveRef",
        "contentSchema",
    }
)
_DROPPED_QUIETLY = frozenset({"$schema"})  # the document's own dialect replaces it
_DROPPED = frozenset({"$id", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$vocabulary"})


class _SchemaConverter:
    """One payload schema -> AsyncAPI's schema dialect, its `$ref`s pointing into the document."""

    def __init__(self, base: str, what: str, warn: Callable[[str], None]) -> None:
        self.base = base
        self.what = what
        self.warn = warn

    def note(self, pointer: str, text: str) -> None:
        self.warn(f"{self.what} at `{pointer or '/'}`: {text}")

    def convert(self, node: Any, pointer: str) -> Any:
        if isinstance(node, bool) or not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for k, v in node.items():
            here = f"{pointer}/{k}"
            if k in _DROPPED_QUIETLY:
                continue
            if k in _DROPPED:
                self.note(here, f"`{k}` is left out (the schema is embedded in the document)")
                continue
            if k in _NO_DRAFT_07:
                self.note(
                    here,
                    f"`{k}` has no JSON Schema draft-07 spelling (AsyncAPI's dialect): kept, "
                    "but AsyncAPI tools ignore it",
                )
            if k == "$ref" and isinstance(v, str):
                continue  # below, after the siblings
            if k in _SCHEMA_MAP and isinstance(v, Mapping):
                out[k] = {name: self.convert(sub, f"{here}/{name}") for name, sub in v.items()}
            elif k in _SCHEMA_LIST and isinstance(v, list):
                out[k] = [self.convert(sub, f"{here}/{i}") for i, sub in enumerate(v)]
            elif k in _SUB_SCHEMA:
                if isinstance(v, list):  # draft-07 tuple form of `items`
                    out[k] = [self.convert(sub, f"{here}/{i}") for i, sub in enumerate(v)]
                else:
                    out[k] = self.convert(v, here)
            else:
                out[k] = v
        self._to_draft_07(out, pointer)
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self._ref(ref, f"{pointer}/$ref")
            if not out:
                return target
            # In draft-07 the siblings of `$ref` are ignored: keep them in effect with allOf.
            out["allOf"] = [target, *out.get("allOf", [])]
        return out

    def _to_draft_07(self, out: dict[str, Any], pointer: str) -> None:
        if "prefixItems" in out:
            prefix = out.pop("prefixItems")
            rest = out.pop("items", None)
            out["items"] = prefix
            if rest is not None:
                out["additionalItems"] = rest
        deps: dict[str, Any] = {}
        if "dependentRequired" in out:
            deps.update(out.pop("dependentRequired"))
        if "dependentSchemas" in out:
            deps.update(out.pop("dependentSchemas"))
        if deps:
            out["dependencies"] = deps
        # draft-04 wrote exclusive bounds as booleans beside minimum/maximum
        for excl, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(out.get(excl), bool) and out.pop(excl) and bound in out:
                out[excl] = out.pop(bound)

    def _ref(self, ref: str, pointer: str) -> dict[str, Any]:
        if ref == "#" or ref.startswith("#/"):
            return {"$ref": self.base + ref[1:]}
        self.note(
            pointer,
            f"`$ref: {ref}` is not a reference inside the schema (a file, a URL or an anchor): "
            "it is not resolved here and is written as an unconstrained schema",
        )
        return {"description": f"Unresolved reference `{ref}` of the payload schema."}

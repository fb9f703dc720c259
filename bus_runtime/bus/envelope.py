"""The event envelope: what an event looks like on the wire.

Every event is one JSON object (the envelope) carrying the source document's
`EventPayload` fields plus the event's identity:

    {"event_id": "01J...", "topic": "document.uploaded", "occurred_at": "2026-11-29T08:15:14.123Z",
     "actor": "svc-ingestion", "tenant_id": "t-1", "trace_id": "4bf9...", "data": {...}}

The bus's publisher adds `"schema"` before `data`: the digest of the JSON Schema it checked
`data` against (null when the topic has none), so that a consumer whose own schema refuses
the data can tell a publisher of another schema version (a rolling deploy) from a payload
that is wrong by the very schema its publisher used.

Headers: `Nats-Msg-Id` is the event_id (the server's duplicate window makes a retried
publish idempotent) and `traceparent` (W3C Trace Context) is set when a trace_id is present.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .._errors import InvalidEnvelopeError

MSG_ID_HEADER = "Nats-Msg-Id"
TRACEPARENT_HEADER = "traceparent"
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


# allow_nan=False: NaN and Infinity are not JSON; a consumer in another language (or
# json.loads with parse_constant) would refuse the envelope.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_encode_str = json.encoder.encode_basestring  # the C escaper json.dumps uses

# orjson (the `fast` extra), when installed, encodes `data` about 15x and decodes an
# envelope about 4x faster than the stdlib. It must not change what is accepted: it
# writes NaN as null and encodes UUIDs, enums, datetimes and dataclasses that the stdlib
# refuses. So it encodes only data made of plain JSON types (str, int, bool, None, floats
# of 1e-4 to 1e16 in size or 0: outside, the two write exponents differently; lists,
# tuples and dicts of them; anything else takes the stdlib, which then encodes or
# refuses as always), and any value orjson itself refuses (non-string keys,
# integers over 64 bits, lone surrogates) goes to the stdlib too. On decoding, orjson is
# the stricter parser (only UTF-8, no NaN literals, no lone surrogates): whatever it
# refuses, and every envelope holding a float (orjson reads an integer beyond 64 bits as
# one), is decoded by the stdlib, which accepts or refuses exactly as before.
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the runtime's three dependencies alone
    _orjson = None  # type: ignore[assignment]
_SMALL, _BIG = 1e-4, 1e16  # the floats both write alike (as repr: no exponent)


def _plain(obj: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int = 0) -> bool:
    """True when the dict, list or tuple `obj` holds only types that orjson encodes exactly
    as the stdlib (written out flat: this runs once per publish)."""
    if type(obj) is dict:
        for k in obj:
            if type(k) is not str:
                return False
        values: Any = obj.values()
    else:
        values = obj
    for v in values:
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            continue
        if t is float:
            # NaN and the infinities; and below 1e-4 or from 1e16 on, where the stdlib
            # writes an exponent (`1e-07`) and orjson may not (`1e-7`, `0.000015...`)
            if not (_SMALL <= v < _BIG or -_BIG < v <= -_SMALL or v == 0.0):
                return False
        elif t is dict or t is list or t is tuple:
            if depth >= 64 or not _plain(v, depth + 1):
                return False
        else:
            return False
    return True


def _has_float(obj: dict[Any, Any] | list[Any], depth: int = 0) -> bool:
    """True when a decoded dict or list holds a float (or is nested too deeply to tell)."""
    for v in obj.values() if type(obj) is dict else obj:
        t = type(v)
        if t is str or t is int or v is None:
            continue  # most values of an envelope: one test instead of three
        if t is float:
            return True
        if (t is dict or t is list) and (depth >= 64 or _has_float(v, depth + 1)):
            return True
    return False


if _orjson is not None:
    _orjson_dumps = _orjson.dumps
    _orjson_loads = _orjson.loads
    _OrjsonError = _orjson.JSONEncodeError

    def _encode_data(data: Any) -> bytes:
        if _plain(data):
            try:
                return _orjson_dumps(data)
            except _OrjsonError:
                pass  # a big integer, a lone surrogate: the stdlib decides
        return _ENCODER.encode(data).encode()

    def _loads(body: bytes) -> Any:
        try:
            value = _orjson_loads(body)
        except ValueError:
            return json.loads(body)  # accepts or refuses as it always did
        if type(value) is dict and _has_float(value):
            # orjson reads an integer beyond 64 bits as a float, the stdlib as an exact int
            return json.loads(body)
        return value

else:

    def _encode_data(data: Any) -> bytes:
        return _ENCODER.encode(data).encode()

    _loads = json.loads


def schema_field(digest: str | None) -> str:
    """The envelope's `schema` member with its leading comma: the digest, or null when the
    topic has no schema (the publisher checked nothing)."""
    return f',"schema":{_encode_str(digest)}' if digest else ',"schema":null'


def encode_envelope(topic: str, payload: EventPayload, schema: str = "") -> bytes:
    """The envelope's JSON bytes (field order as documented).

    Written field by field (each string escaped as json.dumps would) instead of building a
    dict for json.dumps: this runs once per publish. `schema` is `schema_field(digest)`.

    Raises:
        TypeError: A field is not a string, or `data` holds something JSON cannot encode.
        ValueError: `data` holds NaN or an infinity, or a string that is not valid UTF-8.
    """
    trace = payload.trace_id
    return (
        (
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
            + schema
            + ',"data":'
        ).encode()
        + _encode_data(payload.data)
        + b"}"
    )


def decode_envelope(body: bytes) -> tuple[str, EventPayload]:
    """The topic name and payload of an envelope.

    Raises:
        InvalidEnvelopeError: The body is not JSON, not an object, or misses a field.
    """
    topic, payload, _schema = decode_stamped_envelope(body)
    return topic, payload


def decode_stamped_envelope(body: bytes) -> tuple[str, EventPayload, str | None]:
    """The topic name, payload and `schema` member of an envelope.

    The third value is the digest; "" when the member is null (its publisher's topic had
    no schema); None when the member is absent (not published by this version of the bus).

    Raises:
        InvalidEnvelopeError: The body is not JSON, not an object, or misses a field.
    """
    try:
        env = _loads(body)
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
    if type(payload.data) is not dict:
        raise InvalidEnvelopeError(
            "bad-field", f"envelope `data` must be a JSON object, got {type(payload.data).__name__}"
        )
    if "schema" not in env:
        return topic, payload, None
    schema = env["schema"]
    return topic, payload, schema if type(schema) is str else ""


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
    # The parent-id (span) is unique, not secret: the ULID's PRNG bits (a syscall per
    # event cost more than the rest of this function); all zeros is invalid in W3C.
    return f"{prefix}{_randbits(64) or 1:016x}-01"

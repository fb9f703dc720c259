"""The envelope, event ids, trace context and payload schema checks (no server needed)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus_runtime import EventPayload, InvalidEnvelopeError, load_topology, new_event_id
from bus_runtime.bus.binding import PayloadSchema, compile_payload_check
from bus_runtime.bus.envelope import (
    decode_envelope,
    encode_envelope,
    now_rfc3339,
    traceparent_for,
    ulid_time_ms,
)

REPO = Path(__file__).resolve().parent.parent
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def test_event_ids_are_ulids_in_time_order() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert all(ULID.match(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert all(before <= ulid_time_ms(i) <= after for i in ids)
    later = new_event_id()
    time.sleep(0.002)
    assert new_event_id()[:10] > later[:10]  # the time part sorts
    # 48-bit time: the known ULID of the spec's example time decodes back
    assert ulid_time_ms("01ARZ3NDEKTSV4RRFFQ69G5FAV") == 1469922850259


def test_occurred_at_is_rfc3339_utc_with_milliseconds() -> None:
    before = time.time()
    stamp = now_rfc3339()
    after = time.time()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    # The clock's time now, in UTC, to the millisecond (truncated: up to 1 ms early).
    assert before - 0.001 <= parsed.timestamp() <= after


def test_envelope_round_trip_and_field_order() -> None:
    p = EventPayload(data={"n": 1, "é": "ü"}, actor="svc-a", tenant_id="t-1", trace_id="tr")
    body = encode_envelope("job.created", p)
    assert list(json.loads(body)) == [
        "event_id",
        "topic",
        "occurred_at",
        "actor",
        "tenant_id",
        "trace_id",
        "data",
    ]
    assert decode_envelope(body) == ("job.created", p)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not-json"),
        (b"[1, 2]", "not-an-object"),
        (b'{"topic": "a"}', "missing-field"),
        (
            b'{"event_id": 5, "topic": "a", "occurred_at": "", "actor": "", "tenant_id": "", "data": {}}',
            "bad-field",
        ),
    ],
)
def test_invalid_envelopes_name_their_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidEnvelopeError) as ei:
        decode_envelope(body)
    assert ei.value.reason == reason


def test_traceparent() -> None:
    tp = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
    a, b = traceparent_for("trace-789"), traceparent_for("trace-789")
    assert tp.match(a) and tp.match(b)
    assert a[:36] == b[:36] and a != b  # same trace, fresh span
    hex_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert traceparent_for(hex_id.upper()).startswith(f"00-{hex_id}-")
    full = f"00-{hex_id}-00f067aa0ba902b7-01"
    assert traceparent_for(full) == full
    assert not traceparent_for("0" * 32).startswith("00-" + "0" * 32)  # all-zero is invalid


def _shipped_schemas() -> list[tuple[str, dict[str, Any]]]:
    return [
        (p.name, json.loads(p.read_text()))
        for p in sorted((REPO / "topology" / "schemas").glob("*.json"))
    ]


@pytest.mark.parametrize(("name", "schema"), _shipped_schemas())
def test_every_shipped_schema_compiles_to_a_generated_check(
    name: str, schema: dict[str, Any]
) -> None:
    compile_payload_check(schema)


def test_unknown_keywords_fall_back_to_jsonschema() -> None:
    with pytest.raises(ValueError, match="not compiled: \\$ref"):
        compile_payload_check({"$ref": "other.json#/x"})
    for inverting in ({"not": {"type": "integer"}}, {"oneOf": [{}, {}]}):
        with pytest.raises(ValueError, match="not compiled"):
            compile_payload_check(inverting)
    schema = PayloadSchema("t", {"dependentRequired": {"a": ["b"]}})
    assert schema.check({"a": 1, "b": 2}) and not schema.check({"a": 1})


def test_refusal_names_the_failing_path() -> None:
    topology = load_topology(REPO / "topology" / "topology.yaml", "local")
    topic = topology.topic("document.uploaded")
    assert topic.schema is not None
    schema = PayloadSchema(topic.name, topic.schema)
    err = schema.error({"document_id": "lower-case-is-not-a-ulid"})
    assert err is not None
    assert "document.uploaded" in str(err)


# -- the generated check never says yes where jsonschema says no -----------------------------
SAMPLE_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "required": ["a"],
        "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 10},
            "b": {"type": "string", "pattern": "^x+$", "minLength": 1, "maxLength": 3},
            "c": {"enum": ["p", "q", None, True]},
            "d": {"type": "array", "items": {"type": "number"}, "minItems": 1, "uniqueItems": True},
            "e": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "f": {"type": ["boolean", "object"], "additionalProperties": False},
        },
        "additionalProperties": {"type": "string"},
    },
    {"type": "array", "maxItems": 2, "items": {"enum": [3, 1.5, False, "x"]}},
    {"anyOf": [{"type": "integer"}, {"exclusiveMinimum": 5}], "format": "ignored"},
    {"allOf": [{"minProperties": 1}, {"maxProperties": 2}]},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-20, 20)
    | st.floats(-20, 20, allow_nan=False)
    | st.sampled_from(["", "x", "xx", "xxxx", "p", "q", "y"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(list("abcdefg")), inner, max_size=5)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(value=json_values, which=st.integers(0, len(SAMPLE_SCHEMAS) - 1))
def test_generated_check_agrees_with_jsonschema(value: Any, which: int) -> None:
    schema = SAMPLE_SCHEMAS[which]
    check = compile_payload_check(schema)
    valid = jsonschema.Draft202012Validator(schema).is_valid(value)
    if check(value):
        assert valid, f"generated check accepted what jsonschema refuses: {value!r}"


@settings(max_examples=200, deadline=None)
@given(
    value=st.fixed_dictionaries(
        {"a": st.integers(0, 10)},
        optional={"b": st.sampled_from(["x", "xx"]), "c": st.sampled_from(["p", "q"])},
    )
)
def test_generated_check_accepts_plain_valid_payloads(value: Any) -> None:
    assert compile_payload_check(SAMPLE_SCHEMAS[0])(value)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=20),
    trace=st.none() | st.text(max_size=10),
    data=st.dictionaries(st.text(max_size=5), json_values, max_size=4),
)
def test_envelope_is_the_json_of_its_fields(
    text: str, trace: str | None, data: dict[str, Any]
) -> None:
    p = EventPayload(data=data, actor=text, tenant_id=text[::-1], trace_id=trace, event_id=text)
    env = json.loads(encode_envelope(text, p))
    assert env == {
        "event_id": text,
        "topic": text,
        "occurred_at": p.occurred_at,
        "actor": text,
        "tenant_id": text[::-1],
        "trace_id": trace,
        "data": data,
    }


def test_data_that_is_not_json_is_refused(tmp_path: Path) -> None:
    import datetime

    from test_runtime_support import write_topology

    from bus_runtime import PayloadValidationError
    from bus_runtime.bus.binding import ServiceBinding

    binding = ServiceBinding(load_topology(write_topology(tmp_path)), "svc-a")
    bad = EventPayload(data={"n": 1, "when": datetime.date(2026, 1, 1)}, actor="a", tenant_id="t")
    with pytest.raises(PayloadValidationError, match="not JSON"):
        binding.prepare("job.created", bad)
    with pytest.raises(PayloadValidationError, match="not JSON"):
        binding.prepare("job.created", EventPayload({"n": 1}, actor=5, tenant_id="t"))  # type: ignore[arg-type]


def test_retry_delays_and_heartbeat_follow_the_consumer() -> None:
    from bus_runtime.bus.delivery import DEFAULT_RETRY_DELAYS, heartbeat_after, retry_delay
    from bus_runtime.topology.model import Consumer

    declared = Consumer(
        "c", "S", "svc", backoff=(1_000_000_000, 5_000_000_000), ack_wait=60 * 10**9
    )
    assert [retry_delay(declared, n) for n in (1, 2, 3, 9)] == [1.0, 5.0, 5.0, 5.0]
    assert heartbeat_after(declared) == 0.5  # half the shortest deadline
    plain = Consumer("c", "S", "svc")
    assert [retry_delay(plain, n) for n in (1, 2, 99)] == [
        DEFAULT_RETRY_DELAYS[0],
        DEFAULT_RETRY_DELAYS[1],
        DEFAULT_RETRY_DELAYS[-1],
    ]
    assert heartbeat_after(plain) == 15.0  # the server's default ack_wait is 30 s


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=3000) | st.text(alphabet="é✓\x00\r\n\t \udcff z", max_size=3000))
def test_an_error_header_is_one_printable_line_of_at_most_1_kib(text: str) -> None:
    from bus_runtime.bus.delivery import header_safe

    value = header_safe(text)
    raw = value.encode("utf-8")  # encodable: a lone surrogate became `?`
    assert len(raw) <= 1024
    assert not any(ord(c) < 32 or ord(c) == 127 for c in value)
    assert value == " ".join(value.split())  # no runs of white space, nothing around it


def test_an_error_header_is_cut_by_bytes_not_characters() -> None:
    from bus_runtime.bus.delivery import header_safe

    value = header_safe("bad\r\nX-Injected: yes\x00 é✓ " + "z" * 5000)
    assert value.startswith("bad X-Injected: yes é✓ zzz") and value.endswith("...")
    assert len(value.encode()) == 1024
    assert len(header_safe("é" * 2000).encode()) <= 1024  # never half a character

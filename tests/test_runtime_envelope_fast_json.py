"""The envelope's optional orjson path (the `fast` extra) accepts, refuses and writes what
the stdlib path does: every value below is encoded and decoded both ways and compared."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus_runtime.bus import envelope
from bus_runtime.bus.envelope import EventPayload

orjson = pytest.importorskip("orjson")


class Colour(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 2


class Name(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


VALUES: list[Any] = [
    "plain",
    "ünïcödé \u2028 \x7f",
    'quote " backslash \\ newline \n tab \t nul \x00',
    0,
    -1,
    2**63 - 1,
    2**64,
    2**70,
    -(2**70),
    True,
    None,
    0.1,
    -0.0,
    1e16,
    1.5e-300,
    # below 1e-4 and from 1e16 on the stdlib writes an exponent its own way (1e-07)
    1e-07,
    2.5e-06,
    1.5212603486793025e-05,
    9.999999999999999e-05,
    1e-4,
    -1e-05,
    5e-324,
    1.7976931348623157e308,
    1e22,
    9999999999999998.0,
    123456789012345.6,
    float("nan"),
    float("inf"),
    -float("inf"),
    [1, "a", None, [2.5, {"k": "v"}]],
    (1, 2),
    {"nested": {"deeper": [1, {"x": None}]}},
    {1: "int key"},
    {True: "bool key"},
    {None: "none key"},
    {2.5: "float key"},
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Colour.RED,
    Level.HIGH,
    Name("sub"),
    Point(1),
    datetime.datetime(2026, 1, 1),
    datetime.date(2026, 1, 1),
    "\ud800",
    b"bytes",
    {1, 2},
]


def _nest(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


def _stdlib(data: dict[str, Any]) -> bytes | str:
    try:
        return envelope._ENCODER.encode(data).encode()
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _fast(data: dict[str, Any]) -> bytes | str:
    try:
        return envelope._encode_data(data)
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("value", [*VALUES, _nest(70), _nest(10)], ids=repr)
def test_data_encodes_or_refuses_as_the_stdlib(value: Any) -> None:
    data = {"v": value}
    assert _fast(data) == _stdlib(data)


@settings(max_examples=3000, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", bits.to_bytes(8, "little"))[0])
)
def test_any_float_encodes_as_the_stdlib(value: float) -> None:
    data = {"v": value, "l": [value, -value]}
    assert _fast(data) == _stdlib(data)


def test_whole_envelope_is_the_same_bytes() -> None:
    p = EventPayload(data={"a": 1, "b": ["x", None]}, actor="svc", tenant_id="t", trace_id=None)
    fast = envelope.encode_envelope("topic.a", p, envelope.schema_field("abc"))
    expected = (
        '{"event_id":' + json.dumps(p.event_id) + ',"topic":"topic.a","occurred_at":'
        + json.dumps(p.occurred_at) + ',"actor":"svc","tenant_id":"t","trace_id":null,'
        '"schema":"abc","data":{"a":1,"b":["x",null]}}'
    ).encode()  # fmt: skip
    assert fast == expected


BODIES = [
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": 123456789012345678901234567890}',
    b'{"a": "\\ud800"}',
    b'{"a": 1, "a": 2}',
    b'{"a": 1e400}',
    b'{"a": -0}',
    b'{"a": -0.0}',
    '{"a": "é"}'.encode("utf-16"),
    b'{"a": "\xff"}',
    b"not json",
    b"",
    b"[1, 2]",
    b' {"a": [1, {"b": null}]} ',
]


@pytest.mark.parametrize("body", BODIES, ids=repr)
def test_decoding_accepts_or_refuses_as_the_stdlib(body: bytes) -> None:
    def outcome(loads: Any) -> Any:
        try:
            return ("ok", repr(loads(body)))
        except (ValueError, UnicodeDecodeError) as exc:
            return ("error", type(exc).__name__)

    assert outcome(envelope._loads) == outcome(json.loads)

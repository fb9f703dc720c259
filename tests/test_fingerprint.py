"""The topology's fingerprint is the same bytes with or without orjson.

A pod compares the fingerprint of the file it loaded with the one the deployment computed,
on another host that may not have the `fast` extra: `fingerprint_json` must write exactly
the stdlib's sorted, compact, ASCII-only JSON, whichever encoder it used.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus_runtime.topology import model
from bus_runtime.topology.loader import load_topology
from bus_runtime.topology.model import Location as Loc
from bus_runtime.topology.model import fingerprint_json

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "topology" / "topology.yaml"

orjson = pytest.importorskip("orjson")


def stdlib(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# Any text, lone surrogates and DEL included (a YAML "\ud800" or "\x7f" is one).
texts = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["", "a.b", "\x7f", "\ud800", "é", "\u2028", "\x00\x1f", '"\\/']
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**65),  # beyond 64 bits: orjson refuses
    texts,
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def test_the_installed_orjson_is_used() -> None:
    # Otherwise the property below would compare the stdlib with itself.
    assert model._orjson_dumps() is not None


@settings(max_examples=500, deadline=None)
@given(values)
def test_fingerprint_json_writes_the_stdlibs_bytes(value: Any) -> None:
    assert fingerprint_json({"v": value}) == stdlib({"v": value})


def numbers_and_texts_only(value: Any, path: str = "") -> list[str]:
    """Where `value` holds something else than str, int, bool, None, list or dict."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in numbers_and_texts_only(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in numbers_and_texts_only(v, f"{path}[{i}]")]
    return [] if value is None or type(value) in (str, int, bool) else [f"{path}: {value!r}"]


@pytest.mark.parametrize("env", [None, "dev", "staging", "prod", "local"])
def test_the_model_holds_no_floats(env: str | None) -> None:
    # orjson and the stdlib write some floats differently; the model's numbers are integers.
    topology = load_topology(SHIPPED, env)
    assert numbers_and_texts_only(topology.to_dict()) == []
    assert topology.fingerprint == hashlib.sha256(stdlib(topology.to_dict())).hexdigest()[:16]


class Name(str):
    pass


@pytest.mark.parametrize(
    "value",
    [Name("a"), [Name("é")], {"k": Name("\x7f")}],
)
def test_a_subclass_of_str_is_written_as_the_stdlib_writes_it(value: Any) -> None:
    assert fingerprint_json({"v": value}) == stdlib({"v": value})


@pytest.mark.parametrize(
    "value",
    [datetime.date(2026, 12, 1), datetime.datetime(2026, 12, 1, 12, 0), Loc("f", 1, 2)],
)
def test_what_the_stdlib_refuses_is_refused_with_orjson_too(value: Any) -> None:
    with pytest.raises(TypeError):
        stdlib({"v": value})
    with pytest.raises(TypeError):
        fingerprint_json({"v": value})

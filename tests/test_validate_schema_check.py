"""The compiled yes/no schema check never accepts what jsonschema refuses.

Beyond the topology schema (tests/test_properties.py), random small schemas built from the
keywords the compiler handles are checked against random instances, and each keyword has
a few hand-picked cases where Python's and JSON Schema's ideas of equality differ.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus_runtime._errors import PayloadValidationError
from bus_runtime.bus.binding import PayloadSchema
from bus_runtime.topology.json_schema_compiler import Unsupported, compile_check

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([0.0, 1.0, -1.0, 1.5, 2.0]),
    st.sampled_from(["", "a", "ab", "abc", "1s", "A.B", "é"]),
)
instances = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), children, max_size=3),
    ),
    max_leaves=8,
)
types = st.sampled_from(["string", "integer", "number", "boolean", "object", "array", "null"])


def schemas(defs: bool = True) -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.booleans(),
        st.fixed_dictionaries({"type": types | st.lists(types, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"enum": st.lists(json_scalars, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"const": json_scalars}),
        st.fixed_dictionaries({"pattern": st.sampled_from(["^a", "b$", "^[a-c]+$", "s"])}),
        st.fixed_dictionaries({"minimum": st.integers(-2, 2)}),
        st.fixed_dictionaries({"maximum": st.sampled_from([-1, 0, 1, 1.5])}),
        st.fixed_dictionaries({"minLength": st.integers(0, 3)}),
        st.fixed_dictionaries({"maxLength": st.integers(0, 3)}),
        st.fixed_dictionaries({"minItems": st.integers(0, 2)}),
        st.fixed_dictionaries({"minProperties": st.integers(0, 2)}),
        st.fixed_dictionaries({"uniqueItems": st.booleans()}),
        st.fixed_dictionaries({"required": st.lists(st.sampled_from(["a", "b"]), unique=True)}),
    )

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.fixed_dictionaries({"items": children}),
            st.fixed_dictionaries({"not": children}),
            st.fixed_dictionaries({"propertyNames": children}),
            st.fixed_dictionaries(
                {"properties": st.dictionaries(st.sampled_from(["a", "b"]), children, max_size=2)},
                optional={"additionalProperties": children},
            ),
            # Several keywords at once, as the topology schema writes them.
            st.tuples(children, children).map(
                lambda ab: (
                    {**ab[0], **ab[1]}
                    if isinstance(ab[0], dict) and isinstance(ab[1], dict)
                    else ab[0]
                )
            ),
        )

    return st.recursive(leaf, extend, max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(schemas(), st.lists(instances, min_size=1, max_size=5))
def test_compiled_check_never_accepts_what_jsonschema_refuses(schema: Any, docs: list[Any]) -> None:
    try:
        check = compile_check(schema)
    except Unsupported:
        return  # refused to compile (e.g. `not` over an inexact keyword): jsonschema decides
    validator = jsonschema.Draft202012Validator(schema)
    for doc in docs:
        if check(doc):
            assert validator.is_valid(doc), (schema, doc)


@settings(max_examples=100, deadline=None)
@given(schemas(), st.lists(instances, min_size=1, max_size=5))
def test_compiled_check_through_defs(schema: Any, docs: list[Any]) -> None:
    root = {"$defs": {"x": schema}, "properties": {"a": {"$ref": "#/$defs/x"}}}
    try:
        check = compile_check(root)
    except Unsupported:
        return
    validator = jsonschema.Draft202012Validator(root)
    for doc in docs:
        wrapped = {"a": doc}
        if check(wrapped):
            assert validator.is_valid(wrapped), (schema, doc)


@pytest.mark.parametrize(
    ("schema", "doc"),
    [
        ({"enum": [1]}, True),
        ({"enum": [True]}, 1),
        ({"const": 0}, False),
        ({"const": 1}, 1.0),
        ({"type": "integer"}, 1.0),
        ({"type": "integer"}, True),
        ({"type": "number"}, False),
        ({"minimum": 0}, False),
        ({"uniqueItems": True}, [1, True]),
        ({"uniqueItems": True}, [1, 1.0]),
        ({"uniqueItems": True}, [[1], [1]]),
        ({"uniqueItems": True}, [{"a": 1}, {"a": 1}]),
        ({"uniqueItems": True}, [0, False]),
        ({"required": ["a"]}, {"b": 1}),
        ({"propertyNames": {"pattern": "^a"}}, {"b": 1}),
        ({"additionalProperties": False, "properties": {"a": True}}, {"a": 1, "b": 2}),
        ({"not": {"const": 0}}, 0),
        ({"maxLength": 1}, "é"),
        ({"minLength": 2}, "é"),
    ],
)
def test_equality_corner_cases(schema: dict[str, Any], doc: Any) -> None:
    check = compile_check(schema)
    if check(doc):
        assert jsonschema.Draft202012Validator(schema).is_valid(doc)


@pytest.mark.parametrize(
    "schema",
    [
        {"oneOf": [{"type": "string"}]},
        {"not": {"type": "integer"}},
        {"not": {"uniqueItems": True}},
        {"$ref": "#/$defs/missing"},
        {"patternProperties": {"^a": {"type": "string"}}},
        {"$ref": "https://example.com/other.json"},
        {"type": "decimal"},
        {"if": {"type": "string"}, "then": {"minLength": 1}},
    ],
)
def test_unknown_keywords_are_refused_not_ignored(schema: dict[str, Any]) -> None:
    # Ignoring a keyword would accept what it refuses: the caller falls back to jsonschema.
    with pytest.raises(Unsupported):
        compile_check(schema)


# -- what jsonschema refuses is never a yes: references and Python subclasses -------------


class Kind(enum.StrEnum):
    LONG = "much-too-long"
    SHORT = "p60"


class Count(enum.IntEnum):
    BIG = 7


class Items(list[Any]):
    pass


class Name(str):
    pass


REFUSED = [
    # a pointer deeper than `#/$defs/NAME`: it names the integer, not `$defs/x`
    (
        {
            "$defs": {"x": {"type": "string"}, "a": {"properties": {"x": {"type": "integer"}}}},
            "properties": {"v": {"$ref": "#/$defs/a/properties/x"}},
        },
        {"v": "s"},
    ),
    # JSON-pointer escapes: `~1` is `/`, `%20` a space
    (
        {
            "$defs": {"a~1b": {"type": "string"}, "a/b": {"type": "integer"}},
            "properties": {"v": {"$ref": "#/$defs/a~1b"}},
        },
        {"v": "s"},
    ),
    (
        {
            "$defs": {"a%20b": {"type": "string"}, "a b": {"type": "integer"}},
            "properties": {"v": {"$ref": "#/$defs/a%20b"}},
        },
        {"v": "s"},
    ),
    # a `$ref` under a subschema's own `$id` resolves against that subschema
    (
        {
            "$defs": {"p": {"type": "string"}},
            "properties": {
                "a": {
                    "$id": "https://example.com/sub",
                    "$defs": {"p": {"type": "integer"}},
                    "$ref": "#/$defs/p",
                }
            },
        },
        {"a": "s"},
    ),
    # values of subclasses, which jsonschema checks as what they subclass
    ({"properties": {"kind": {"maxLength": 5}}}, {"kind": Kind.LONG}),
    ({"maxLength": 5}, Name("much-too-long")),
    ({"properties": {"n": {"maximum": 5}}}, {"n": Count.BIG}),
    ({"items": {"minimum": 10}}, [Count.BIG]),
    ({"properties": {"o": {"required": ["id"]}}}, {"o": OrderedDict()}),
    ({"properties": {"o": {"minProperties": 1}}}, {"o": OrderedDict()}),
    ({"minItems": 2}, Items([1])),
    ({"not": {"maxLength": 100}}, Kind.SHORT),
    ({"propertyNames": {"maxLength": 3}}, {Kind.LONG: 1}),
]


@pytest.mark.parametrize(("schema", "doc"), REFUSED)
def test_what_jsonschema_refuses_is_never_a_yes(schema: dict[str, Any], doc: Any) -> None:
    assert not jsonschema.Draft202012Validator(schema).is_valid(doc)  # a real refusal
    try:
        check = compile_check(schema)
    except Unsupported:
        return  # jsonschema decides
    assert check(doc) is False


@pytest.mark.parametrize(("schema", "doc"), REFUSED)
def test_a_publish_of_what_jsonschema_refuses_is_refused(schema: dict[str, Any], doc: Any) -> None:
    # The runtime's path: the compiled check first, jsonschema for the refusal.
    with pytest.raises(PayloadValidationError):
        PayloadSchema("t", schema).validate(doc)

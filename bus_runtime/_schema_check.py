"""A fast yes/no check of a document against the topology's JSON Schema.

jsonschema explains errors well but walks a 10,000-topic topology in about a second.
This compiles the (small) subset of keywords the topology schema uses into closures that
answer only "valid?". When it says no, or meets a keyword it does not know, the caller
runs jsonschema for the authoritative errors, so a gap here costs time, never a missed
error: `compile_check` must never accept what jsonschema would refuse (tests compare them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

_IGNORED = frozenset(
    {
        "$schema",
        "$id",
        "title",
        "description",
        "$defs",
        "default",
        "examples",
        "$comment",
        "deprecated",
    }
)


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not handle."""


def _type_check(names: str | list[str]) -> Check:
    wanted = {names} if isinstance(names, str) else set(names)
    tests: list[Check] = []
    for name in wanted:
        if name == "string":
            tests.append(lambda x: isinstance(x, str))
        elif name == "integer":
            tests.append(lambda x: isinstance(x, int) and not isinstance(x, bool))
        elif name == "number":
            tests.append(lambda x: isinstance(x, (int, float)) and not isinstance(x, bool))
        elif name == "boolean":
            tests.append(lambda x: isinstance(x, bool))
        elif name == "object":
            tests.append(lambda x: isinstance(x, dict))
        elif name == "array":
            tests.append(lambda x: isinstance(x, list))
        elif name == "null":
            tests.append(lambda x: x is None)
        else:
            raise Unsupported(f"type {name}")
    return lambda x: any(t(x) for t in tests)


def compile_check(schema: Mapping[str, Any] | bool, root: Mapping[str, Any] | None = None) -> Check:
    """A function answering whether an instance is valid under `schema` (never a false yes)."""
    if schema is True:
        return lambda _x: True
    if schema is False:
        return lambda _x: False
    assert isinstance(schema, Mapping)
    root = root if root is not None else schema
    checks: list[Check] = []
    for key, value in schema.items():
        if key in _IGNORED or key in ("properties", "additionalProperties"):
            continue  # the last two are compiled together below
        if key == "$ref":
            if not isinstance(value, str) or not value.startswith("#/$defs/"):
                raise Unsupported(f"$ref {value}")
            checks.append(compile_check(root["$defs"][value.rsplit("/", 1)[1]], root))
        elif key == "type":
            checks.append(_type_check(value))
        else:
            checks.append(_keyword(key, value, root))
    if "properties" in schema or "additionalProperties" in schema:
        props = {k: compile_check(v, root) for k, v in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        extra_check = compile_check(extra, root) if extra is not True else None

        def check_props(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            for k, v in x.items():
                c = props.get(k)
                if c is not None:
                    if not c(v):
                        return False
                elif extra_check is not None and not extra_check(v):
                    return False
            return True

        checks.append(check_props)
    if not checks:
        return lambda _x: True
    if len(checks) == 1:
        return checks[0]
    return lambda x: all(c(x) for c in checks)


def _keyword(key: str, value: Any, root: Mapping[str, Any]) -> Check:
    """One keyword's check; every check passes instances of types it does not constrain."""
    if key in ("enum", "const"):
        allowed = list(value) if key == "enum" else [value]

        def one_of(x: Any) -> bool:
            return any(type(x) is type(v) and x == v for v in allowed)

        return one_of
    if key == "pattern":
        rx = re.compile(value)
        return lambda x: not isinstance(x, str) or rx.search(x) is not None
    if key == "minimum":
        return lambda x: not _is_number(x) or x >= value
    if key == "maximum":
        return lambda x: not _is_number(x) or x <= value
    if key == "minLength":
        return lambda x: not isinstance(x, str) or len(x) >= value
    if key == "maxLength":
        return lambda x: not isinstance(x, str) or len(x) <= value
    if key == "minItems":
        return lambda x: not isinstance(x, list) or len(x) >= value
    if key == "minProperties":
        return lambda x: not isinstance(x, dict) or len(x) >= value
    if key == "uniqueItems":
        return _unique if value else (lambda _x: True)
    if key == "items":
        item = compile_check(value, root)
        return lambda x: not isinstance(x, list) or all(item(i) for i in x)
    if key == "not":
        inner = compile_check(value, root)
        return lambda x: not inner(x)
    if key == "required":
        required = tuple(value)
        return lambda x: not isinstance(x, dict) or all(k in x for k in required)
    if key == "propertyNames":
        names = compile_check(value, root)
        return lambda x: not isinstance(x, dict) or all(names(k) for k in x)
    raise Unsupported(key)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _unique(x: Any) -> bool:
    if not isinstance(x, list):
        return True
    try:
        return len(set(x)) == len(x) and not any(isinstance(i, bool) for i in x)
    except TypeError:
        return False

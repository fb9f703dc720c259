"""A fast yes/no check of data against a JSON Schema, generated as Python code.

jsonschema explains errors well but is slow on hot paths: a 10,000-topic topology takes
it about a second, and every publish and delivery checks a payload. This compiles the
keywords the topology schema and payload schemas use into one generated Python function
per (sub)schema that only answers "valid?". It must never accept what jsonschema would
refuse: where it is unsure (a keyword it does not know, an integer-valued float) it
answers no or refuses to compile, and the caller runs jsonschema, which then decides and
explains. So a gap here costs time, never a missed error (tests compare the two).

Types are tested exactly (`type(v) is str`), as JSON decodes them; jsonschema tests
`isinstance`. A value of a subclass (a str-valued Enum, an IntEnum, an OrderedDict, which
an application may publish) is therefore answered no wherever a keyword would apply to
it, never skipped as "not a string".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

# `format` is an annotation in draft 2020-12 (jsonschema asserts nothing without a format
# checker), so it is skipped here too.
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
        "$defs",
        "definitions",
    }
)
_TYPE_TESTS = {
    "string": "type({v}) is str",
    "integer": "(type({v}) is int)",
    "number": "(type({v}) is int or type({v}) is float)",
    "boolean": "type({v}) is bool",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
    "null": "{v} is None",
}


class Unsupported(ValueError):
    """The schema uses something the generated check does not handle."""


class _CheckWriter:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"_enum_ok": _enum_ok, "_PLAIN": _PLAIN}
        self.count = 0
        self.refs: dict[str, str] = {}

    def ref(self, ref: Any) -> str:
        """The function of a local `#/$defs/NAME` reference (written once, recursion-safe)."""
        # Only a name right under the root's $defs: a longer pointer (`#/$defs/a/properties/x`)
        # or an escaped one (`~0`, `~1`, `%20`) is jsonschema's to resolve.
        if not isinstance(ref, str) or _DEFS_REF.fullmatch(ref) is None:
            raise Unsupported(f"$ref {ref}")
        if ref not in self.refs:
            defs = self.root.get("$defs") if isinstance(self.root, Mapping) else None
            target = defs.get(ref[len("#/$defs/") :]) if isinstance(defs, Mapping) else None
            if target is None:
                raise Unsupported(f"$ref {ref}")
            # Reserve the name first: functions are looked up when called, so a definition
            # that refers to itself calls the function being written.
            self.count += 1
            name = self.refs[ref] = f"_r{self.count}"
            inner = self.function(target)
            self.lines += [f"def {name}(v):", f"    return {inner}(v)", ""]
        return self.refs[ref]

    def const(self, value: Any) -> str:
        name = f"_k{len(self.env)}"
        self.env[name] = value
        return name

    def test(self, schema: Any, var: str) -> str:
        """A Python expression true when the value named `var` is valid under `schema`:
        written inline for a leaf schema (a type, enum, pattern, length or bound: most
        properties' schemas), else a call of the schema's function (one call less per
        value checked, which is what the check's time went to)."""
        inline = self._leaf_test(schema, var)
        return inline if inline is not None else f"{self.function(schema)}({var})"

    def _leaf_test(self, schema: Any, var: str) -> str | None:
        if schema is True or (isinstance(schema, Mapping) and not schema):
            return "True"
        if schema is False:
            return "False"
        if not isinstance(schema, Mapping) or any(
            k not in _ANNOTATIONS and k not in _LEAF for k in schema
        ):
            return None
        parts = self._leaf_parts(schema, var)
        return "(" + " and ".join(parts) + ")" if parts else "True"

    def _leaf_parts(self, schema: Mapping[str, Any], var: str) -> list[str]:
        """The tests of `schema`'s leaf keywords (type, enum, const, string and number
        checks) on the value named `var`, each an expression that must be true."""
        parts: list[str] = []
        t = schema.get("type")
        names: list[str] = []
        if t is not None:
            names = [t] if isinstance(t, str) else list(t)
            if not names or any(n not in _TYPE_TESTS for n in names):
                raise Unsupported(f"type {t}")
            parts.append("(" + " or ".join(_TYPE_TESTS[n].format(v=var) for n in names) + ")")
        parts += self._value_tests(schema, var)
        str_checks = self._string_checks(schema, var)
        if str_checks:
            # The checks apply to strings only (with `type: string` the value is one here);
            # a subclass of str gets no, as jsonschema would check it (see the docstring).
            ok = " and ".join(f"not ({c})" for c in str_checks)
            parts.append(
                f"({ok})"
                if names == ["string"]
                else f"(not isinstance({var}, str) or (type({var}) is str and {ok}))"
            )
        num_checks = self._number_checks(schema, var)
        if num_checks:
            ok = " and ".join(f"not ({c})" for c in num_checks)
            exact = f"(type({var}) is int or type({var}) is float)"
            parts.append(
                f"({ok})"
                if names and set(names) <= {"integer", "number"}
                else f"(not isinstance({var}, (int, float)) or type({var}) is bool "
                f"or ({exact} and {ok}))"
            )
        return parts

    def _value_tests(self, schema: Mapping[str, Any], var: str) -> list[str]:
        """`enum` and `const`: separate constraints (with both, a value must pass each)."""
        out = []
        for values in [
            list(schema[k]) if k == "enum" else [schema[k]]
            for k in ("enum", "const")
            if k in schema
        ]:
            if all(type(x) is str for x in values):
                allowed = self.const(frozenset(values))
                out.append(f"(type({var}) is str and {var} in {allowed})")
            elif all(x is None or type(x) in (str, bool, int, float) for x in values):
                allowed = self.const(tuple(values))
                out.append(f"_enum_ok({var}, {allowed})")
            else:
                raise Unsupported("enum of arrays or objects")
        return out

    def _string_checks(self, schema: Mapping[str, Any], var: str) -> list[str]:
        """Conditions under which a string breaks `schema` (each makes it invalid)."""
        out = []
        if "pattern" in schema:
            rx = self.const(re.compile(schema["pattern"]))
            out.append(f"{rx}.search({var}) is None")
        if "minLength" in schema:
            out.append(f"len({var}) < {int(schema['minLength'])}")
        if "maxLength" in schema:
            out.append(f"len({var}) > {int(schema['maxLength'])}")
        return out

    def _number_checks(self, schema: Mapping[str, Any], var: str) -> list[str]:
        out = []
        for key, op in (
            ("minimum", "<"),
            ("maximum", ">"),
            ("exclusiveMinimum", "<="),
            ("exclusiveMaximum", ">="),
        ):
            if key in schema:
                bound = schema[key]
                if type(bound) not in (int, float):
                    raise Unsupported(key)
                out.append(f"{var} {op} {self.const(bound)}")
        return out

    def function(self, schema: Any) -> str:
        """Write a function checking `schema`; its name."""
        self.count += 1
        name = f"_c{self.count}"
        if schema is True or schema == {}:
            self.lines += [f"def {name}(v):", "    return True", ""]
            return name
        if schema is False:
            self.lines += [f"def {name}(v):", "    return False", ""]
            return name
        if not isinstance(schema, Mapping):
            raise Unsupported("schema is not an object")
        body: list[str] = []
        for key in schema:
            if key not in _ANNOTATIONS and key not in _KNOWN:
                raise Unsupported(key)
        if "$id" in schema and schema is not self.root:
            # Its `$ref`s resolve against its own `$id` (and $defs): jsonschema's to do.
            raise Unsupported("$id in a subschema")
        # A subclass of list or dict (an OrderedDict): answered no, as the keywords below
        # that apply to arrays and objects test the exact types.
        if any(k in schema for k in _ARRAY_KEYWORDS):
            body.append("if type(v) is not list and isinstance(v, list): return False")
        if any(k in schema for k in _OBJECT_KEYWORDS):
            body.append("if type(v) is not dict and isinstance(v, dict): return False")
        if "$ref" in schema:
            body.append(f"if not {self.ref(schema['$ref'])}(v): return False")
        for test in self._leaf_parts(schema, "v"):
            body.append(f"if not {test}: return False")
        # arrays
        if "minItems" in schema:
            body.append(f"if type(v) is list and len(v) < {int(schema['minItems'])}: return False")
        if "maxItems" in schema:
            body.append(f"if type(v) is list and len(v) > {int(schema['maxItems'])}: return False")
        if schema.get("uniqueItems") is True:
            # set() merges 1 and True (JSON Schema does not): at worst a false "no"
            body.append("if type(v) is list:")
            body.append("    try:")
            body.append("        if len(set(v)) != len(v): return False")
            body.append("    except TypeError:")
            body.append("        return False")
        elif schema.get("uniqueItems") not in (None, False):
            raise Unsupported("uniqueItems")
        if "items" in schema:
            if not isinstance(schema["items"], (Mapping, bool)):
                raise Unsupported("items as a list")
            item = self.test(schema["items"], "i")
            body.append("if type(v) is list:")
            body.append("    for i in v:")
            body.append(f"        if not {item}: return False")
        # objects
        if "required" in schema:
            required = schema["required"]
            if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
                raise Unsupported("required")
            req = self.const(frozenset(required))
            body.append(f"if type(v) is dict and not {req} <= v.keys(): return False")
        for key in ("minProperties", "maxProperties"):
            if key in schema:
                op = "<" if key == "minProperties" else ">"
                body.append(f"if type(v) is dict and len(v) {op} {int(schema[key])}: return False")
        props = schema.get("properties")
        extra = schema.get("additionalProperties", True)
        if props is not None or extra is not True:
            props = props or {}
            if not isinstance(props, Mapping):
                raise Unsupported("properties")
            checks = {k: self.test(sub, "x") for k, sub in props.items()}
            inner: list[str] = []
            for k, test in checks.items():
                key = self.const(k)
                inner.append(f"    x = v.get({key}, _missing)")
                inner.append(f"    if x is not _missing and not {test}: return False")
            if extra is False:
                known = self.const(frozenset(props))
                inner.append(f"    if not v.keys() <= {known}: return False")
            elif extra is not True:
                known = self.const(frozenset(props))
                extra_test = self.test(extra, "x")
                inner.append("    for k, x in v.items():")
                inner.append(f"        if k not in {known} and not {extra_test}: return False")
            if inner:
                body += ["if type(v) is dict:", *inner]
        if "propertyNames" in schema:
            key_test = self.test(schema["propertyNames"], "k")
            body.append("if type(v) is dict:")
            body.append("    for k in v:")
            body.append(f"        if not {key_test}: return False")
        if "not" in schema:
            # A false "no" inside `not` would be a false "yes": only exact keywords.
            if not _exact(schema["not"]):
                raise Unsupported("not")
            # And only over a value of the exact JSON types: for any other (a subclass) the
            # negated check answers no, which `not` would turn into a yes.
            negated = self.function(schema["not"])
            body.append(f"if type(v) not in _PLAIN or {negated}(v): return False")
        # Only keywords where a false "no" inside stays a "no" outside: no `oneOf`.
        for key in ("allOf", "anyOf"):
            if key in schema:
                subs = [self.test(sub, "v") for sub in schema[key]]
                if not subs:
                    raise Unsupported(key)
                joint = " and " if key == "allOf" else " or "
                body.append(f"if not ({joint.join(subs)}): return False")
        self.lines.append(f"def {name}(v):")
        self.lines += [f"    {line}" for line in body]
        self.lines += ["    return True", ""]
        return name


_DEFS_REF = re.compile(r"#/\$defs/[^/~%]+")
# The types JSON decodes to, exactly.
_PLAIN = frozenset({str, int, float, bool, type(None), list, dict})
_ARRAY_KEYWORDS = ("minItems", "maxItems", "uniqueItems", "items")
_OBJECT_KEYWORDS = (
    "required",
    "minProperties",
    "maxProperties",
    "properties",
    "additionalProperties",
    "propertyNames",
)
# The keywords of a leaf schema, whose test is written inline (`_CheckWriter.test`).
_LEAF = frozenset(
    {
        "type",
        "enum",
        "const",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)
_KNOWN = _LEAF | {
    *_ARRAY_KEYWORDS,
    *_OBJECT_KEYWORDS,
    "allOf",
    "anyOf",
    "$ref",
    "not",
}
# Keywords whose generated test agrees with jsonschema both ways (no false "no").
_EXACT = frozenset({"const", "enum", "pattern", "minLength", "maxLength", "required"})


def _exact(schema: Any) -> bool:
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping):
        return False
    for key, value in schema.items():
        if key in _ANNOTATIONS or key in _EXACT:
            continue
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or "integer" in names:
                return False
            continue
        return False
    return True


def _enum_ok(v: Any, allowed: tuple[Any, ...]) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1 and None is only None."""
    tv = type(v)
    for a in allowed:
        ta = type(a)
        if (ta is tv or (ta in (int, float) and tv in (int, float))) and v == a:
            return True
    return False


def compile_check(schema: Mapping[str, Any] | bool) -> Check:
    """A generated function answering whether data is valid under `schema` (never a false yes).

    Raises:
        Unsupported: The schema uses a keyword the generator does not handle (the caller
            then uses jsonschema itself).
    """
    writer = _CheckWriter(schema)
    try:
        top = writer.function(schema)
    except Unsupported as exc:
        raise Unsupported(f"not compiled: {exc}") from None
    env = dict(writer.env)
    env["_missing"] = object()
    # Only keywords' shapes become code; every value from the schema (keys, patterns,
    # enums, bounds) is passed in `env` by name, so a schema cannot inject code.
    exec(compile("\n".join(writer.lines), "<json schema>", "exec"), env)
    check: Check = env[top]
    return check

"""How a payload schema change affects the topic's publishers (writers) and consumers (readers).

Each difference between the old and the new JSON Schema of a topic's `data` is one
`SchemaDelta` with a direction:

- `narrow`: the new schema refuses something the old one accepted (a new required field,
  a narrowed enum, a tightened limit, a retyped property). Publishers whose code still
  sends the old shape now have their publishes refused: **breaking for publishers**;
  readers on the old schema accept everything the new one does, so the safe deploy order
  is *publishers first* (what schema registries call FORWARD compatible).
- `widen`: the new schema accepts something the old one refused (a widened enum, a field
  no longer required, a property removed). Consumers may now receive events their code
  does not handle, and consumers still on the old schema dead-letter them: the safe
  order is *consumers first* (BACKWARD compatible). Whether it breaks consumers' code
  depends on the change: a removed or no-longer-required field or a new enum value does
  (`breaks_readers`); a loosened limit or a new optional property does not.

Changes to keywords this comparison does not reason about (`$ref`, `anyOf`, `oneOf`,
`allOf`, `not`, `if`, `pattern` rewritten ...) are reported as both directions, so they
are never called compatible without a person looking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["narrow", "widen", "neutral"]

# Keywords that only document: a change to them is never a contract change.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "$comment",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$schema",
        "$id",
        "$anchor",
    }
)
# Lower bounds (raising one narrows) and upper bounds (lowering one narrows).
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")
# String rules: adding one narrows, removing one widens, rewriting one is both.
_RULES = ("pattern", "multipleOf")
# Draft 2020-12 makes `format` an annotation, and neither bus_runtime's check nor
# jsonschema's default one enforces it: a change is reported, as compatible.
_NOT_ENFORCED = ("format",)
_HANDLED = (
    frozenset(
        {
            "type",
            "enum",
            "const",
            "required",
            "properties",
            "additionalProperties",
            "items",
            *_LOWER,
            *_UPPER,
            *_RULES,
            *_NOT_ENFORCED,
        }
    )
    | _ANNOTATIONS
)


@dataclass(frozen=True)
class SchemaDelta:
    """One difference between two versions of a payload schema.

    Attributes:
        path: Where in the payload (`data.amount`, `data.lines[]`), `data` for the root.
        text: What changed, in a few words.
        direction: `narrow` (the new schema refuses more), `widen` (it accepts more), or
            `neutral` (compatible both ways: a new optional field of an open object).
        breaks_writers: Publishers' current payloads may now be refused.
        breaks_readers: Consumers' code may now receive what it does not handle.
    """

    path: str
    text: str
    direction: Direction
    breaks_writers: bool
    breaks_readers: bool

    def render(self) -> str:
        return f"`{self.path}`: {self.text}"


def _narrow(path: str, text: str) -> SchemaDelta:
    return SchemaDelta(path, text, "narrow", breaks_writers=True, breaks_readers=False)


def _widen(path: str, text: str, *, breaks_readers: bool) -> SchemaDelta:
    return SchemaDelta(path, text, "widen", breaks_writers=False, breaks_readers=breaks_readers)


def _both(path: str, text: str) -> list[SchemaDelta]:
    return [
        SchemaDelta(path, text, "narrow", breaks_writers=True, breaks_readers=True),
        SchemaDelta(path, text, "widen", breaks_writers=True, breaks_readers=True),
    ]


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    t = schema.get("type")
    if t is None:
        return None
    names = {t} if isinstance(t, str) else {x for x in t if isinstance(x, str)}
    if "number" in names:
        names.add("integer")  # every integer is a number
    return names


def _type_text(names: set[str]) -> str:
    shown = names - {"integer"} if "number" in names else names
    return "/".join(sorted(shown))


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 60 else text[:57] + "..."


# Deeper than this, schemas are not compared (and the change is never called compatible).
_MAX_DEPTH = 64


def compare_schemas(old: Any, new: Any, path: str = "data") -> list[SchemaDelta]:
    """Every difference between `old` and `new` (JSON Schemas; True/False allowed), each once."""
    out: list[SchemaDelta] = []
    for d in _compare(old, new, path, 0):
        if d not in out:
            out.append(d)
    return out


def _compare(old: Any, new: Any, path: str, depth: int) -> list[SchemaDelta]:
    if old == new:
        return []
    if depth > _MAX_DEPTH:
        return _both(path, f"nested more than {_MAX_DEPTH} levels: not compared, review by hand")
    if isinstance(old, bool) or isinstance(new, bool) or old is None or new is None:
        old_any = old is True or old is None or old == {}
        new_any = new is True or new is None or new == {}
        if old_any and not new_any:
            return [_narrow(path, "was unconstrained, now has a schema")]
        if new_any and not old_any:
            return [_widen(path, "now unconstrained", breaks_readers=True)]
        return _both(path, "schema replaced")
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return _both(path, "schema replaced")
    out: list[SchemaDelta] = []
    out += _compare_types(old, new, path)
    out += _compare_values(old, new, path)
    out += _compare_limits(old, new, path)
    out += _compare_object(old, new, path, depth)
    for key in _NOT_ENFORCED:
        if old.get(key) != new.get(key):
            text = f"`{key}` {_short(old.get(key))} -> {_short(new.get(key))} (not enforced)"
            out.append(SchemaDelta(path, text, "neutral", False, False))
    if "items" in old or "items" in new:
        out += _compare(old.get("items"), new.get("items"), f"{path}[]", depth + 1)
    for key in sorted((set(old) | set(new)) - _HANDLED):
        if old.get(key) != new.get(key):
            out += _both(path, f"`{key}` changed: not compared automatically, review by hand")
    return out


def _compare_types(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[SchemaDelta]:
    before, after = _types(old), _types(new)
    if before == after:
        return []
    if before is None:
        return [_narrow(path, f"type now limited to {', '.join(sorted(after or ()))}")]
    if after is None:
        return [_widen(path, "type no longer limited", breaks_readers=True)]
    if after < before:
        return [_narrow(path, f"type {_type_text(before)} -> {_type_text(after)}")]
    if after > before:
        added = "/".join(sorted(after - before))
        return [_widen(path, f"type also allows {added}", breaks_readers=True)]
    return _both(path, f"retyped: {_type_text(before)} -> {_type_text(after)}")


def _compare_values(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[SchemaDelta]:
    def allowed(s: Mapping[str, Any]) -> list[Any] | None:
        if "const" in s:
            return [s["const"]]
        enum = s.get("enum")
        return list(enum) if isinstance(enum, list) else None

    before, after = allowed(old), allowed(new)
    if before == after:
        return []
    if before is None:
        return [_narrow(path, f"now limited to {_short(after)}")]
    if after is None:
        return [_widen(path, "no longer limited to a list of values", breaks_readers=True)]
    removed = [v for v in before if v not in after]
    added = [v for v in after if v not in before]
    out: list[SchemaDelta] = []
    if removed:
        out.append(_narrow(path, f"values removed: {_short(removed)}"))
    if added:
        out.append(_widen(path, f"values added: {_short(added)}", breaks_readers=True))
    return out


def _compare_limits(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[SchemaDelta]:
    out: list[SchemaDelta] = []
    for key in (*_LOWER, *_UPPER):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        lower = key in _LOWER
        if a is None:
            out.append(_narrow(path, f"`{key}` {b} added"))
        elif b is None:
            out.append(_widen(path, f"`{key}` {a} removed", breaks_readers=False))
        elif not isinstance(a, int | float) or not isinstance(b, int | float):
            out += _both(path, f"`{key}` {a!r} -> {b!r}")
        elif (b > a) == lower:
            out.append(_narrow(path, f"`{key}` {a} -> {b} (tightened)"))
        else:
            out.append(_widen(path, f"`{key}` {a} -> {b} (loosened)", breaks_readers=False))
    for key in _RULES:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if a is None:
            out.append(_narrow(path, f"`{key}` {_short(b)} added"))
        elif b is None:
            out.append(_widen(path, f"`{key}` {_short(a)} removed", breaks_readers=False))
        else:
            out += _both(path, f"`{key}` {_short(a)} -> {_short(b)}")
    return out


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _compare_object(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str, depth: int
) -> list[SchemaDelta]:
    out: list[SchemaDelta] = []
    old_props: Mapping[str, Any] = _mapping(old.get("properties"))
    new_props: Mapping[str, Any] = _mapping(new.get("properties"))
    old_req = set(old.get("required") or ())
    new_req = set(new.get("required") or ())
    old_extra = old.get("additionalProperties", True)
    new_extra = new.get("additionalProperties", True)
    for name in sorted(new_req - old_req):
        out.append(_narrow(f"{path}.{name}", "now required"))
    for name in sorted(old_req - new_req):
        if name in new_props or name not in old_props:
            out.append(_widen(f"{path}.{name}", "no longer required", breaks_readers=True))
    for name in sorted(set(old_props) & set(new_props)):
        out += _compare(old_props[name], new_props[name], f"{path}.{name}", depth + 1)
    for name in sorted(set(new_props) - set(old_props)):
        where = f"{path}.{name}"
        if old_extra is False:
            # The old schema refused any undeclared field: old readers refuse the new one.
            out.append(
                _widen(where, "new optional field (old schema refused it)", breaks_readers=False)
            )
        elif name not in new_req:
            out.append(SchemaDelta(where, "new optional field", "neutral", False, False))
    for name in sorted(set(old_props) - set(new_props)):
        where = f"{path}.{name}"
        if new_extra is False:
            out.append(_narrow(where, "field removed (and undeclared fields are refused)"))
        else:
            out.append(
                _widen(where, "field removed: readers may still expect it", breaks_readers=True)
            )
    if old_extra != new_extra:
        if new_extra is False:
            out.append(_narrow(path, "undeclared fields now refused"))
        elif old_extra is False and new_extra is True:
            out.append(_widen(path, "undeclared fields now accepted", breaks_readers=False))
        else:
            out += _compare(old_extra, new_extra, f"{path}.*", depth + 1)
    return out


def deploy_order(deltas: list[SchemaDelta]) -> str | None:
    """`publishers first`, `consumers first`, or `no safe order` for a set of deltas."""
    directions = {d.direction for d in deltas} - {"neutral"}
    if not directions:
        return None
    if directions == {"narrow"}:
        return "publishers first"
    if directions == {"widen"}:
        return "consumers first"
    return "no safe order"


ORDER_WHY = {
    "publishers first": "the old schema accepts what the new one does (schema registries: FORWARD "
    "compatible): update and deploy the publishers, then the consumers",
    "consumers first": "the new schema accepts what the old one did (BACKWARD compatible): update "
    "and deploy the consumers, then the publishers",
    "no safe order": "each side refuses what the other sends in some case: publish the new shape "
    "on a new topic and migrate",
}

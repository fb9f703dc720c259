"""A typed Python module of a topology, for applications: mypy catches a wrong topic or field.

The module that `generate_module` writes holds:
- a constant per topic (`DOCUMENT_UPLOADED: Final = "document.uploaded"`), the Literal
  `TopicName` of every topic name and the tuple `TOPICS`;
- a TypedDict per payload schema, with nested objects, arrays, enums as Literal aliases,
  `required` vs `NotRequired`, `$defs`/`$ref` (recursion too), `allOf` merged, `oneOf` and
  `anyOf` as unions, `additionalProperties` maps; field docstrings carry the description
  and the value constraints (pattern, format, bounds) that only the bus checks;
- `event(topic, data, ...)`, overloaded per topic, which makes an `EventPayload` whose
  `data` mypy checked against the topic's TypedDict, and `data_of(topic, payload)`, the
  typed view of a received payload.

Schema keywords that a Python type cannot say (`not`, `if`/`then`/`else`, `prefixItems`
positions, `unevaluatedProperties`, an external `$ref` ...) and unknown keywords are
listed in the module's docstring and returned as warnings: never dropped in silence.
Output is deterministic (no dates, no paths but the schema files as the topology names
them), so `natstopo codegen --check` can tell whether the file on disk is current.

Why not datamodel-code-generator: see docs/review.md (measured): it writes one module per
schema whose class names clash when merged, knows nothing of topics, and brings pydantic,
black and isort (26 packages) for what is here one module of the runtime's dependencies.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ..topology.model import Topic, Topology

_MARK = "\x00"  # a generated name inside a type expression: \x00Name\x00
_MARKED = re.compile("\x00([^\x00]+)\x00")
_WORD = re.compile(r"[A-Za-z0-9]+")
_LINE = 88  # black's and ruff's default: what fits here stays as written by them too

# Names of the generated module that a topic, schema or field must not take.
_RESERVED = frozenset(
    {
        "annotations",
        "Any",
        "EventPayload",
        "Final",
        "Literal",
        "Mapping",
        "Never",
        "NotRequired",
        "TOPICS",
        "TopicName",
        "TypeAlias",
        "TypedDict",
        "Union",
        "bool",
        "data_of",
        "dict",
        "event",
        "float",
        "int",
        "list",
        "object",
        "overload",
        "str",
    }
)
_ANNOTATION_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$anchor",
        "$dynamicAnchor",
        "$vocabulary",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
        "$defs",
        "definitions",
    }
)
# Value constraints: no type can say them; the field's docstring does, the bus checks them.
_CONSTRAINTS = (
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
)
_TYPED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "items",
        "additionalItems",
        "prefixItems",
        "enum",
        "const",
        "$ref",
        "allOf",
        "anyOf",
        "oneOf",
    }
)
_UNSUPPORTED = {
    "not": "`not`",
    "if": "`if`/`then`/`else`",
    "then": "`if`/`then`/`else`",
    "else": "`if`/`then`/`else`",
    "dependentRequired": "`dependentRequired`",
    "dependentSchemas": "`dependentSchemas`",
    "dependencies": "`dependencies`",
    "unevaluatedProperties": "`unevaluatedProperties`",
    "unevaluatedItems": "`unevaluatedItems`",
    "contains": "`contains`",
    "minContains": "`minContains`",
    "maxContains": "`maxContains`",
    "propertyNames": "`propertyNames`",
    "$dynamicRef": "`$dynamicRef`",
    "$recursiveRef": "`$recursiveRef`",
    "$recursiveAnchor": "`$recursiveAnchor`",
    "contentSchema": "`contentSchema`",
}
_KNOWN = _ANNOTATION_KEYWORDS | set(_CONSTRAINTS) | _TYPED | set(_UNSUPPORTED)
_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}


@dataclass(frozen=True)
class GeneratedModule:
    """The generated module's text and what its types do not express.

    Attributes:
        text: The Python source.
        warnings: One line per schema keyword not expressed in the types (also listed in
            the module's docstring) and per name changed to avoid a clash.
    """

    text: str
    warnings: tuple[str, ...] = ()


def generate_module(topology: Topology) -> GeneratedModule:
    """The typed module of `topology`'s topics and payload schemas."""
    return _Generator(topology).run()


# -- names --------------------------------------------------------------------------------
def camel(name: str) -> str:
    """`document.ocr_completed` -> `DocumentOcrCompleted` (ASCII letters and digits only)."""
    return "".join(w[0].upper() + w[1:] for w in _WORD.findall(name))


def upper_snake(name: str) -> str:
    """`firm.*.sync_completed` -> `FIRM_SYNC_COMPLETED` (a `*` token adds nothing)."""
    return "_".join(w.upper() for w in _WORD.findall(name))


def is_plain_key(key: str) -> bool:
    """A TypedDict key that can be written as a class attribute, unchanged at run time."""
    return (
        key.isidentifier()
        and not keyword.iskeyword(key)
        and unicodedata.normalize("NFKC", key) == key  # Python normalises identifiers
        and not (key.startswith("__") and not key.endswith("__"))  # private-name mangling
    )


class _Names:
    """Module-level names, unique; a clash gets a number (`Name2`, `NAME_2`)."""

    def __init__(self) -> None:
        self.used: set[str] = set(_RESERVED)

    @staticmethod
    def valid(base: str, *, sep: str = "") -> str:
        """`base` as an identifier: one that starts with a digit gets a prefix."""
        if not base or base[0].isdigit():
            return ("TOPIC_" if sep else "Topic") + base
        return base

    def new(self, base: str, *, sep: str = "") -> str:
        base = self.valid(base, sep=sep)
        name, n = base, 1
        while name in self.used or keyword.iskeyword(name):
            n += 1
            name = f"{base}{sep}{n}"
        self.used.add(name)
        return name


def _mark(name: str) -> str:
    return f"{_MARK}{name}{_MARK}"


# -- Python literals ------------------------------------------------------------------------
def py_str(text: str) -> str:
    """A double-quoted Python string literal of `text`."""
    out = ['"']
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127 or unicodedata.category(ch) in ("Zl", "Zp", "Cs"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def py_literal(value: Any) -> str:
    if isinstance(value, str):
        return py_str(value)
    return repr(value)  # bool, int, None


def docstring(text: str) -> str:
    """A one-line docstring of `text` (whitespace collapsed, quotes and backslashes escaped)."""
    body = py_str(" ".join(text.split()))[1:-1]
    return f'"""{body}"""'


def _literal_ok(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int))


# -- the definitions -----------------------------------------------------------------------
@dataclass
class _Field:
    key: str
    type: str
    required: bool
    doc: str = ""


@dataclass
class _TypedDict:
    name: str
    doc: str
    fields: list[_Field] = field(default_factory=list)


@dataclass
class _Alias:
    name: str
    expr: str
    doc: str = ""
    exploded: list[str] | None = None  # Literal values or union members, one a line


@dataclass
class _Schema:
    """One payload schema being translated: its root (for `$ref`) and how to name places."""

    root: Any
    topic: Topic
    class_name: str
    refs: dict[str, str] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)


class _Generator:
    def __init__(self, topology: Topology) -> None:
        self.t = topology
        self.names = _Names()
        self.defs: list[_TypedDict | _Alias] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []  # the docstring's list of what the types do not say
        self.imports: set[str] = set()

    def warn(self, text: str, *, note: bool = True) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            if note:
                self.notes.append(text)

    # -- topics ------------------------------------------------------------------------
    def run(self) -> GeneratedModule:
        topics = self.t.topics
        constants: dict[str, str] = {}
        for topic in topics:
            base = self.names.valid(upper_snake(topic.name) or "TOPIC", sep="_")
            constants[topic.name] = name = self.names.new(base, sep="_")
            if name != base:
                self.warn(
                    f"topic `{topic.name}`: its constant is {name} ({base} is taken)", note=False
                )
        roots: dict[str, str] = {}
        for topic in topics:
            if topic.schema is None:
                continue
            base = self.names.valid(camel(topic.name) or "Topic")
            roots[topic.name] = name = self.names.new(base)
            if name != base:
                self.warn(
                    f"topic `{topic.name}`: its payload class is {name} ({base} is taken)",
                    note=False,
                )
        payload_types: dict[str, str] = {}
        for topic in topics:
            if topic.schema is not None:
                payload_types[topic.name] = self.payload(topic, roots[topic.name])
        return GeneratedModule(self.render(topics, constants, payload_types), tuple(self.warnings))

    def payload(self, topic: Topic, name: str) -> str:
        ctx = _Schema(topic.schema, topic, name)
        root = topic.schema
        where = ""
        if isinstance(root, Mapping) and self._is_typeddict(root, ctx):
            ctx.refs[""] = _mark(name)
            ctx.busy.add("")
            return self.typeddict(self._merged(root, ctx, where), name, where, ctx, top=True)
        expr = self.type_of(root, name + "Data", where, ctx)
        if expr == "Any":  # `{}`, `true`: any object, as `EventPayload.data` always is one
            expr = "dict[str, Any]"
        declared = root.get("type") if isinstance(root, Mapping) else None
        kinds = [declared] if isinstance(declared, str) else declared
        if isinstance(kinds, list) and kinds != ["object"]:
            self.warn(
                f"{self._where(ctx, where)}: the payload schema allows more than a JSON object, "
                "but `EventPayload.data` is always one",
            )
        self.defs.append(_Alias(name, expr, self._topic_doc(topic)))
        return _mark(name)

    def _where(self, ctx: _Schema, pointer: str) -> str:
        return f"topic `{ctx.topic.name}` ({ctx.topic.schema_file}) at `{pointer or '/'}`"

    def _topic_doc(self, topic: Topic) -> str:
        what = f"`data` of topic `{topic.name}`"
        desc = (topic.schema or {}).get("description") or topic.description
        return f"{what}: {desc}" if isinstance(desc, str) and desc else what + "."

    # -- schemas -----------------------------------------------------------------------
    def check_keywords(self, node: Mapping[str, Any], pointer: str, ctx: _Schema) -> None:
        for key in node:
            if key.startswith("x-"):
                continue
            if key in _UNSUPPORTED:
                self.warn(
                    f"{self._where(ctx, pointer)}: {_UNSUPPORTED[key]}: not expressed in the "
                    "types (the bus still checks it at publish time)"
                )
            elif key not in _KNOWN:
                self.warn(
                    f"{self._where(ctx, pointer)}: unknown keyword `{key}` (a typo?) is ignored"
                )

    def resolve(self, ref: str, pointer: str, ctx: _Schema) -> tuple[Any, str] | None:
        """The node a local `$ref` points at, and its pointer; None (warned) otherwise."""
        if ref == "#" or ref.startswith("#/"):
            target: Any = ctx.root
            path = unquote(ref[1:])
            for part in path.split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                if isinstance(target, Mapping) and part in target:
                    target = target[part]
                elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                    target = target[int(part)]
                else:
                    self.warn(f"{self._where(ctx, pointer)}: `$ref: {ref}` points at nothing")
                    return None
            return target, path
        self.warn(
            f"{self._where(ctx, pointer)}: `$ref: {ref}` (a file, a URL or an anchor) is not "
            "resolved: typed as Any"
        )
        return None

    def deref(self, node: Any, pointer: str, ctx: _Schema) -> tuple[Any, str]:
        """Follow a chain of bare `$ref`s (siblings are annotations only)."""
        seen: set[str] = set()
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            if any(k not in _ANNOTATION_KEYWORDS for k in node if k != "$ref"):
                break
            found = self.resolve(node["$ref"], pointer, ctx)
            if found is None or found[1] in seen:
                return True, pointer
            seen.add(found[1])
            node, pointer = found
        return node, pointer

    def _is_typeddict(self, node: Any, ctx: _Schema) -> bool:
        if not isinstance(node, Mapping) or "oneOf" in node or "anyOf" in node:
            return False
        if node.get("type", "object") != "object":
            return False
        if "properties" in node or "required" in node:
            return True
        for branch in node.get("allOf") or ():
            target, _ = self.deref(branch, "", ctx)
            if self._is_typeddict(target, ctx):
                return True
        return False

    def _merged(self, node: Mapping[str, Any], ctx: _Schema, pointer: str) -> Mapping[str, Any]:
        """`node` with its `allOf` (and a `$ref` that has siblings) merged into one schema."""
        if isinstance(node.get("$ref"), str) and any(
            k not in _ANNOTATION_KEYWORDS for k in node if k != "$ref"
        ):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node = {"allOf": [{"$ref": node["$ref"]}, *rest.pop("allOf", [])], **rest}
        if not isinstance(node.get("allOf"), list):
            return node
        out: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
        for i, branch in enumerate(node["allOf"]):
            target, where = self.deref(branch, f"{pointer}/allOf/{i}", ctx)
            if target is True or target == {}:
                continue
            if not isinstance(target, Mapping):
                self.warn(f"{self._where(ctx, where)}: `allOf: [false]` accepts nothing")
                continue
            self.check_keywords(target, where, ctx)
            target = self._merged(target, ctx, where)
            for k, v in target.items():
                if k == "properties" and isinstance(v, Mapping):
                    props = dict(out.get("properties") or {})
                    for pk, pv in v.items():
                        props[pk] = {"allOf": [props[pk], pv]} if pk in props else pv
                    out["properties"] = props
                elif k == "required" and isinstance(v, list):
                    out["required"] = list(dict.fromkeys([*out.get("required", []), *v]))
                elif k == "type" and "type" in out:
                    a = out["type"] if isinstance(out["type"], list) else [out["type"]]
                    b = v if isinstance(v, list) else [v]
                    both = [x for x in a if x in b or (x == "integer" and "number" in b)]
                    both += [x for x in b if x == "integer" and "number" in a and x not in both]
                    out["type"] = both if len(both) != 1 else both[0]
                elif k not in out:
                    out[k] = v
        return out

    def type_of(self, node: Any, hint: str, pointer: str, ctx: _Schema) -> str:
        """The type expression of `node`; named definitions it needs are added on the way."""
        if node is True:
            return "Any"
        if node is False:
            self.imports.add("Never")
            return "Never"
        if not isinstance(node, Mapping):
            return "Any"
        self.check_keywords(node, pointer, ctx)
        ref = node.get("$ref")
        if isinstance(ref, str) and all(k in _ANNOTATION_KEYWORDS for k in node if k != "$ref"):
            return self.ref_type(ref, hint, pointer, ctx)
        node = self._merged(node, ctx, pointer)
        for key in ("oneOf", "anyOf"):
            if isinstance(node.get(key), list):
                if key == "oneOf" and isinstance(node.get("anyOf"), list):
                    self.warn(
                        f"{self._where(ctx, pointer)}: `anyOf` beside `oneOf` is not expressed "
                        "in the types"
                    )
                return self.union_type(node, key, hint, pointer, ctx)
        if "enum" in node and isinstance(node["enum"], list):
            values = node["enum"]
            if values and all(_literal_ok(v) for v in values):
                return self.literal_alias(values, hint, node)
            self.warn(
                f"{self._where(ctx, pointer)}: an `enum` of values that a Literal cannot hold "
                "(numbers with a fraction, objects, arrays) is typed by its `type` only"
            )
        if "const" in node:
            if _literal_ok(node["const"]):
                return self._literal_expr([node["const"]])
            self.warn(
                f"{self._where(ctx, pointer)}: a `const` that a Literal cannot hold is typed "
                "by its `type` only"
            )
        types = node.get("type")
        if isinstance(types, str):
            kinds = [types]
        elif isinstance(types, list):
            kinds = [k for k in types if isinstance(k, str)]
        elif self._is_typeddict(node, ctx) or any(
            k in node for k in ("additionalProperties", "patternProperties")
        ):
            kinds = ["object"]
        elif any(k in node for k in ("items", "prefixItems", "additionalItems")):
            kinds = ["array"]
        else:
            return "Any"
        parts: list[str] = []
        for kind in kinds:
            if kind in _SCALARS:
                parts.append(_SCALARS[kind])
            elif kind == "array":
                parts.append(self.array_type(node, hint, pointer, ctx))
            elif kind == "object":
                parts.append(self.object_type(node, hint, pointer, ctx))
        return self.union(parts, hint)

    def ref_type(self, ref: str, hint: str, pointer: str, ctx: _Schema) -> str:
        found = self.resolve(ref, pointer, ctx)
        if found is None:
            return "Any"
        target, path = found
        if path in ctx.refs:
            return ctx.refs[path]
        if path in ctx.busy:
            self.warn(
                f"{self._where(ctx, pointer)}: `$ref: {ref}` refers to itself through a "
                "non-object schema: typed as Any"
            )
            return "Any"
        last = path.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
        name_hint = ctx.class_name + (camel(last) or "Def")
        if self._is_typeddict(target, ctx):
            name = self.names.new(name_hint)
            ctx.refs[path] = _mark(name)
            ctx.busy.add(path)
            return self.typeddict(self._merged(target, ctx, path), name, path, ctx)
        ctx.busy.add(path)
        expr = self.type_of(target, name_hint, path, ctx)
        ctx.busy.discard(path)
        ctx.refs[path] = expr
        return expr

    def union_type(
        self, node: Mapping[str, Any], key: str, hint: str, pointer: str, ctx: _Schema
    ) -> str:
        base = {k: v for k, v in node.items() if k != key and k not in _ANNOTATION_KEYWORDS}
        parts: list[str] = []
        for i, branch in enumerate(node[key]):
            where = f"{pointer}/{key}/{i}"
            suffix = self._branch_name(branch, ctx) or f"Option{i + 1}"
            if base:
                merged = self._merged({"allOf": [base, branch]}, ctx, pointer)
                parts.append(self.type_of(merged, hint + suffix, where, ctx))
            else:
                parts.append(self.type_of(branch, hint + suffix, where, ctx))
        return self.union(parts, hint)

    def _branch_name(self, branch: Any, ctx: _Schema) -> str:
        target, _ = self.deref(branch, "", ctx)
        if not isinstance(target, Mapping):
            return ""
        if isinstance(target.get("title"), str) and camel(target["title"]):
            return camel(target["title"])
        for prop in (target.get("properties") or {}).values():
            if isinstance(prop, Mapping) and isinstance(prop.get("const"), str):
                return camel(prop["const"])
        return ""

    def object_type(self, node: Mapping[str, Any], hint: str, pointer: str, ctx: _Schema) -> str:
        if "properties" in node or "required" in node:
            return self.typeddict(node, self.names.new(hint), pointer, ctx)
        extra = node.get("additionalProperties", True)
        patterns = node.get("patternProperties")
        values: list[str] = []
        if isinstance(patterns, Mapping):
            for i, (pat, sub) in enumerate(patterns.items()):
                values.append(
                    self.type_of(
                        sub, f"{hint}Value{i + 1}", f"{pointer}/patternProperties/{pat}", ctx
                    )
                )
        if extra is not False:
            values.append(
                self.type_of(extra, hint + "Value", f"{pointer}/additionalProperties", ctx)
            )
        if not values:
            return self.typeddict(node, self.names.new(hint), pointer, ctx)  # `{}` only
        return f"dict[str, {self.union(values, '')}]"

    def array_type(self, node: Mapping[str, Any], hint: str, pointer: str, ctx: _Schema) -> str:
        items = node.get("items")
        prefix = node.get("prefixItems")
        rest_key = "items"
        if isinstance(items, list):  # draft-07 and older: `items` as a list is the tuple form
            prefix, items, rest_key = items, node.get("additionalItems"), "additionalItems"
        if isinstance(prefix, list):
            self.warn(
                f"{self._where(ctx, pointer)}: the positions of `prefixItems` (a tuple) are not "
                "expressed: typed as a list of their union"
            )
            parts = [
                self.type_of(sub, f"{hint}Item{i + 1}", f"{pointer}/prefixItems/{i}", ctx)
                for i, sub in enumerate(prefix)
            ]
            if items is not False:
                parts.append(
                    self.type_of(
                        items if items is not None else True,
                        hint + "Rest",
                        f"{pointer}/{rest_key}",
                        ctx,
                    )
                )
            return f"list[{self.union(parts, '')}]"
        if items is None:
            return "list[Any]"
        return f"list[{self.type_of(items, hint + 'Item', f'{pointer}/items', ctx)}]"

    def typeddict(
        self, node: Mapping[str, Any], name: str, pointer: str, ctx: _Schema, *, top: bool = False
    ) -> str:
        found = node.get("properties")
        props: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        required = [r for r in node.get("required") or () if isinstance(r, str)]
        doc = self._topic_doc(ctx.topic) if top else self._doc(node)
        td = _TypedDict(name, doc)
        for key, sub in props.items():
            where = f"{pointer}/properties/{key.replace('~', '~0').replace('/', '~1')}"
            if sub is False:
                self.warn(f"{self._where(ctx, where)}: a property that must be absent is left out")
                continue
            expr = self.type_of(sub, name + (camel(key) or "Field"), where, ctx)
            ctx.refs.setdefault(where, expr)  # a `$ref` to this property reuses its type
            td.fields.append(_Field(key, expr, key in required, self._doc(sub)))
        for key in required:
            if key not in props:
                td.fields.append(_Field(key, "Any", True, "Required by the schema, any value."))
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping) or isinstance(node.get("patternProperties"), Mapping):
            self.warn(
                f"{self._where(ctx, pointer)}: keys beyond `properties` (additionalProperties "
                "or patternProperties with a schema) are not expressed: a TypedDict has only "
                "the declared keys"
            )
        self.defs.append(td)
        return _mark(name)

    def literal_alias(self, values: Sequence[Any], hint: str, node: Mapping[str, Any]) -> str:
        # keyed by type too: `1` and `true` are equal in Python, not in JSON
        present = [v for _, v in dict.fromkeys((type(v), v) for v in values) if v is not None]
        parts: list[str] = []
        if present:
            name = self.names.new(hint or "Choice")
            self.imports.add("Literal")
            self.defs.append(
                _Alias(
                    name,
                    self._literal_expr(present),
                    self._doc(node),
                    [py_literal(v) for v in present],
                )
            )
            parts.append(_mark(name))
        if None in values:
            parts.append("None")
        return self.union(parts, "")

    def _literal_expr(self, values: Sequence[Any]) -> str:
        present = [v for v in values if v is not None]
        parts = []
        if present:
            self.imports.add("Literal")
            parts.append(f"Literal[{', '.join(py_literal(v) for v in present)}]")
        if len(present) != len(values):
            parts.append("None")
        return " | ".join(parts)

    def union(self, parts: Sequence[str], hint: str) -> str:
        unique = list(dict.fromkeys(p for p in parts if p))
        if not unique or "Any" in unique:
            return "Any"
        if "float" in unique and "int" in unique:
            unique.remove("int")  # an int is a float to a type checker
        if "None" in unique:  # `X | None` reads best with None last
            unique = [p for p in unique if p != "None"] + ["None"]
        expr = " | ".join(unique)
        if hint and len(unique) > 2 and len(_MARKED.sub(r"\1", expr)) > 60:
            name = self.names.new(hint)
            self.defs.append(_Alias(name, expr, "", unique))
            return _mark(name)
        return expr

    def _doc(self, node: Any) -> str:
        if not isinstance(node, Mapping):
            return ""
        parts = []
        desc = node.get("description") or node.get("title")
        if isinstance(desc, str) and desc.strip():
            parts.append(" ".join(desc.split()).rstrip("."))
        if node.get("deprecated") is True:
            parts.append("Deprecated")
        checks = [f"{k} {_show(node[k])}" for k in _CONSTRAINTS if k in node]
        if checks:
            parts.append("Checked at publish time: " + ", ".join(checks))
        if "default" in node:
            parts.append(f"Default: {_show(node['default'])}")
        return ". ".join(parts) + "." if parts else ""

    # -- the module ----------------------------------------------------------------------
    def render(
        self, topics: Sequence[Topic], constants: Mapping[str, str], payloads: Mapping[str, str]
    ) -> str:
        t = self.t
        out: list[str] = [
            "# Generated by `natstopo codegen`: do not edit. Formatters leave it as written,",
            "# so that `natstopo codegen --check` stays true.",
            "# fmt: off",
        ]
        untyped = [tp.name for tp in topics if tp.name not in payloads]
        doc = [
            f'"""Typed topics and payloads of topology `{t.name}` (generated by natstopo codegen).',
            "",
            "Regenerate after a change of the topology or of a payload schema; CI can check it:",
            "",
            "    natstopo codegen TOPOLOGY --out THIS_FILE",
            "    natstopo codegen TOPOLOGY --out THIS_FILE --check   # exit 2: out of date",
            "",
            'A TypedDict has only the keys its schema declares (mypy: "Extra key"), even where',
            "the schema allows more: that is how a misspelt field fails type checking. Value",
            "constraints (patterns, formats, bounds) are in the field docstrings; the bus checks",
            "them, and the rest of each schema, when an event is published.",
        ]
        if untyped:
            doc += ["", "Topics without a payload schema (data is any object):"]
            doc += [f"- {_doc_text(n)}" for n in untyped]
        if self.notes:
            doc += ["", "Not expressed in these types (the bus still checks them at publish time):"]
            doc += [f"- {_doc_text(n)}" for n in self.notes]
        # No `from __future__ import annotations`: with it, Python 3.11 cannot see
        # NotRequired inside a class's (string) annotations, and __required_keys__ is wrong.
        out += [*doc, '"""', ""]

        topics_part = self.render_topics(topics, constants)
        body = self.render_defs()
        helpers = self.render_helpers(topics, payloads) if topics else []
        typing_names = {"Final", "TypeAlias"} | self.imports
        if topics:
            typing_names |= {"Literal", "Any"}
            if len(topics) > 1:
                typing_names.add("overload")
        if untyped:
            typing_names.add("Any")
        if any(isinstance(d, _TypedDict) for d in self.defs):
            typing_names.add("TypedDict")
        if "NotRequired[" in body:
            typing_names.add("NotRequired")
        if "Any" in re.findall(r"\bAny\b", body):
            typing_names.add("Any")
        if any("Mapping[" in line for line in helpers):
            out.append("from collections.abc import Mapping")
        out.append(f"from typing import {', '.join(sorted(typing_names, key=_import_order))}")
        if topics:
            out += ["", "from bus_runtime import EventPayload"]
        out += ["", "# -- topics " + "-" * (_LINE - 11), ""]
        out += topics_part
        if self.defs:
            out += ["", "", "# -- payloads " + "-" * (_LINE - 13)]
            out += body.splitlines()[1:]
        if topics:
            out += ["", "", "# -- events " + "-" * (_LINE - 11)]
            out += helpers[1:]
        return "\n".join(out).rstrip("\n") + "\n"

    def render_topics(self, topics: Sequence[Topic], constants: Mapping[str, str]) -> list[str]:
        lines: list[str] = []
        if topics:
            lines.append("TopicName: TypeAlias = Literal[")
            lines += [f"    {py_str(tp.name)}," for tp in topics]
            lines.append("]")
        else:
            self.imports.add("Never")
            lines.append("TopicName: TypeAlias = Never")
        lines.append('"""Every topic of the topology."""')
        for tp in topics:
            lines += ["", f"{constants[tp.name]}: Final = {py_str(tp.name)}"]
            # Not the subject: an environment may change the stream's subject_prefix.
            facts = [tp.description.rstrip(".")] if tp.description else []
            facts.append(f"Stream `{tp.stream}`")
            if tp.publishers:
                facts.append("Published by " + ", ".join(tp.publishers))
            if tp.deprecated:
                facts.append("Deprecated: publishers should stop")
            lines.append(docstring(". ".join(facts) + "."))
        lines += ["", "TOPICS: Final[tuple[TopicName, ...]] = ("]
        lines += [f"    {constants[tp.name]}," for tp in topics]
        lines += [")", '"""Every topic name, in the topology\'s order."""']
        return lines

    def render_defs(self) -> str:
        lines: list[str] = []
        done: set[str] = set()
        for d in self.defs:
            lines += ["", ""]
            if isinstance(d, _Alias):
                lines += self._render_alias(d, done)
            elif all(is_plain_key(f.key) for f in d.fields):
                # (a key named like a type, `int: str`, does not shadow it: an annotation
                # without a value binds nothing, for Python and mypy alike)
                lines += self._render_class(d, done)
            else:
                lines += self._render_functional(d, done)
            done.add(d.name)
        return "\n".join(lines)

    def _expr(self, expr: str, done: set[str]) -> str:
        """`expr` as code, quoted when it names a class defined later (or the one being defined):
        the module's annotations are evaluated as it is imported."""
        plain = _MARKED.sub(r"\1", expr)
        if any(n not in done for n in _MARKED.findall(expr)):
            return py_str(plain)
        return plain

    def _render_alias(self, d: _Alias, done: set[str]) -> list[str]:
        forward = any(n not in done for n in _MARKED.findall(d.expr))
        one = f"{d.name}: TypeAlias = {self._expr(d.expr, done)}"
        if len(one) <= _LINE or d.exploded is None or forward:
            lines = [one]
        elif d.expr.startswith("Literal["):
            lines = [f"{d.name}: TypeAlias = Literal["]
            lines += [f"    {v}," for v in d.exploded]
            lines.append("]")
        else:
            self.imports.add("Union")
            lines = [f"{d.name}: TypeAlias = Union["]
            lines += [f"    {self._expr(v, done)}," for v in d.exploded]
            lines.append("]")
        if d.doc:
            lines.append(docstring(d.doc))
        return lines

    def _render_class(self, d: _TypedDict, done: set[str]) -> list[str]:
        lines = [f"class {d.name}(TypedDict):"]
        if d.doc:
            lines.append("    " + docstring(d.doc))
        if not d.fields:
            lines.append("    pass" if not d.doc else "")
        elif d.doc:
            lines.append("")
        for f in d.fields:
            ty = self._expr(f.type, done)
            lines.append(f"    {f.key}: {ty if f.required else f'NotRequired[{ty}]'}")
            if f.doc:
                lines.append("    " + docstring(f.doc))
        while lines and lines[-1] == "":
            lines.pop()
        return lines

    def _render_functional(self, d: _TypedDict, done: set[str]) -> list[str]:
        # Keys that are Python keywords or not identifiers (or change as identifiers): the
        # functional form keeps them as written, and field docstrings become comments.
        lines = [f"# {_comment(d.doc)}"] if d.doc else []
        lines += [f"{d.name} = TypedDict(", f"    {py_str(d.name)},", "    {"]
        for f in d.fields:
            if f.doc:
                lines.append(f"        # {_comment(f.doc)}")
            ty = self._expr(f.type, done)
            lines.append(f"        {py_str(f.key)}: {ty if f.required else f'NotRequired[{ty}]'},")
        lines += ["    },", ")"]
        return lines

    def render_helpers(self, topics: Sequence[Topic], payloads: Mapping[str, str]) -> list[str]:
        many = len(topics) > 1
        lines: list[str] = []
        for tp in topics:
            data = _MARKED.sub(r"\1", payloads[tp.name]) if tp.name in payloads else None
            lines += ["", ""] + (["@overload"] if many else [])
            lines += [
                "def event(",
                f"    topic: Literal[{py_str(tp.name)}]," if many else "    topic: TopicName,",
                f"    data: {data or 'Mapping[str, Any]'},",
                "    *,",
                "    actor: str,",
                "    tenant_id: str,",
                "    trace_id: str | None = None,",
                "    event_id: str | None = None,",
            ]
            if many:
                lines.append(") -> EventPayload: ...")
            else:
                lines.append(") -> EventPayload:")
                lines += _EVENT_BODY
        if many:
            lines += [
                "",
                "",
                "def event(",
                "    topic: TopicName,",
                "    data: Any,",
                "    *,",
                "    actor: str,",
                "    tenant_id: str,",
                "    trace_id: str | None = None,",
                "    event_id: str | None = None,",
                ") -> EventPayload:",
                *_EVENT_BODY,
            ]
        for tp in topics:
            data = _MARKED.sub(r"\1", payloads[tp.name]) if tp.name in payloads else None
            lines += ["", ""] + (["@overload"] if many else [])
            lines += [
                "def data_of(",
                f"    topic: Literal[{py_str(tp.name)}]," if many else "    topic: TopicName,",
                "    payload: EventPayload,",
            ]
            if many:
                lines.append(f") -> {data or 'dict[str, Any]'}: ...")
            else:
                lines.append(f") -> {data or 'dict[str, Any]'}:")
                lines.append(_DATA_OF_BODY[0])
                if data:
                    self.imports.add("cast")
                    lines.append(f"    return cast({py_str(data)}, payload.data)")
                else:
                    lines.append("    return payload.data")
        if many:
            lines += [
                "",
                "",
                "def data_of(",
                "    topic: TopicName,",
                "    payload: EventPayload,",
                ") -> Any:",
                *_DATA_OF_BODY,
            ]
        return lines


_EVENT_BODY = [
    '    """An `EventPayload` for `topic` whose `data` mypy checked against its schema."""',
    "    body: Any = data  # a TypedDict is a dict at run time",
    "    if event_id is None:",
    "        return EventPayload(",
    "            data=dict(body),",
    "            actor=actor,",
    "            tenant_id=tenant_id,",
    "            trace_id=trace_id,",
    "        )",
    "    return EventPayload(",
    "        data=dict(body),",
    "        actor=actor,",
    "        tenant_id=tenant_id,",
    "        trace_id=trace_id,",
    "        event_id=event_id,",
    "    )",
]
_DATA_OF_BODY = [
    '    """`payload.data` typed as `topic`\'s payload (the bus checked it against the schema)."""',
    "    return payload.data",
]


def _import_order(name: str) -> tuple[int, str]:
    # isort's "force_sort_within_sections" order: CamelCase names, then functions
    return (1 if name[0].islower() else 0, name)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if not isinstance(value, (list, dict)) else f"`{value!r}`"


def _comment(text: str) -> str:
    return " ".join(text.split())


def _doc_text(text: str) -> str:
    """Text for a comment or a docstring line: one line, no closing triple quotes."""
    return py_str(" ".join(text.split()))[1:-1]

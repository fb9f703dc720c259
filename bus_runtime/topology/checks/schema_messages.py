"""Check 1: the JSON Schema, with each schema error turned into a message a person can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model import (
    DURATION_FIELDS,
    SIZE_FIELDS,
)
from ..schema import fast_check, strict_validator
from ..subjects import NAME_PATTERN, subject_problem
from ..units import UnitError, format_duration, format_size, parse_duration, parse_size
from ..yaml_source import Path as KeyPath
from ..yaml_source import dotted

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

from .base import (
    NAME_KINDS,
    CheckerBase,
    article,
    clip,
    did_you_mean,
    short,
)


class SchemaMessages(CheckerBase):
    """Errors of the format's JSON Schema, at their places, with did-you-mean."""

    # -- 1. the JSON Schema ------------------------------------------------------------
    def check_schema(self) -> None:
        if fast_check()(self.data):
            return
        for error in strict_validator().iter_errors(self.data):
            self._schema_error(error)

    def _schema_error(self, e: ValidationError) -> None:
        path: KeyPath = tuple(e.absolute_path)
        kind = e.validator
        sub: dict[str, Any] = e.schema if isinstance(e.schema, dict) else {}
        if kind == "additionalProperties" and isinstance(e.instance, dict):
            allowed = list(sub.get("properties", {}))
            for key in e.instance:
                if key in allowed:
                    continue
                self.bad_paths.add((*path, key))
                hint = did_you_mean(key, allowed)
                if not hint:
                    hint = f" (expected one of: {', '.join(allowed)})"
                where = f" in `{dotted(path)}`" if path else " at the top level"
                self.err((*path, key), f"unknown key `{key}`{where}{hint}", at_key=True)
            return
        if kind == "propertyNames" or "propertyNames" in e.schema_path:
            # A key that breaks the naming rule: the error's path is its parent mapping.
            key = str(e.instance)
            self.bad_paths.add((*path, key))
            self.err((*path, key), self._name_message(path, key), at_key=True)
            return
        self.bad_paths.add(path)
        leaf = str(path[-1]) if path else ""
        if kind == "enum":
            choices = [str(c) for c in sub.get("enum", [])]
            hint = did_you_mean(str(e.instance), choices)
            self.err(path, f"{short(e.instance)} is not one of {', '.join(choices)}{hint}")
        elif kind == "required":
            missing = e.message.split("'")[1] if "'" in e.message else e.message
            self.err(path, f"missing required key `{missing}`")
        elif kind == "type":
            expected = e.validator_value
            if isinstance(expected, list):
                expected = " or ".join(expected)
            got = (
                f"{type(e.instance).__name__} ({short(e.instance)})"
                if e.instance is not None
                else "nothing (null)"
            )
            self.err(path, f"expected {article(str(expected))}, got {got}")
        elif kind == "pattern":
            self.err(path, self._pattern_message(leaf, e))
        elif kind in ("minimum", "maximum"):
            lo = sub.get("minimum")
            hi = sub.get("maximum")
            if sub.get("$ref") or (leaf in DURATION_FIELDS | SIZE_FIELDS):
                self.err(path, f"{short(e.instance)} is out of range")
            elif lo is not None and hi is not None:
                self.err(path, f"`{leaf}` must be between {lo} and {hi}; got {short(e.instance)}")
            elif lo is not None:
                self.err(path, f"`{leaf}` must be at least {lo}; got {short(e.instance)}")
            else:
                self.err(path, f"`{leaf}` must be at most {hi}; got {short(e.instance)}")
        elif kind == "const" and path == ("version",):
            self.err(
                path,
                f"unsupported format version {short(e.instance)}: this natstopo reads version 1",
            )
        elif kind == "not" and leaf == "max_deliver":
            self.err(path, "`max_deliver` cannot be 0: use a positive number, or -1 for unlimited")
        elif kind == "maxLength" and isinstance(e.instance, str):
            self.err(
                path,
                f"`{leaf}` is {len(e.instance)} characters long; at most {e.validator_value}",
            )
        elif kind == "minItems":
            self.err(path, f"`{leaf}` must not be empty")
        elif kind == "uniqueItems":
            self.err(path, f"`{leaf}` lists the same item twice")
        elif kind == "minProperties":
            self.err(path, f"`{leaf}` must declare at least one entry")
        else:
            self.err(path, clip(e.message, 200))

    def _name_message(self, parent: KeyPath, key: str) -> str:
        kind = NAME_KINDS.get(parent)
        if kind is None and parent:
            last = parent[-1]
            kind = {
                "topics": "topic name",
                "consumers": "consumer (durable) name",
                "streams": "stream name",
                "metadata": "metadata key",
            }.get(str(last), "name")
        if kind in ("stream name", "consumer (durable) name"):
            return (
                f"`{key}` is not a valid {kind}: 1 to 255 characters, none of whitespace, "
                "`.`, `*`, `>`, `/`, `\\`"
            )
        if kind in ("service name", "environment name"):
            return f"`{key}` is not a valid {kind}: lower-case letters, digits and `-` (like `svc-ocr`)"
        if kind == "topic name":
            problem = subject_problem(key, allow_gt=False) or "tokens separated by dots"
            return f"`{key}` is not a valid topic name: {problem}; `>` is not allowed in a topic"
        if kind == "metadata key":
            return f"metadata key `{key}` is reserved: keys starting with `natstopo.` are natstopo's own"
        return f"`{key}` is not a valid {kind}"

    def _pattern_message(self, leaf: str, e: ValidationError) -> str:
        value = clip(e.instance, 80) if isinstance(e.instance, str) else e.instance
        in_backoff = len(e.absolute_path) >= 2 and e.absolute_path[-2] == "backoff"
        if leaf in DURATION_FIELDS or in_backoff:
            try:
                ns = parse_duration(value)
            except UnitError as exc:
                return str(exc)
            # The parser is more lenient than the schema (spaces around it).
            return f"{value!r} is not written as a duration (did you mean '{format_duration(ns)}'?)"
        if leaf in SIZE_FIELDS:
            try:
                size = parse_size(value)
            except UnitError as exc:
                return str(exc)
            # The parser is more lenient than the schema (`1k`, `1Kb`).
            return (
                f"{value!r} is not written as a size: units are KB, MB, GB, TB (powers of 1000) "
                f"and KiB, MiB, GiB, TiB (powers of 1024) (did you mean '{format_size(size)}'?)"
            )
        if leaf in ("service", "publishers") or (
            e.absolute_path and len(e.absolute_path) >= 2 and e.absolute_path[-2] == "publishers"
        ):
            return f"`{value}` is not a valid service name: lower-case letters, digits and `-`"
        if leaf == "subject_prefix":
            problem = subject_problem(str(value), allow_wildcards=False) or "dot-separated tokens"
            return f"`{value}` is not a valid subject prefix: {problem}"
        if leaf == "dead_letter":
            return f"`{value}` is not a valid stream name"
        if leaf == "name":
            return f"`{value}` is not a valid system name: lower-case letters, digits and `-`"
        if e.validator_value == NAME_PATTERN:
            return f"`{value}` is not a valid name"
        return f"{short(value)} does not have the expected form"

"""The topology format's JSON Schema (shipped as package data) and its validators.

`fast_check` is the schema compiled to Python code (a yes/no answer in microseconds);
only a document it refuses goes through jsonschema's `strict_validator`, whose errors
name the failing path.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .json_schema_compiler import Check, Unsupported, compile_check


@cache
def topology_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the topology format, shipped as package data."""
    # Read directly when the package is files on disk: importlib.resources costs more to
    # import than the read itself (a zipped install takes it).
    shipped = Path(__file__).resolve().parent.parent / "schema" / "topology.schema.json"
    if shipped.is_file():
        text = shipped.read_text("utf-8")
    else:
        from importlib import resources

        text = (
            resources.files("bus_runtime")
            .joinpath("schema/topology.schema.json")
            .read_text("utf-8")
        )
    schema: dict[str, Any] = json.loads(text)
    return schema


if TYPE_CHECKING:
    from jsonschema import Draft202012Validator


def _is_integer(_checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def strict_validator() -> Draft202012Validator:
    """jsonschema's validator of the topology schema (imported on first use: a valid file
    is answered by `fast_check` alone, without importing jsonschema)."""
    import jsonschema.validators
    from jsonschema import Draft202012Validator

    # JSON Schema counts 3.0 as an integer; the server's Go structs refuse
    # `"num_replicas": 3.0`, so a float never passes for an integer here.
    strict = jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # untyped upstream
        Draft202012Validator,
        type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
    )
    validator: Draft202012Validator = strict(topology_schema())
    return validator


@cache
def fast_check() -> Check:
    try:
        return compile_check(topology_schema())
    except Unsupported:
        return lambda _doc: False

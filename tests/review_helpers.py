"""What the tests of `natstopo asyncapi`, `graph` and `codegen` share: the topologies they
use and the outside checkers (the official parsers under node, Graphviz's dot, mypy).

A checker that is missing skips its test with the exact reason here, and fails it where
the environment requires it (`.ci/run` sets NATSTOPO_REQUIRE_NODE=1 and
NATSTOPO_REQUIRE_GRAPHVIZ=1): CI must not pass by checking nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "topology" / "topology.yaml"
DOCS_CHECK = ROOT / "tools" / "docs-check.mjs"
NATSTOPO = [sys.executable, "-m", "bus_runtime"]


def require_or_skip(variable: str, reason: str) -> None:
    """Skip with `reason`, or fail when the environment sets `variable=1`."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} ({variable}=1 requires this check)")
    pytest.skip(reason)


def _node_missing(package: str) -> str | None:
    if shutil.which("node") is None:
        return "node is not installed: the official parsers run under node (make node-deps)"
    if not (ROOT / "node_modules" / package / "package.json").is_file():
        return f"node_modules/{package} is missing: run `make node-deps` (npm ci)"
    return None


def docs_check(kind: str, texts: list[str], tmp_path: Path) -> list[dict[str, Any]]:
    """One report per text from tools/docs-check.mjs (`asyncapi` or `mermaid`), in order."""
    package = "@asyncapi/parser" if kind == "asyncapi" else "mermaid"
    missing = _node_missing(package)
    if missing:
        require_or_skip("NATSTOPO_REQUIRE_NODE", missing)
    files = []
    for i, text in enumerate(texts):
        f = tmp_path / f"doc-{kind}-{i}.txt"
        f.write_text(text, encoding="utf-8")
        files.append(str(f))
    proc = subprocess.run(
        ["node", str(DOCS_CHECK), kind, *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    if proc.returncode not in (0, 1):
        require_or_skip("NATSTOPO_REQUIRE_NODE", f"docs-check.mjs could not run: {proc.stderr}")
    out = json.loads(proc.stdout)
    return out if isinstance(out, list) else [out]


def dot_path() -> str:
    dot = shutil.which("dot")
    if dot is None:
        require_or_skip(
            "NATSTOPO_REQUIRE_GRAPHVIZ",
            "Graphviz's dot is not installed (apt-get install graphviz)",
        )
    assert dot is not None
    return dot


def run_natstopo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (a new process: exit code, stdout and stderr as they are)."""
    env = dict(os.environ)
    env.pop("BUS_TOPOLOGY", None)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [*NATSTOPO, *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=120
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() and proc.stderr.count("\n") == 1, proc.stderr


# -- an awkward topology: every corner the generators must handle --------------------------
HARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "x.hard",
    "type": "object",
    "required": ["class", "shape", "tags"],
    "$defs": {
        "point": {
            "type": "object",
            "required": ["x", "y"],
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "additionalProperties": False,
        },
        "node": {
            "type": "object",
            "properties": {
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                "name": {"type": "string"},
            },
        },
        "color": {"enum": ["red", "green"]},
    },
    "properties": {
        "class": {"type": "string", "description": 'A Python keyword, "quoted" \\ here.'},
        "from": {"type": "integer"},
        "my-field": {"type": ["string", "null"]},
        "shape": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["kind", "radius"],
                    "properties": {"kind": {"const": "circle"}, "radius": {"type": "number"}},
                },
                {
                    "type": "object",
                    "required": ["kind", "corner"],
                    "properties": {
                        "kind": {"const": "square"},
                        "corner": {"$ref": "#/$defs/point"},
                    },
                },
            ]
        },
        "tags": {"type": "array", "items": {"enum": ["a", "b", 1, None]}},
        "tree": {"$ref": "#/$defs/node"},
        "color": {"$ref": "#/$defs/color"},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
        "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "ip": {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
        "cond": {"if": {"type": "string"}, "then": {"minLength": 2}},
        "both": {
            "allOf": [
                {"$ref": "#/$defs/point"},
                {"type": "object", "properties": {"z": {"type": "number"}}},
            ]
        },
        "closed": {"type": "object", "unevaluatedProperties": False},
        "typo": {"type": "string", "maxLenght": 3},
    },
    "additionalProperties": False,
}
KEYWORD_SCHEMA = {
    "type": "object",
    "required": ["str", "__x"],
    "properties": {
        "str": {"type": "integer"},
        "__x": {"type": "boolean"},
        "nested": {"$ref": "#"},
        "\ufb01": {"type": "string"},
    },
}
HARD_TOPOLOGY = """\
version: 1
name: edge
services:
  svc-a: {}
  svc-b: {}
streams:
  EDGE:
    subject_prefix: e
    retention: limits
    dead_letter: EDGE_DLQ
    topics:
      x.hard:
        publishers: [svc-a]
        schema: schemas/hard.json
      "class.*.def":
        publishers: [svc-a]
        schema: schemas/kw.json
      class.def:
        publishers: [svc-b]
      "a\\"b<c#d&e`f{x}":
        publishers: [svc-b]
      2fa.enabled:
        publishers: [svc-b]
      topics:
        publishers: [svc-b]
      "a.*.*.b":
        publishers: [svc-a]
    consumers:
      all:
        service: svc-b
      some:
        service: svc-a
        topics: [x.hard, "a.*.*.b"]
  EDGE_DLQ:
    retention: limits
    consumers:
      dlq-reader:
        service: svc-a
"""


def write_hard_topology(tmp_path: Path) -> Path:
    """The awkward topology above, with its schemas, in `tmp_path`; returns the YAML's path."""
    schemas = tmp_path / "schemas"
    schemas.mkdir(exist_ok=True)
    (schemas / "hard.json").write_text(json.dumps(HARD_SCHEMA, indent=2), encoding="utf-8")
    (schemas / "kw.json").write_text(json.dumps(KEYWORD_SCHEMA, indent=2), encoding="utf-8")
    path = tmp_path / "topology.yaml"
    path.write_text(HARD_TOPOLOGY, encoding="utf-8")
    return path


def write_topology(tmp_path: Path, text: str, name: str = "topology.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path

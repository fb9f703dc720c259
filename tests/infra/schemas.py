"""Validation of rendered objects: Kubernetes' own schemas (kubernetes-validate, strict) for
built-in kinds, and the openAPIV3Schema of NACK's CRDs (v0.22.4) for its custom resources."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# The oldest Kubernetes release the objects must run on, and the one the API-server tests use.
KUBERNETES_VERSIONS = ("1.33", "1.36")
# The CRDs NACK v0.22.4 ships, kept here as test data.
NACK_CRDS = Path(__file__).resolve().parent / "data" / "nack-crds.v0.22.4.yml"
CUSTOM_GROUPS = ("jetstream.nats.io/", "monitoring.coreos.com/")


def validate_kubernetes(obj: dict[str, Any]) -> None:
    """Strict (unknown fields are errors) against every version of KUBERNETES_VERSIONS."""
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def _strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists properties:
    what the API server's field validation (strict) refuses instead of pruning silently."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def nack_schemas() -> dict[str, dict[str, Any]]:
    """kind -> openAPIV3Schema of the served and stored version (v1beta2)."""
    out = {}
    for doc in yaml.safe_load_all(NACK_CRDS.read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        for version in doc["spec"]["versions"]:
            if version["name"] == "v1beta2" and version["served"] and version["storage"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                # metadata is the API server's ObjectMeta, checked there, not in the CRD.
                schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                schema["properties"]["apiVersion"] = {"const": "jetstream.nats.io/v1beta2"}
                schema["properties"]["kind"] = {"const": doc["spec"]["names"]["kind"]}
                out[doc["spec"]["names"]["kind"]] = _strict(schema)
    return out


def validate_nack(obj: dict[str, Any]) -> None:
    jsonschema.validate(obj, nack_schemas()[obj["kind"]])


def crd_defaults(kind: str) -> dict[str, Any]:
    """The spec fields of a NACK CRD that have a default, and the default."""
    spec = nack_schemas()[kind]["properties"]["spec"]["properties"]
    return {k: v["default"] for k, v in spec.items() if "default" in v}


CERT_MANAGER_CHECK = Path(__file__).resolve().parents[2] / "tools" / "cert-manager-check.mjs"
CERT_MANAGER_MODELS = "@kubernetes-models/cert-manager"


def validate_cert_manager(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One report per object from tools/cert-manager-check.mjs: the validators that
    @kubernetes-models/cert-manager generates from cert-manager's CRD schemas.

    Skips when node or the package is missing, unless NATSTOPO_REQUIRE_NODE=1."""
    import json
    import os
    import shutil
    import subprocess

    import pytest

    root = CERT_MANAGER_CHECK.parents[1]
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed (make node-deps)"
    elif not (root / "node_modules" / CERT_MANAGER_MODELS / "package.json").is_file():
        missing = f"node_modules/{CERT_MANAGER_MODELS} is missing: run `make node-deps`"
    if missing:
        if os.environ.get("NATSTOPO_REQUIRE_NODE") == "1":
            pytest.fail(f"{missing} (NATSTOPO_REQUIRE_NODE=1 requires this check)")
        pytest.skip(missing)
    proc = subprocess.run(
        ["node", str(CERT_MANAGER_CHECK)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    reports: list[dict[str, Any]] = json.loads(proc.stdout)
    return reports

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

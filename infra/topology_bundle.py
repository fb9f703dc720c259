"""`TopologyBundle`: the topology file and its payload schemas, as a ConfigMap for application pods.

Applications load the same topology the stack deployed: they mount the ConfigMap with the
`volume()` that `bundle_objects` describes (each schema lands at its path relative to the
topology file), read `NATSTOPO_TOPOLOGY_FINGERPRINT` from their environment and compare it
with `load_topology(...).fingerprint` at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from bus_runtime import Topology

TYPE = "natstopo:topology_bundle:TopologyBundle"
TOPOLOGY_KEY = "topology.yaml"
FINGERPRINT_KEY = "fingerprint"
FINGERPRINT_ANNOTATION = "natstopo.io/topology-fingerprint"
MOUNT_PATH = "/etc/natstopo"
_KEY_CHARS = re.compile(r"[^-._a-zA-Z0-9]")


class BundleError(ValueError):
    """A payload schema cannot be bundled (outside the topology's folder, or unreadable)."""


@dataclass(frozen=True)
class Bundle:
    """The ConfigMap's content and how a pod mounts it.

    Attributes:
        data: ConfigMap keys to file contents.
        items: ConfigMap key to the path (relative to the mount) where a pod sees it.
        fingerprint: The topology's fingerprint.
    """

    data: dict[str, str]
    items: tuple[tuple[str, str], ...]
    fingerprint: str

    def volume(self, config_map: str, name: str = "topology") -> dict[str, Any]:
        """A pod volume that lays the files out as in the repository."""
        return {
            "name": name,
            "configMap": {
                "name": config_map,
                "items": [{"key": k, "path": p} for k, p in self.items],
            },
        }


def _key(path: str) -> str:
    return _KEY_CHARS.sub("_", path.replace("/", "__"))


def bundle_files(topology: Topology) -> Bundle:
    """The topology file and every schema it names, keyed for a ConfigMap.

    Raises:
        BundleError: A schema path leaves the topology's folder or cannot be read.
    """
    if topology.source is None:
        raise BundleError("the topology was not loaded from a file")
    source = Path(topology.source)
    root = source.parent.resolve()
    data = {TOPOLOGY_KEY: source.read_text(encoding="utf-8"), FINGERPRINT_KEY: topology.fingerprint}
    items = [(TOPOLOGY_KEY, TOPOLOGY_KEY), (FINGERPRINT_KEY, FINGERPRINT_KEY)]
    for path in sorted({t.schema_file for t in topology.topics if t.schema_file}):
        file = (root / path).resolve()
        if not file.is_relative_to(root):
            raise BundleError(f"schema {path} lies outside the topology's folder {root}")
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise BundleError(f"cannot read schema {path}: {exc}") from exc
        rel = file.relative_to(root).as_posix()
        key = _key(rel)
        if key in data:
            raise BundleError(f"schemas {rel} and another one map to the same key {key}")
        data[key] = text
        items.append((key, rel))
    return Bundle(data=data, items=tuple(items), fingerprint=topology.fingerprint)


class TopologyBundleArgs(TypedDict):
    """Arguments of `TopologyBundle`."""

    topology: Topology
    """The loaded topology (its file and the schemas it names are bundled)."""
    namespace: str | None
    """The namespace of the ConfigMap, or None for the provider's default."""
    labels: dict[str, str]
    """Labels of the ConfigMap."""


class TopologyBundle(pulumi.ComponentResource):
    """A ConfigMap `<topology>-topology` holding the topology and its schemas.

    Outputs:
        config_map: The ConfigMap's name.
        fingerprint: The topology's fingerprint.
        volume: The pod volume that mounts it with the repository's layout.
    """

    config_map: pulumi.Output[str]
    fingerprint: pulumi.Output[str]
    volume: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: TopologyBundleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        topology = args["topology"]
        bundle = bundle_files(topology)
        cm_name = f"{topology.name}-topology"
        meta: Any = {
            "name": cm_name,
            "labels": dict(args["labels"]),
            "annotations": {FINGERPRINT_ANNOTATION: bundle.fingerprint},
        }
        if args["namespace"] is not None:
            meta["namespace"] = args["namespace"]
        k8s.core.v1.ConfigMap(
            f"{name}-config-map",
            metadata=meta,
            data=bundle.data,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.config_map = pulumi.Output.from_input(cm_name)
        self.fingerprint = pulumi.Output.from_input(bundle.fingerprint)
        self.volume = pulumi.Output.from_input(bundle.volume(cm_name))
        self.register_outputs(
            {"config_map": self.config_map, "fingerprint": self.fingerprint, "volume": self.volume}
        )

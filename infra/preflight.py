"""Checks before anything is deployed: what the cluster cannot hold or run, found from the model.

Each check turns into one line of a `pulumi.RunError` (the program stops before it
registers any resource, so nothing is half-applied): a stream's replicas above the cluster
size, the topology's file or memory storage above what each server has, messages larger
than the server accepts, a server image older than the topology's features need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus_runtime import Topology
from stack_settings import ClusterSettings, human_size

# The first nats-server release bringing each feature the topology format can use. The
# reconciler holds the same facts (bus_runtime.jetstream.rules, not public);
# tests/infra/test_preflight.py fails when the two disagree.
MIN_SERVER = (2, 10, 0)  # stream and consumer metadata: natstopo marks what it manages
STREAM_FEATURES: dict[str, tuple[str, tuple[int, int, int], object]] = {
    "allow_msg_ttl": ("per-message TTL", (2, 11, 0), False),
    "subject_delete_marker_ttl": ("subject delete markers", (2, 11, 0), 0),
    "allow_batched": ("fast batch publish", (2, 14, 0), False),
}
CONSUMER_FEATURES: dict[str, tuple[str, tuple[int, int, int], object]] = {}
LAME_DUCK_MINIMUM = 30  # seconds; the NATS docs: lame_duck_duration cannot be lower


@dataclass
class Findings:
    """What the checks found: errors stop the deployment, warnings are logged."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _v(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def required_server_version(topology: Topology) -> tuple[tuple[int, int, int], str]:
    """The oldest server that runs the topology, and the field that needs it."""
    need, why = MIN_SERVER, "stream and consumer metadata (natstopo marks the assets it manages)"
    for stream, consumer in topology.iter_assets():
        table = STREAM_FEATURES if consumer is None else CONSUMER_FEATURES
        asset = stream if consumer is None else consumer
        where = f"streams.{stream.name}" + (f".consumers.{consumer.name}" if consumer else "")
        for fld, (feature, version, default) in table.items():
            value = getattr(asset, fld)
            if value is not None and value != default and version > need:
                need, why = version, f"`{where}.{fld}` ({feature})"
    return need, why


def check_cluster(cluster: ClusterSettings, topology: Topology) -> Findings:
    """Every problem of running `topology` on `cluster`, each a sentence naming the fields."""
    found = Findings()
    size = cluster.replicas
    for stream, consumer in topology.iter_assets():
        asset = stream if consumer is None else consumer
        replicas = asset.replicas
        if replicas is not None and replicas > size:
            where = f"streams.{stream.name}" + (f".consumers.{consumer.name}" if consumer else "")
            found.errors.append(
                f"`{where}.replicas` is {replicas}, above the cluster's {size} server(s) "
                f"(natstopo:cluster.replicas): JetStream cannot place {replicas} copies; lower the "
                f"replicas in environment `{topology.environment}` or grow the cluster"
            )
    _check_storage(found, cluster, topology, "file")
    _check_storage(found, cluster, topology, "memory")
    for stream in topology.streams:
        if stream.max_msg_size is not None and stream.max_msg_size > cluster.max_payload:
            found.errors.append(
                f"`streams.{stream.name}.max_msg_size` is {human_size(stream.max_msg_size)}, "
                f"above the server's max_payload {human_size(cluster.max_payload)} "
                "(natstopo:cluster.limits.maxPayload): such messages could never be published"
            )
    need, why = required_server_version(topology)
    have = cluster.version
    if have is None:
        found.errors.append(
            f"cannot tell the nats-server version from image `{cluster.image}`: tag it with the "
            "version (nats:2.15.1-alpine) or set natstopo:cluster.serverVersion"
        )
    elif have < need:
        found.errors.append(
            f"image `{cluster.image}` runs nats-server {_v(have)}, but {why} needs {_v(need)} "
            "or newer: upgrade the image (natstopo:cluster.image)"
        )
    if cluster.lame_duck_duration < LAME_DUCK_MINIMUM:
        found.errors.append(
            f"natstopo:cluster.lameDuck.duration is {cluster.lame_duck_duration}s; nats-server "
            f"needs at least {LAME_DUCK_MINIMUM}s"
        )
    go_mem_limit = cluster.memory_bytes * 8 // 10
    if cluster.max_memory_store > go_mem_limit:
        found.errors.append(
            f"natstopo:cluster.jetstream.maxMemoryStore {human_size(cluster.max_memory_store)} is "
            f"above GOMEMLIMIT {human_size(go_mem_limit)} (80 % of the memory limit "
            f"{cluster.memory}): memory streams would push the server out of memory"
        )
    if cluster.file_store_bytes > cluster.volume_bytes:
        found.errors.append(
            f"natstopo:cluster.jetstream.maxFileStore {human_size(cluster.file_store_bytes)} is "
            f"above the volume size {cluster.volume_size}"
        )
    return found


def _check_storage(
    found: Findings, cluster: ClusterSettings, topology: Topology, kind: str
) -> None:
    """Each server holds its share of every stream: max_bytes x replicas / servers."""
    streams = [s for s in topology.streams if s.storage == kind]
    if not streams:
        return
    capacity = cluster.file_store_bytes if kind == "file" else cluster.max_memory_store
    setting = (
        f"natstopo:cluster.volume.size {cluster.volume_size} (max_file_store "
        f"{human_size(capacity)})"
        if kind == "file"
        else f"natstopo:cluster.jetstream.maxMemoryStore {human_size(capacity)}"
    )
    unbounded = [s.name for s in streams if s.max_bytes is None or s.max_bytes < 0]
    if unbounded:
        found.warnings.append(
            f"{kind} stream(s) {', '.join(unbounded)} set no max_bytes: their storage is not "
            "bounded, so the storage check cannot count them"
        )
    bounded = [s for s in streams if s.name not in unbounded]
    size = cluster.replicas
    parts: list[str] = []
    per_server = 0.0
    for s in bounded:
        assert s.max_bytes is not None
        copies = min(s.replicas, size)
        per_server += s.max_bytes * copies / size
        parts.append(f"{s.name} {human_size(s.max_bytes)} x R{s.replicas}")
        if s.max_bytes > capacity:
            found.errors.append(
                f"`streams.{s.name}.max_bytes` {human_size(s.max_bytes)} ({kind} storage) does "
                f"not fit on one server: {setting}"
            )
    if per_server > capacity:
        found.errors.append(
            f"the topology's {kind} storage needs {human_size(int(per_server))} per server "
            f"({' + '.join(parts)}, over {size} server(s)), above {setting}; grow it or lower "
            f"max_bytes in environment `{topology.environment}`"
        )

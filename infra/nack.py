"""`NackProvisioner`: the topology's streams and consumers as NACK custom resources.

NACK (the NATS JetStream controller, CRDs jetstream.nats.io/v1beta2) has defaults of its
own that differ from the server's: a Stream without `storage` is a memory stream, a
Consumer without `ackWait` waits 1ns. So every resource spells out storage, retention,
discard, the ack and deliver policies and the ack wait, and durations are written the way
Go's ParseDuration reads them (`168h`, never `7d`). Streams hold data: they carry
`preventDelete` unless the stack allows destructive changes, so removing one from the
topology deletes the resource and leaves the stream and its messages on the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from bus_runtime import Consumer, Stream, Topology

TYPE = "natstopo:nack:NackProvisioner"
API_VERSION = "jetstream.nats.io/v1beta2"
# The server's ack wait when a consumer sets none (NACK's own default would be 1ns).
SERVER_ACK_WAIT = 30_000_000_000
# Metadata keys the reconciler reads to tell what a topology manages (same as `natstopo apply`).
MARK_TOPOLOGY = "natstopo.topology"
MARK_SERVICE = "natstopo.service"

# Topology field -> NACK Stream spec field; durations are marked.
STREAM_FIELDS: dict[str, str] = {
    "description": "description",
    "retention": "retention",
    "storage": "storage",
    "replicas": "replicas",
    "max_age": "maxAge",
    "max_bytes": "maxBytes",
    "max_msgs": "maxMsgs",
    "max_msgs_per_subject": "maxMsgsPerSubject",
    "max_msg_size": "maxMsgSize",
    "max_consumers": "maxConsumers",
    "discard": "discard",
    "discard_new_per_subject": "discardPerSubject",
    "duplicate_window": "duplicateWindow",
    "compression": "compression",
    "allow_rollup_hdrs": "allowRollup",
    "deny_delete": "denyDelete",
    "deny_purge": "denyPurge",
    "allow_direct": "allowDirect",
    "allow_msg_ttl": "allowMsgTtl",
    "subject_delete_marker_ttl": "subjectDeleteMarkerTtl",
}
CONSUMER_FIELDS: dict[str, str] = {
    "description": "description",
    "ack_policy": "ackPolicy",
    "ack_wait": "ackWait",
    "max_deliver": "maxDeliver",
    "backoff": "backoff",
    "max_ack_pending": "maxAckPending",
    "deliver_policy": "deliverPolicy",
    "opt_start_seq": "optStartSeq",
    "replay_policy": "replayPolicy",
    "max_waiting": "maxWaiting",
    "max_request_batch": "maxRequestBatch",
    "max_request_expires": "maxRequestExpires",
    "replicas": "replicas",
    "mem_storage": "memStorage",
    "headers_only": "headersOnly",
}
DURATIONS = frozenset(
    {"max_age", "duplicate_window", "subject_delete_marker_ttl", "ack_wait", "max_request_expires"}
)
_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_UNITS = (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9))


class NackError(ValueError):
    """The topology sets something NACK cannot express."""


def go_duration(ns: int) -> str:
    """A duration as Go's ParseDuration reads it: `168h`, `1m30s`, `500ms`, `0s`."""
    if ns == 0:
        return "0s"
    out = ""
    rest = ns
    for unit, size in _UNITS:
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    for unit, size in (("ms", 10**6), ("us", 10**3), ("ns", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def resource_name(*parts: str) -> str:
    """A Kubernetes object name (DNS subdomain) for a stream or consumer."""
    name = "-".join(_NAME_CHARS.sub("-", p.lower()).strip("-") for p in parts)
    return name[:253].rstrip("-")


@dataclass(frozen=True)
class NackTarget:
    """Where NACK's resources point and what they may do.

    Attributes:
        servers: Server URLs written into each resource (NACK connects there).
        namespace: Namespace of the resources, or None for the provider's default.
        account: A NACK Account resource to bind to, or None.
        prevent_delete: Streams keep their messages when their resource is deleted.
        labels: Labels of every resource.
    """

    servers: tuple[str, ...]
    namespace: str | None
    account: str | None
    prevent_delete: bool
    labels: dict[str, str]


ALLOW_DESTRUCTIVE_ANNOTATION = "natstopo.io/allow-destructive"


def _meta(name: str, target: NackTarget) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(target.labels)}
    if target.namespace is not None:
        meta["namespace"] = target.namespace
    if not target.prevent_delete:
        # The stack allows destructive changes: the policy pack reads this.
        meta["annotations"] = {ALLOW_DESTRUCTIVE_ANNOTATION: "true"}
    return meta


def _connection(target: NackTarget) -> dict[str, Any]:
    conn: dict[str, Any] = {"servers": list(target.servers)}
    if target.account is not None:
        conn["account"] = target.account
    return conn


def _value(fld: str, value: Any) -> Any:
    if fld == "backoff":
        return [go_duration(int(v)) for v in value]
    if fld in DURATIONS:
        return go_duration(int(value))
    if isinstance(value, tuple):
        return list(value)
    return value


def nack_stream(stream: Stream, topology: Topology, target: NackTarget) -> dict[str, Any]:
    """The NACK Stream resource of `stream`.

    Raises:
        NackError: The stream sets a field that NACK v1beta2 has no place for.
    """
    spec: dict[str, Any] = {"name": stream.name, "subjects": list(stream.subjects)}
    for fld, value in stream.settings().items():
        if value is None:
            continue
        if fld not in STREAM_FIELDS:
            if value is False:
                continue  # a stream's boolean settings are off when the key is absent
            raise NackError(f"`streams.{stream.name}.{fld}` has no NACK Stream field (v1beta2)")
        spec[STREAM_FIELDS[fld]] = _value(fld, value)
    spec["metadata"] = {**dict(stream.metadata), MARK_TOPOLOGY: topology.name}
    spec["preventDelete"] = target.prevent_delete
    spec["preventUpdate"] = False
    spec.update(_connection(target))
    return {
        "apiVersion": API_VERSION,
        "kind": "Stream",
        "metadata": _meta(resource_name(stream.name), target),
        "spec": spec,
    }


def nack_consumer(consumer: Consumer, topology: Topology, target: NackTarget) -> dict[str, Any]:
    """The NACK Consumer resource of `consumer` (always with an ack wait: NACK's is 1ns).

    Raises:
        NackError: The consumer sets a field that NACK v1beta2 has no place for.
    """
    spec: dict[str, Any] = {"durableName": consumer.name, "streamName": consumer.stream}
    for fld, value in consumer.settings().items():
        if value is None:
            continue
        if fld not in CONSUMER_FIELDS:
            raise NackError(
                f"`streams.{consumer.stream}.consumers.{consumer.name}.{fld}` has no NACK "
                "Consumer field (v1beta2)"
            )
        spec[CONSUMER_FIELDS[fld]] = _value(fld, value)
    if "ackWait" not in spec:
        # The server takes backoff[0] as the ack wait when there is a backoff.
        wait = consumer.backoff[0] if consumer.backoff else SERVER_ACK_WAIT
        spec["ackWait"] = go_duration(wait)
    if len(consumer.filter_subjects) == 1:
        spec["filterSubject"] = consumer.filter_subjects[0]
    elif consumer.filter_subjects:
        spec["filterSubjects"] = list(consumer.filter_subjects)
    spec["metadata"] = {
        **dict(consumer.metadata),
        MARK_TOPOLOGY: topology.name,
        MARK_SERVICE: consumer.service,
    }
    # A consumer holds a position, not messages: deleting it with its resource is safe.
    spec["preventDelete"] = False
    spec["preventUpdate"] = False
    spec.update(_connection(target))
    return {
        "apiVersion": API_VERSION,
        "kind": "Consumer",
        "metadata": _meta(resource_name(consumer.stream, consumer.name), target),
        "spec": spec,
    }


def nack_resources(topology: Topology, target: NackTarget) -> list[dict[str, Any]]:
    """Every stream's resource, each followed by its consumers' resources.

    Raises:
        NackError: A field NACK cannot express, or two assets whose names map to one
            Kubernetes name.
    """
    out: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for stream, consumer in topology.iter_assets():
        res = (
            nack_stream(stream, topology, target)
            if consumer is None
            else nack_consumer(consumer, topology, target)
        )
        key = (res["kind"], res["metadata"]["name"])
        asset = stream.name if consumer is None else f"{stream.name}/{consumer.name}"
        if key in seen:
            raise NackError(
                f"{asset} and {seen[key]} both map to the {key[0]} resource name {key[1]}"
            )
        seen[key] = asset
        out.append(res)
    return out


class NackProvisionerArgs(TypedDict):
    """Arguments of `NackProvisioner`."""

    topology: Topology
    """The topology whose streams and consumers are rendered."""
    target: NackTarget
    """Where the resources point and whether streams keep their data on delete."""


class NackProvisioner(pulumi.ComponentResource):
    """NACK Stream and Consumer resources for every declared stream and consumer.

    Outputs:
        streams: Names of the streams.
        consumers: `STREAM/consumer` names.
    """

    streams: pulumi.Output[list[str]]
    consumers: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: NackProvisionerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        topology = args["topology"]
        streams: dict[str, k8s.apiextensions.CustomResource] = {}
        for res in nack_resources(topology, args["target"]):
            spec = res["spec"]
            kind = res["kind"]
            stream_name = spec["name"] if kind == "Stream" else spec["streamName"]
            depends = [] if kind == "Stream" else [streams[stream_name]]
            created = k8s.apiextensions.CustomResource(
                f"{name}-{res['metadata']['name']}-{kind.lower()}",
                api_version=res["apiVersion"],
                kind=kind,
                metadata=res["metadata"],
                spec=spec,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
            )
            if kind == "Stream":
                streams[stream_name] = created
        self.streams = pulumi.Output.from_input([s.name for s in topology.streams])
        self.consumers = pulumi.Output.from_input(
            [f"{c.stream}/{c.name}" for c in topology.consumers]
        )
        self.register_outputs({"streams": self.streams, "consumers": self.consumers})

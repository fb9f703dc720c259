"""One declared stream or consumer against its live config: the differing fields, the config
an update sends and the config a create sends.

Every field the format knows (for the server's version) is compared, set or not: a field
the topology leaves out means the server's default, so removing `max_age: 1d` from a
stream plans `max_age: 1d -> 0` and an out-of-band `max_msgs_per_subject` is drift. Both
sides go through `rules.effective`, the value the server stores, so a plan converges.

An update is the server's own config with every field the format knows replaced by the
topology's value, or left out when the topology does not set it: the server then applies
its own default (measured on each version: omitting a key resets it). Keys the format does
not know (newer servers' fields) are sent back as the server gave them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..jetstream.rules import (
    Kind,
    StreamState,
    Version,
    classify,
    effective,
    known,
    unknown_keys,
)
from ..topology.model import Consumer, Stream, Topology
from .marks import (
    MARK_FINGERPRINT,
    MARK_SERVICE,
    MARK_TOPOLOGY,
    asset_fingerprint,
    merged_metadata,
    metadata_fields,
)
from .plan import FieldChange

_FILTER_KEYS = ("filter_subject", "filter_subjects")


def _consumer_filters(cfg: Mapping[str, Any]) -> list[str]:
    if cfg.get("filter_subjects"):
        return sorted(cfg["filter_subjects"])
    return [cfg["filter_subject"]] if cfg.get("filter_subject") else []


def _without_unknown(cfg: dict[str, Any], kind: Kind, server: Version) -> dict[str, Any]:
    for key in unknown_keys(kind, server):
        cfg.pop(key, None)
    return cfg


def stream_create_config(stream: Stream, topology: Topology, server: Version) -> dict[str, Any]:
    cfg = _without_unknown(stream.to_stream_config(), "stream", server)
    md = dict(cfg.get("metadata") or {})
    md[MARK_TOPOLOGY] = topology.name
    md[MARK_FINGERPRINT] = asset_fingerprint(cfg)
    cfg["metadata"] = md
    return cfg


def consumer_create_config(
    consumer: Consumer, topology: Topology, server: Version
) -> dict[str, Any]:
    cfg = _without_unknown(consumer.to_consumer_config(), "consumer", server)
    md = dict(cfg.get("metadata") or {})
    md[MARK_TOPOLOGY] = topology.name
    md[MARK_SERVICE] = consumer.service
    md[MARK_FINGERPRINT] = asset_fingerprint(cfg)
    cfg["metadata"] = md
    return cfg


def _update_config(
    kind: Kind, live: Mapping[str, Any], create: Mapping[str, Any], server: Version
) -> dict[str, Any]:
    """The live config without every key the format knows, plus the topology's values."""
    drop = {r.key for r in known(kind, server)} | {"metadata"}
    if kind == "consumer":
        drop |= set(_FILTER_KEYS)
    update = {k: v for k, v in live.items() if k not in drop}
    update.update({k: v for k, v in create.items() if k != "metadata"})
    return update


def _compare(
    kind: Kind,
    live: Mapping[str, Any],
    update: Mapping[str, Any],
    server: Version,
    state: StreamState | None,
    stream_replicas: int = 1,
) -> list[FieldChange]:
    fields: list[FieldChange] = []
    for rule in known(kind, server):
        have = effective(kind, rule.key, live, stream_replicas=stream_replicas)
        want = effective(kind, rule.key, update, stream_replicas=stream_replicas)
        if have != want:
            effect, reason = classify(kind, rule.field, have, want, server, state, config=update)
            fields.append(FieldChange(rule.field, _plain(have), _plain(want), effect, reason))
    return fields


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def diff_stream(
    stream: Stream,
    live: dict[str, Any],
    topology: Topology,
    server: Version,
    state: StreamState | None = None,
) -> tuple[list[FieldChange], dict[str, Any]]:
    """The differing fields of a stream and the config an update sends.

    `state` (what the stream holds) decides whether a lowered limit deletes messages;
    None means the worst case.
    """
    create = stream_create_config(stream, topology, server)
    update = _update_config("stream", live, create, server)
    fields = _compare("stream", live, update, server, state)
    want_subjects = sorted(stream.subjects)
    have_subjects = sorted(live.get("subjects") or [])
    if want_subjects != have_subjects:
        fields.append(FieldChange("subjects", have_subjects, want_subjects))
    marks = {MARK_TOPOLOGY: topology.name, MARK_FINGERPRINT: create["metadata"][MARK_FINGERPRINT]}
    fields += metadata_fields(stream.metadata, live.get("metadata"), marks)
    update["metadata"] = merged_metadata(live.get("metadata"), stream.metadata, marks)
    return fields, update


def diff_consumer(
    consumer: Consumer,
    live: dict[str, Any],
    stream_replicas: int,
    topology: Topology,
    server: Version,
    state: StreamState | None = None,
) -> tuple[list[FieldChange], dict[str, Any]]:
    """The differing fields of a consumer and the config an update sends.

    `state` (its stream's messages and consumers) decides whether narrowing its filters on
    an interest stream drops messages; None means the worst case.
    """
    create = consumer_create_config(consumer, topology, server)
    update = _update_config("consumer", live, create, server)
    for key in ("name", "durable_name"):
        if key in live:
            update[key] = live[key]
    fields = _compare("consumer", live, update, server, None, stream_replicas)
    want_filters = sorted(consumer.filter_subjects)
    have_filters = _consumer_filters(live)
    if want_filters != have_filters:
        retention = topology.stream(consumer.stream).retention
        effect, reason = classify(
            "consumer",
            "filter_subjects",
            have_filters,
            want_filters,
            server,
            state,
            config=update,
            retention=retention,
        )
        fields.append(FieldChange("filter_subjects", have_filters, want_filters, effect, reason))
    marks = {
        MARK_TOPOLOGY: topology.name,
        MARK_SERVICE: consumer.service,
        MARK_FINGERPRINT: create["metadata"][MARK_FINGERPRINT],
    }
    fields += metadata_fields(consumer.metadata, live.get("metadata"), marks)
    update["metadata"] = merged_metadata(live.get("metadata"), consumer.metadata, marks)
    return fields, update

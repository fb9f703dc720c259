"""One declared stream or consumer against its live config: the differing fields, the config
an update sends (the server's own, with only the topology's fields changed) and the
config a create sends."""

from __future__ import annotations

import copy
from typing import Any

from ..jetstream.rules import (
    CONSUMER_DEFAULTS,
    classify_consumer_field,
    classify_stream_field,
    dropped_fields,
    stream_value,
)
from ..topology.model import CONSUMER_FIELD_TO_API, STREAM_FIELD_TO_API, Consumer, Stream, Topology
from .marks import (
    MARK_FINGERPRINT,
    MARK_SERVICE,
    MARK_TOPOLOGY,
    asset_fingerprint,
    merged_metadata,
    metadata_fields,
)
from .plan import FieldChange, jsonable


def _same(fld: str, want: Any, have: Any) -> bool:
    if isinstance(want, tuple | list) or isinstance(have, tuple | list):
        return list(want or []) == list(have or [])
    if fld == "description":
        return (want or None) == (have or None)
    return bool(want == have)


def _consumer_filters(cfg: dict[str, Any]) -> list[str]:
    if cfg.get("filter_subjects"):
        return sorted(cfg["filter_subjects"])
    return [cfg["filter_subject"]] if cfg.get("filter_subject") else []


def stream_create_config(
    stream: Stream, topology: Topology, server: tuple[int, int, int]
) -> dict[str, Any]:
    cfg = stream.to_stream_config()
    for fld in dropped_fields(stream, server):
        cfg.pop(STREAM_FIELD_TO_API[fld], None)
    md = dict(cfg.get("metadata") or {})
    md[MARK_TOPOLOGY] = topology.name
    md[MARK_FINGERPRINT] = asset_fingerprint(cfg)
    cfg["metadata"] = md
    return cfg


def consumer_create_config(
    consumer: Consumer, topology: Topology, server: tuple[int, int, int]
) -> dict[str, Any]:
    cfg = consumer.to_consumer_config()
    for fld in dropped_fields(consumer, server):
        cfg.pop(CONSUMER_FIELD_TO_API[fld], None)
    md = dict(cfg.get("metadata") or {})
    md[MARK_TOPOLOGY] = topology.name
    md[MARK_SERVICE] = consumer.service
    md[MARK_FINGERPRINT] = asset_fingerprint(cfg)
    cfg["metadata"] = md
    return cfg


def diff_stream(
    stream: Stream, live: dict[str, Any], topology: Topology, server: tuple[int, int, int]
) -> tuple[list[FieldChange], dict[str, Any]]:
    """The differing fields of a stream and the update config (the live one, overlaid)."""
    fields: list[FieldChange] = []
    dropped = dropped_fields(stream, server)
    update = copy.deepcopy(live)
    for fld, key in STREAM_FIELD_TO_API.items():
        want = getattr(stream, fld)
        if want is None or fld in dropped:
            continue
        have = stream_value(live, key)
        update[key] = jsonable(want)
        if not _same(fld, stream_value({key: want}, key), have):
            effect, reason = classify_stream_field(fld, have, want)
            fields.append(FieldChange(fld, have, want, effect, reason))
    want_subjects = sorted(stream.subjects)
    have_subjects = sorted(live.get("subjects") or [])
    update["subjects"] = list(stream.subjects)
    if want_subjects != have_subjects:
        fields.append(FieldChange("subjects", have_subjects, want_subjects))
    create = stream_create_config(stream, topology, server)
    marks = {MARK_TOPOLOGY: topology.name, MARK_FINGERPRINT: create["metadata"][MARK_FINGERPRINT]}
    fields += metadata_fields(stream.metadata, live.get("metadata"), marks)
    update["metadata"] = merged_metadata(live.get("metadata"), stream.metadata, marks)
    return fields, update


def diff_consumer(
    consumer: Consumer,
    live: dict[str, Any],
    stream_replicas: int,
    topology: Topology,
    server: tuple[int, int, int],
) -> tuple[list[FieldChange], dict[str, Any]]:
    fields: list[FieldChange] = []
    dropped = dropped_fields(consumer, server)
    update = copy.deepcopy(live)
    for fld, key in CONSUMER_FIELD_TO_API.items():
        want = getattr(consumer, fld)
        if want is None or fld in dropped:
            continue
        have = live.get(key, CONSUMER_DEFAULTS.get(key))
        if fld == "replicas" and not have:
            have = stream_replicas  # 0: the consumer follows its stream
        update[key] = jsonable(want)
        if not _same(fld, want, have):
            effect, reason = classify_consumer_field(fld, have, want)
            fields.append(FieldChange(fld, have, want, effect, reason))
    want_filters = sorted(consumer.filter_subjects)
    have_filters = _consumer_filters(live)
    update.pop("filter_subject", None)
    update.pop("filter_subjects", None)
    if len(consumer.filter_subjects) == 1:
        update["filter_subject"] = consumer.filter_subjects[0]
    elif consumer.filter_subjects:
        update["filter_subjects"] = list(consumer.filter_subjects)
    if want_filters != have_filters:
        fields.append(FieldChange("filter_subjects", have_filters, want_filters))
    create = consumer_create_config(consumer, topology, server)
    marks = {
        MARK_TOPOLOGY: topology.name,
        MARK_SERVICE: consumer.service,
        MARK_FINGERPRINT: create["metadata"][MARK_FINGERPRINT],
    }
    fields += metadata_fields(consumer.metadata, live.get("metadata"), marks)
    update["metadata"] = merged_metadata(live.get("metadata"), consumer.metadata, marks)
    return fields, update

"""The server's rules: its defaults, the versions that bring fields, and how a field may change.

One place for what a server does with a config (read from nats-server's sources, to be
proven per version by the conformance tests against real servers):

- `STREAM_DEFAULTS` / `CONSUMER_DEFAULTS`: the server's own default of each field (what a
  create without the key gets, and what a config means when the server leaves the key
  out); natstopo's built-in defaults, which differ on purpose, are the topology loader's;
- `STREAM_FEATURES` / `CONSUMER_FEATURES`: fields that need a newer server than 2.10;
- `classify_stream_field` / `classify_consumer_field`: in place, replace or destructive.
"""

from __future__ import annotations

from typing import Any, Literal

from .._errors import UnsupportedFeatureError
from ..topology.model import Consumer, Stream, Topology
from ..topology.units import SECOND, format_duration, format_size

Effect = Literal["in_place", "replace", "destructive"]

MIN_SERVER = (2, 10, 0)
# Fields that need a newer server than MIN_SERVER: (feature, first version, default value).
# A field set to its default is simply not sent to an older server; any other value fails.
STREAM_FEATURES: dict[str, tuple[str, tuple[int, int, int], object]] = {
    "allow_msg_ttl": ("per-message TTL", (2, 11, 0), False),
    "subject_delete_marker_ttl": ("subject delete markers", (2, 11, 0), 0),
}
CONSUMER_FEATURES: dict[str, tuple[str, tuple[int, int, int], object]] = {}

# The server's defaults, by API key (it omits empty values from the configs it reports).
STREAM_DEFAULTS: dict[str, Any] = {
    "description": None,
    "max_age": 0,
    "max_bytes": -1,
    "max_msgs": -1,
    "max_msgs_per_subject": -1,
    "max_msg_size": -1,
    "max_consumers": -1,
    "discard": "old",
    "discard_new_per_subject": False,
    "duplicate_window": 0,
    "compression": "none",
    "allow_rollup_hdrs": False,
    "deny_delete": False,
    "deny_purge": False,
    "allow_direct": False,
    "allow_msg_ttl": False,
    "subject_delete_marker_ttl": 0,
    "retention": "limits",
    "storage": "file",
    "num_replicas": 1,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "description": None,
    "ack_policy": "none",
    "ack_wait": 30 * SECOND,
    "max_deliver": -1,
    "backoff": [],
    "max_ack_pending": 1000,
    "deliver_policy": "all",
    "opt_start_seq": 0,
    "replay_policy": "instant",
    "max_waiting": 512,
    "max_batch": 0,
    "max_expires": 0,
    "num_replicas": 0,
    "mem_storage": False,
    "headers_only": False,
}
# Consumer fields the server refuses to change (checkNewConsumerConfig).
CONSUMER_REPLACE = frozenset(
    {"ack_policy", "deliver_policy", "opt_start_seq", "replay_policy", "mem_storage", "max_waiting"}
)
# Stream limits whose lowering deletes stored messages; the values that mean "no limit".
STREAM_LIMITS: dict[str, tuple[int, ...]] = {
    "max_age": (0,),
    "max_bytes": (-1,),
    "max_msgs": (-1,),
    "max_msgs_per_subject": (-1, 0),
}


def version_text(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


def check_features(topology: Topology, server: tuple[int, int, int]) -> None:
    """Fail when the topology needs a feature the server lacks.

    Raises:
        UnsupportedFeatureError: Names the field, the feature and the version bringing it.
    """
    if server < MIN_SERVER:
        raise UnsupportedFeatureError(
            "metadata",
            "stream and consumer metadata (natstopo marks the assets it manages)",
            version_text(MIN_SERVER),
            version_text(server),
        )
    for s, c in topology.iter_assets():
        table = STREAM_FEATURES if c is None else CONSUMER_FEATURES
        asset: Stream | Consumer = s if c is None else c
        for fld, (feature, version, default) in table.items():
            value = getattr(asset, fld)
            if server < version and value is not None and value != default:
                where = f"streams.{s.name}" + (f".consumers.{c.name}" if c else "")
                raise UnsupportedFeatureError(
                    f"{where}.{fld}", feature, version_text(version), version_text(server)
                )


def dropped_fields(asset: Stream | Consumer, server: tuple[int, int, int]) -> set[str]:
    """Fields set to their default that an older server does not know: never sent."""
    table = STREAM_FEATURES if isinstance(asset, Stream) else CONSUMER_FEATURES
    return {
        fld
        for fld, (_, version, _default) in table.items()
        if server < version and getattr(asset, fld) is not None
    }


def limit_value(value: Any, unlimited: tuple[int, ...]) -> float:
    if value is None or value in unlimited or (isinstance(value, int) and value < 0):
        return float("inf")
    return float(value)


def lowering_reason(fld: str, after: Any) -> str:
    if fld == "max_age":
        return f"deletes messages older than {format_duration(after)}"
    if fld == "max_bytes":
        return f"deletes the oldest messages above {format_size(after)}"
    if fld == "max_msgs":
        return f"deletes the oldest messages above {after}"
    return f"keeps only the newest {after} messages of each subject"


def classify_stream_field(fld: str, before: Any, after: Any) -> tuple[Effect, str]:
    if fld == "storage":
        return "replace", "storage cannot change in place; the stream's messages are lost"
    if fld == "retention" and "workqueue" in (before, after):
        return "replace", "retention cannot change to or from workqueue; messages are lost"
    if fld == "max_consumers":
        return "replace", "max_consumers cannot change in place; messages are lost"
    if fld in ("deny_delete", "deny_purge", "allow_msg_ttl") and before and not after:
        return "replace", f"{fld} cannot be turned off; messages are lost"
    if fld in STREAM_LIMITS:
        unlimited = STREAM_LIMITS[fld]
        if limit_value(after, unlimited) < limit_value(before, unlimited):
            return "destructive", lowering_reason(fld, after)
    return "in_place", ""


def stream_value(cfg: dict[str, Any], key: str) -> Any:
    value = cfg.get(key, STREAM_DEFAULTS.get(key))
    if key == "num_replicas" and not value:
        return 1
    if key == "max_msgs_per_subject" and value == 0:
        return -1
    return value


def classify_consumer_field(fld: str, before: Any, after: Any) -> tuple[Effect, str]:
    """How the server takes a change of consumer field `fld` (checkNewConsumerConfig)."""
    if fld in CONSUMER_REPLACE:
        return "replace", f"{fld} cannot change in place; the consumer's delivery position is lost"
    return "in_place", ""

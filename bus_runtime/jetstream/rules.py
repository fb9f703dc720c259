"""The server's rules: its defaults, what it stores for a value, and how each field may change.

One place for what a nats-server does with a stream or consumer config, per version. Every
entry was measured against real servers (2.10.26, 2.11.11, 2.12.8, 2.14.6, 2.15.1) by the
conformance probe (`tests/conformance/`), and `tests/conformance/test_matrix.py` proves
the planner's verdicts against those servers on every run; `docs/reconciler.md` has the
table. Versions between or after the measured ones take the rules of the newest measured
release before them.

- `effective(kind, key, config, version)`: the value a config means, as the server stores
  it (its default for an absent key, `0` limits as `-1`, `ack_wait` as `backoff[0]`...);
  the planner compares both sides through it, so a plan converges;
- `FIELD_RULES`: for each field, the version that brings it and how a change is taken
  (`in place`, `one-way`, `replace`, a limit whose lowering may drop messages);
- `classify(kind, field, before, after, version, state=None)`: the effect of one change,
  `in_place`, `replace` or `destructive`, with the reason. `natstopo diff` (no server:
  `state=None`, the worst the server could do) and the live planner (with the stream's
  state) share it;
- `check_features`: a topology field that the server's version does not know.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._errors import UnsupportedFeatureError
from ..topology.model import CONSUMER_FIELD_TO_API, STREAM_FIELD_TO_API, Consumer, Stream, Topology
from ..topology.subjects import subject_matches
from ..topology.units import MINUTE, SECOND, format_duration, format_size

Effect = Literal["in_place", "replace", "destructive"]
Kind = Literal["stream", "consumer"]
Version = tuple[int, int, int]

MIN_SERVER: Version = (2, 10, 0)
MEASURED: tuple[Version, ...] = ((2, 10, 26), (2, 11, 11), (2, 12, 8), (2, 14, 6), (2, 15, 1))
"""The releases these rules were measured on (the conformance matrix runs on each)."""

# A message this close to its new max_age counts as dropped: the plan and the update are
# not the same instant.
AGE_MARGIN = SECOND


def version_text(v: Version) -> str:
    return ".".join(map(str, v))


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldRule:
    """How the server takes a change of one field.

    Attributes:
        field: The topology's field name (`replicas`).
        key: The API's key (`num_replicas`).
        change: `in_place`; `replace` (refused in place: delete and recreate); `one_way`
            (may be turned on, never off: refused, so replace); `limit` (a lowering may
            drop stored messages); `retention` (its own rule, see `classify`).
        replace_from: The change is refused from this version on (else in place).
        in_place_from: The change is refused before this version (in place from it on).
        since: The first version that knows the field (older ones ignore it silently
            before 2.12, and refuse unknown keys from 2.12 on).
        feature: What the field is, for the error an older server gets.
    """

    field: str
    key: str
    change: Literal["in_place", "replace", "one_way", "limit", "retention"] = "in_place"
    replace_from: Version | None = None
    in_place_from: Version | None = None
    since: Version = MIN_SERVER
    feature: str = ""


def _rules(kind: Kind, *rules: FieldRule) -> dict[str, FieldRule]:
    table = {r.field: r for r in rules}
    api = STREAM_FIELD_TO_API if kind == "stream" else CONSUMER_FIELD_TO_API
    for fld, key in api.items():
        table.setdefault(fld, FieldRule(fld, key))
        assert table[fld].key == key, fld
    return table


STREAM_RULES: dict[str, FieldRule] = _rules(
    "stream",
    FieldRule("retention", "retention", "retention"),
    FieldRule("storage", "storage", "replace"),
    FieldRule("max_age", "max_age", "limit"),
    FieldRule("max_bytes", "max_bytes", "limit"),
    FieldRule("max_msgs", "max_msgs", "limit"),
    FieldRule("max_msgs_per_subject", "max_msgs_per_subject", "limit"),
    # 2.10 and 2.11 refuse any change (10052); 2.12 and later take it, even below the
    # number of consumers that exist (they stay).
    FieldRule("max_consumers", "max_consumers", in_place_from=(2, 12, 0)),
    FieldRule("deny_delete", "deny_delete", "one_way"),
    FieldRule("deny_purge", "deny_purge", "one_way"),
    FieldRule(
        "allow_msg_ttl", "allow_msg_ttl", "one_way", since=(2, 11, 0), feature="per-message TTL"
    ),
    FieldRule(
        "subject_delete_marker_ttl",
        "subject_delete_marker_ttl",
        since=(2, 11, 0),
        feature="subject delete markers",
    ),
    # Measured: 2.10 and 2.11 drop the key silently, 2.12 refuses any config with it
    # (10025, unknown field); 2.14 and later turn it on and off in place.
    FieldRule("allow_batched", "allow_batched", since=(2, 14, 0), feature="fast batch publish"),
)
CONSUMER_RULES: dict[str, FieldRule] = _rules(
    "consumer",
    FieldRule("ack_policy", "ack_policy", "replace"),
    FieldRule("deliver_policy", "deliver_policy", "replace"),
    FieldRule("opt_start_seq", "opt_start_seq", "replace"),
    FieldRule("replay_policy", "replay_policy", "replace"),
    FieldRule("max_waiting", "max_waiting", "replace"),
    # 2.14 and later refuse it (10012); 2.10-2.12 accept it but keep the consumer's
    # storage as it was (a memory consumer set to false is still lost at a restart).
    FieldRule("mem_storage", "mem_storage", "replace"),
)
FIELD_RULES: dict[Kind, dict[str, FieldRule]] = {"stream": STREAM_RULES, "consumer": CONSUMER_RULES}

# Keys that the server rewrites from 0 (and any negative) to -1, "no limit" (measured).
_UNLIMITED_KEYS = frozenset(
    {"max_bytes", "max_msgs", "max_msgs_per_subject", "max_msg_size", "max_consumers"}
)
_BOOL_KEYS = frozenset(
    {
        "discard_new_per_subject",
        "allow_rollup_hdrs",
        "deny_delete",
        "deny_purge",
        "allow_direct",
        "allow_msg_ttl",
        "allow_batched",
        "mem_storage",
        "headers_only",
    }
)
STREAM_DEFAULTS: dict[str, Any] = {
    "description": None,
    "retention": "limits",
    "storage": "file",
    "num_replicas": 1,
    "max_age": 0,
    "max_bytes": -1,
    "max_msgs": -1,
    "max_msgs_per_subject": -1,
    "max_msg_size": -1,
    "max_consumers": -1,
    "discard": "old",
    "discard_new_per_subject": False,
    "duplicate_window": 2 * MINUTE,  # or max_age when that is shorter: see `effective`
    "compression": "none",
    "allow_rollup_hdrs": False,
    "deny_delete": False,
    "deny_purge": False,
    "allow_direct": False,
    "allow_msg_ttl": False,
    "subject_delete_marker_ttl": 0,
    "allow_batched": False,
}
"""What a stream created without the key stores (measured: `s-minimal`)."""
CONSUMER_DEFAULTS: dict[str, Any] = {
    "description": None,
    "ack_policy": "none",
    "ack_wait": 30 * SECOND,  # backoff[0] with a backoff; none with ack_policy none
    "max_deliver": -1,
    "backoff": [],
    "max_ack_pending": 1000,  # none with ack_policy none
    "deliver_policy": "all",
    "opt_start_seq": 0,
    "replay_policy": "instant",
    "max_waiting": 512,
    "max_batch": 0,
    "max_expires": 0,
    "num_replicas": 0,  # 0: as many as the stream's
    "mem_storage": False,
    "headers_only": False,
}
"""What a consumer created without the key stores (measured: `c-minimal`, `c-zeros`)."""


def known(kind: Kind, version: Version) -> list[FieldRule]:
    """The fields of `kind` that a server of `version` knows."""
    return [r for r in FIELD_RULES[kind].values() if version >= r.since]


def effective(kind: Kind, key: str, config: Mapping[str, Any], *, stream_replicas: int = 1) -> Any:
    """The value of `key` that `config` means once the server has stored it.

    An absent key or `None` is the server's default; limits of 0 (or any negative) are -1;
    a stream's `duplicate_window` of 0 is 2 minutes or `max_age` when shorter; a
    consumer's `ack_wait` is `backoff[0]` when there is a backoff (the server ignores
    what is sent); consumer replicas 0 are the stream's; empty descriptions, backoffs and
    metadata are absent. `stream_replicas` is the consumer's stream's.
    """
    value = config.get(key)
    defaults = STREAM_DEFAULTS if kind == "stream" else CONSUMER_DEFAULTS
    if key in _UNLIMITED_KEYS:
        return -1 if value is None or int(value) <= 0 else int(value)
    if key in _BOOL_KEYS:
        return bool(value)
    if key == "description":
        return value or None
    if kind == "stream":
        if key == "num_replicas":
            return int(value or 1)
        if key == "duplicate_window":
            if value:
                return int(value)
            max_age = int(config.get("max_age") or 0)
            return min(2 * MINUTE, max_age) if max_age > 0 else 2 * MINUTE
        return defaults.get(key) if value is None else value
    # consumers
    if key == "backoff":
        return tuple(int(v) for v in value or ())
    if key == "ack_wait":
        if (config.get("ack_policy") or "none") == "none":
            return None  # no acks, no ack wait
        backoff = config.get("backoff") or ()
        if backoff:
            return int(backoff[0])
        return int(value) if value else 30 * SECOND
    if key == "max_ack_pending":
        if (config.get("ack_policy") or "none") == "none":
            return None
        return 1000 if not value else int(value)
    if key == "max_deliver":
        return -1 if not value or int(value) < 0 else int(value)
    if key == "max_waiting":
        return 512 if not value else int(value)
    if key == "num_replicas":
        return int(value) if value else stream_replicas
    if key in ("opt_start_seq", "max_batch", "max_expires"):
        return int(value or 0)
    return defaults.get(key) if value is None else value


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class ConsumerInterest:
    """What one consumer of a stream has acknowledged, from CONSUMER.INFO.

    Attributes:
        name: The durable name.
        filters: Its filter subjects (empty: every subject of the stream).
        ack_floor: The stream sequence up to which it acknowledged everything.
        acked_above_floor: Messages it acknowledged above the floor (out of order).
    """

    name: str
    filters: tuple[str, ...]
    ack_floor: int
    acked_above_floor: int

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ConsumerInterest:
        cfg = info.get("config") or {}
        filters = tuple(cfg.get("filter_subjects") or ())
        if cfg.get("filter_subject"):
            filters = (str(cfg["filter_subject"]),)
        delivered = (info.get("delivered") or {}).get("consumer_seq", 0) or 0
        floor = info.get("ack_floor") or {}
        above = int(delivered) - int(floor.get("consumer_seq", 0) or 0)
        above -= int(info.get("num_ack_pending", 0) or 0)
        return cls(
            name=str(info.get("name", "")),
            filters=filters,
            ack_floor=int(floor.get("stream_seq", 0) or 0),
            acked_above_floor=max(0, above),
        )


@dataclass(frozen=True)
class StreamState:
    """What a stream holds, read at plan time (STREAM.INFO and its consumers' infos).

    Attributes:
        messages: Stored messages.
        bytes: Stored bytes.
        first_seq: The oldest stored message's sequence.
        first_ts: The oldest stored message's time (None when empty).
        now: The time the state was read (the server's clock when it says).
        subjects: Messages per subject, when read (needed for per-subject limits).
        consumers: Every consumer's acknowledgements (needed for interest retention);
            None when they were not all read.
    """

    messages: int
    bytes: int
    first_seq: int = 0
    first_ts: dt.datetime | None = None
    now: dt.datetime | None = None
    subjects: Mapping[str, int] | None = None
    consumers: tuple[ConsumerInterest, ...] | None = ()

    @classmethod
    def from_info(
        cls,
        info: Mapping[str, Any],
        consumers: Sequence[Mapping[str, Any]] = (),
        subjects: Mapping[str, int] | None = None,
    ) -> StreamState:
        st = info.get("state") or {}
        return cls(
            messages=int(st.get("messages", 0) or 0),
            bytes=int(st.get("bytes", 0) or 0),
            first_seq=int(st.get("first_seq", 0) or 0),
            first_ts=_parse_time(st.get("first_ts")) if st.get("messages") else None,
            now=_parse_time(info.get("ts")) or dt.datetime.now(dt.UTC),
            subjects=subjects if subjects is not None else st.get("subjects"),
            consumers=tuple(ConsumerInterest.from_info(c) for c in consumers),
        )

    @property
    def oldest_age(self) -> int | None:
        """Nanoseconds since the oldest stored message, or None when empty."""
        if self.first_ts is None:
            return None
        now = self.now or dt.datetime.now(dt.UTC)
        return max(0, int((now - self.first_ts).total_seconds() * SECOND))


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    head, _, frac = text.partition(".")
    try:
        parsed = dt.datetime.fromisoformat(head + (f".{frac[:6]}" if frac else ""))
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def needs_subjects(kind: Kind, field: str, before: Any, after: Any) -> bool:
    """Whether `classify` needs per-subject counts in the state for this change."""
    if kind == "consumer":
        return field == "filter_subjects" and not _filters_cover(after or (), before or ())
    if field == "max_msgs_per_subject":
        return _limit(after) < _limit(before)
    return field == "retention" and (before, after) == ("limits", "interest")


# --------------------------------------------------------------------------- classify


def _limit(value: Any) -> float:
    """A limit's value, "no limit" as infinity (0 and -1 both mean none)."""
    if value is None or not isinstance(value, int) or value <= 0:
        return float("inf")
    return float(value)


def _lowering(field: str, after: int) -> str:
    if field == "max_age":
        return f"deletes messages older than {format_duration(after)}"
    if field == "max_bytes":
        return f"deletes the oldest messages above {format_size(after)}"
    if field == "max_msgs":
        return f"deletes the oldest messages above {after}"
    return f"keeps only the newest {after} messages of each subject"


def _covers(pattern: str, other: str) -> bool:
    """Every subject `other` matches is matched by `pattern`."""
    pt, ot = pattern.split("."), other.split(".")
    for i, tok in enumerate(pt):
        if tok == ">":
            return len(ot) > i
        if i >= len(ot) or ot[i] == ">":
            return False
        if tok != "*" and tok != ot[i]:
            return False
    return len(pt) == len(ot)


def _filters_cover(holder: Sequence[str], taker: Sequence[str]) -> bool:
    if not holder:
        return True
    if not taker:
        return False
    return all(any(_covers(h, t) for h in holder) for t in taker)


def _version_rule(rule: FieldRule, version: Version) -> str:
    if rule.replace_from is not None and version >= rule.replace_from:
        return "replace"
    if rule.in_place_from is not None and version < rule.in_place_from:
        return "replace"
    return rule.change


def _since_text(rule: FieldRule, version: Version) -> str:
    if rule.replace_from is not None:
        return f"nats-server {version_text(rule.replace_from)} and later refuse it in place"
    if rule.in_place_from is not None:
        return f"nats-server before {version_text(rule.in_place_from)} refuses it in place"
    return "the server refuses it in place"


def classify(
    kind: Kind,
    field: str,
    before: Any,
    after: Any,
    version: Version,
    state: StreamState | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    retention: str | None = None,
) -> tuple[Effect, str]:
    """The effect of changing `field` of a stream or consumer from `before` to `after`.

    Args:
        kind: `stream` or `consumer`.
        field: The topology's field name (`max_age`, `filter_subjects`, `metadata.KEY`).
        before: The server's value, as `effective` gives it.
        after: The new value, as `effective` gives it.
        version: The server's version (the rules differ by version).
        state: What the stream holds now; None (unknown, as for `natstopo diff`) means
            the worst the server could do with any stored messages.
        config: The asset's config after the change (a stream's `discard` decides whether
            a lowered limit deletes messages; a consumer's name tells it from the others);
            None: unknown, the worst case.
        retention: For a consumer, its stream's retention once the change is applied
            (narrowing a filter on an interest stream drops messages); None: unknown.

    Returns:
        `(effect, reason)`: `in_place` (the server takes it and keeps every message and
        position), `replace` (the server refuses it in place: natstopo deletes and
        recreates the asset, losing its messages or position), or `destructive` (taken in
        place, but stored messages are deleted); the reason in a few words.
    """
    if kind == "consumer" and field == "filter_subjects":
        return _filters_changed(before, after, state, config, retention)
    rule = FIELD_RULES[kind].get(field)
    if rule is None:  # subjects, metadata: in place on every version
        return "in_place", ""
    change = _version_rule(rule, version)
    what = "the stream's messages are lost" if kind == "stream" else "its delivery position is lost"
    if change == "replace":
        return "replace", f"{field} cannot change in place ({_since_text(rule, version)}); {what}"
    if change == "one_way":
        if before and not after:
            return "replace", f"{field} cannot be turned off once set; {what}"
        return "in_place", ""
    if change == "retention":
        return _retention(before, after, version, state)
    if change == "limit" and _limit(after) < _limit(before):
        return _lowered(field, int(after), version, state, config)
    return "in_place", ""


def _lowered(
    field: str,
    after: int,
    version: Version,
    state: StreamState | None,
    config: Mapping[str, Any] | None,
) -> tuple[Effect, str]:
    reason = _lowering(field, after)
    discard_new = config is not None and config.get("discard") == "new"
    if field in ("max_msgs", "max_bytes") and discard_new:
        # Measured: with discard new the server keeps what it stores above the new limit
        # (and refuses new messages until the stream is below it).
        return "in_place", ""
    if state is None:
        return "destructive", reason
    if field == "max_msgs":
        drop = state.messages - after
        if drop > 0:
            return "destructive", f"{reason}: {drop} of the {state.messages} stored"
        return "in_place", ""
    if field == "max_bytes":
        if state.bytes > after:
            return "destructive", f"{reason}: {format_size(state.bytes)} stored"
        return "in_place", ""
    if field == "max_age":
        age = state.oldest_age
        if age is not None and age + AGE_MARGIN >= after:
            return "destructive", f"{reason}: the oldest stored is {format_duration(age)} old"
        return "in_place", ""
    # max_msgs_per_subject; 2.10-2.12 trim a subject at its next message, 2.14 at once:
    # a loss either way.
    if state.messages <= after:
        return "in_place", ""
    if state.subjects is None:
        return "destructive", reason
    over = {s: n for s, n in state.subjects.items() if n > after}
    if not over:
        return "in_place", ""
    drop = sum(n - after for n in over.values())
    return "destructive", f"{reason}: {drop} stored message(s) of {len(over)} subject(s)"


def _filters_changed(
    before: Any,
    after: Any,
    state: StreamState | None,
    config: Mapping[str, Any] | None,
    retention: str | None,
) -> tuple[Effect, str]:
    """A consumer's filter subjects change (measured, 2.10 and 2.15: in place everywhere,
    but on an interest stream the stored messages of the subjects it stops taking are
    dropped at once, unless another consumer takes them)."""
    was, now = tuple(before or ()), tuple(after or ())
    if _filters_cover(now, was) or retention not in (None, "interest"):
        return "in_place", ""
    reason = (
        "on an interest stream the messages of the subjects it stops taking are dropped "
        "unless another consumer takes them"
    )
    if state is None or state.consumers is None:
        return "destructive", reason
    if state.messages == 0:
        return "in_place", ""
    if state.subjects is None:
        return "destructive", reason
    me = (config or {}).get("durable_name") or (config or {}).get("name")
    holders = [
        c
        for c in state.consumers
        if c.name != me and c.ack_floor < state.first_seq and not c.acked_above_floor
    ]

    def taken(subject: str, filters: Sequence[str]) -> bool:
        return not filters or any(subject_matches(f, subject) for f in filters)

    dropped = {
        s: n
        for s, n in state.subjects.items()
        if n > 0
        and taken(s, was)
        and not taken(s, now)
        and not any(taken(s, h.filters) for h in holders)
    }
    if not dropped:
        return "in_place", ""
    return "destructive", f"{reason}: {sum(dropped.values())} stored message(s)"


def _retention(
    before: Any, after: Any, version: Version, state: StreamState | None
) -> tuple[Effect, str]:
    if before == after:
        return "in_place", ""
    if "workqueue" in (before, after):
        return (
            "replace",
            "retention cannot change to or from workqueue (refused in place); the stream's "
            "messages are lost",
        )
    if (before, after) != ("limits", "interest"):
        return "in_place", ""  # interest -> limits keeps everything
    # Measured: the server drops at once every message that each consumer taking its
    # subject has acknowledged; 2.15 also drops everything when there is no consumer.
    reason = "interest retention drops every stored message that its consumers acknowledged"
    if state is None:
        return "destructive", reason
    if state.messages == 0:
        return "in_place", ""
    if state.consumers is None:
        return "destructive", reason
    if not state.consumers:
        if version >= (2, 15, 0):
            return (
                "destructive",
                f"with no consumer the server drops all {state.messages} stored messages",
            )
        return "in_place", ""
    holders = [
        c for c in state.consumers if c.ack_floor < state.first_seq and not c.acked_above_floor
    ]
    takers = [c for c in state.consumers if c not in holders]
    uncovered = [
        t for t in takers if not any(_filters_cover(h.filters, t.filters) for h in holders)
    ]
    if not uncovered:
        return "in_place", ""
    names = ", ".join(f"`{t.name}`" for t in uncovered)
    return "destructive", f"{reason} (consumer {names} acknowledged stored messages)"


# --------------------------------------------------------------------------- features


def feature_problems(
    topology: Topology, server: Version
) -> list[tuple[Stream, Consumer | None, str, FieldRule]]:
    """Fields the topology sets to a non-default value that the server's version lacks."""
    out: list[tuple[Stream, Consumer | None, str, FieldRule]] = []
    for s, c in topology.iter_assets():
        kind: Kind = "stream" if c is None else "consumer"
        asset: Stream | Consumer = s if c is None else c
        for rule in FIELD_RULES[kind].values():
            if server >= rule.since:
                continue
            value = getattr(asset, rule.field)
            if value is not None and value != effective(kind, rule.key, {}):
                out.append((s, c, rule.field, rule))
    return out


def feature_errors(
    topology: Topology, server: Version, target: str = "the server runs"
) -> list[str]:
    """`FILE:LINE:COL: error: PATH: ...` for each setting of `topology` that nats-server
    `server` lacks (`needs per-message TTL, which nats-server 2.11.0 brings; {target}
    2.10.26`); `PATH: ...` for a topology without places (built in code)."""
    out: list[str] = []
    for s, c, fld, rule in feature_problems(topology, server):
        asset: Stream | Consumer = s if c is None else c
        path = f"streams.{s.name}" + (f".consumers.{c.name}" if c else "") + f".{fld}"
        message = (
            f"needs {rule.feature}, which nats-server {version_text(rule.since)} brings; "
            f"{target} {version_text(server)}"
        )
        where = asset.where(fld)
        out.append(
            f"{where}: error: {path}: {message}" if where is not None else f"{path}: {message}"
        )
    return out


def check_features(topology: Topology, server: Version) -> None:
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
    for s, c, fld, rule in feature_problems(topology, server):
        where = f"streams.{s.name}" + (f".consumers.{c.name}" if c else "")
        raise UnsupportedFeatureError(
            f"{where}.{fld}", rule.feature, version_text(rule.since), version_text(server)
        )


def unknown_keys(kind: Kind, server: Version) -> set[str]:
    """API keys of the format that a server of `server` does not know: never sent to it."""
    return {r.key for r in FIELD_RULES[kind].values() if server < r.since}


# --------------------------------------------------------------------------- per-kind names


def _features(kind: Kind) -> dict[str, tuple[str, Version, object]]:
    return {
        r.field: (r.feature, r.since, effective(kind, r.key, {}))
        for r in FIELD_RULES[kind].values()
        if r.since > MIN_SERVER
    }


STREAM_FEATURES: dict[str, tuple[str, Version, object]] = _features("stream")
"""Stream fields that need a newer server than 2.10: (feature, version, default)."""
CONSUMER_FEATURES: dict[str, tuple[str, Version, object]] = _features("consumer")
"""Consumer fields that need a newer server than 2.10 (none yet)."""


def classify_stream_field(
    field: str, before: Any, after: Any, version: Version = MIN_SERVER
) -> tuple[Effect, str]:
    """`classify("stream", ...)` without state; without a version, 2.10's rules (the most
    cautious: pass the target server's version)."""
    return classify("stream", field, before, after, version)


def classify_consumer_field(
    field: str, before: Any, after: Any, version: Version = MIN_SERVER
) -> tuple[Effect, str]:
    """`classify("consumer", ...)` without state; without a version, 2.10's rules."""
    return classify("consumer", field, before, after, version)

"""The live reconciler: compare a topology with a JetStream server (plan) and converge it (apply).

Reads the server through the raw JetStream JSON API (`$JS.API.*`), not nats-py's config
dataclasses, so every field round-trips exactly and nothing the server does not know is
ever sent: updates start from the server's own config and change only what the topology
sets. Each difference is classified by the server's rules (reference: jetstream-rules.md):

- `in_place`: the server updates the field (UpdateConfiguration);
- `replace`: the server refuses the change; the asset is deleted and recreated, losing its
  messages (stream) or its delivery position (consumer);
- `destructive`: a lowered limit that drops stored messages, or a delete.

Managed scope: every asset natstopo creates carries metadata `natstopo.topology` (the
topology's name) and `natstopo.fingerprint` (a hash of the asset's config). Only marked
assets are ever deleted; an unmarked stream is reported as unmanaged and never touched. A
declared asset that exists unmarked is adopted (marked, in place); one marked by another
topology is a conflict that apply refuses.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.client import JetStreamContext

from ._connect import ConnectOptions, connect
from ._errors import ChangesRefusedError, ReconcileError, UnsupportedFeatureError
from ._model import (
    CONSUMER_FIELD_TO_API,
    DURATION_FIELDS,
    SIZE_FIELDS,
    STREAM_FIELD_TO_API,
    Consumer,
    Stream,
    Topology,
)
from ._units import format_duration, format_size

MARK_TOPOLOGY = "natstopo.topology"
MARK_FINGERPRINT = "natstopo.fingerprint"
MARK_SERVICE = "natstopo.service"
_RESERVED_PREFIXES = ("natstopo.", "_nats.")

Effect = Literal["in_place", "replace", "destructive"]
Action = Literal["create", "update", "replace", "delete", "none", "unmanaged"]
_EFFECT_RANK: dict[str, int] = {"in_place": 0, "replace": 1, "destructive": 2}
_PENDING: frozenset[str] = frozenset({"create", "update", "replace", "delete"})

# The JetStream API's error codes that mean "not there".
_STREAM_NOT_FOUND = 10059
_CONSUMER_NOT_FOUND = 10014
_TEMPORARILY_UNAVAILABLE = 10008  # "JetStream system temporarily unavailable"
_ATTEMPTS = 3

MIN_SERVER = (2, 10, 0)
# Fields that need a newer server than MIN_SERVER: (feature, first version, default value).
# A field set to its default is simply not sent to an older server; any other value fails.
_STREAM_FEATURES: dict[str, tuple[str, tuple[int, int, int], object]] = {
    "allow_msg_ttl": ("per-message TTL", (2, 11, 0), False),
    "subject_delete_marker_ttl": ("subject delete markers", (2, 11, 0), 0),
}
_CONSUMER_FEATURES: dict[str, tuple[str, tuple[int, int, int], object]] = {}

# What the server reports when a key is absent from a config (it omits empty values).
_STREAM_ABSENT: dict[str, Any] = {
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
_CONSUMER_ABSENT: dict[str, Any] = {
    "description": None,
    "ack_policy": "none",
    "ack_wait": 0,
    "max_deliver": -1,
    "backoff": [],
    "max_ack_pending": 0,
    "deliver_policy": "all",
    "opt_start_seq": 0,
    "replay_policy": "instant",
    "max_waiting": 0,
    "max_batch": 0,
    "max_expires": 0,
    "num_replicas": 0,
    "mem_storage": False,
    "headers_only": False,
}
# Consumer fields the server refuses to change (checkNewConsumerConfig).
_CONSUMER_REPLACE = frozenset(
    {"ack_policy", "deliver_policy", "opt_start_seq", "replay_policy", "mem_storage", "max_waiting"}
)
# Stream limits whose lowering deletes stored messages; the values that mean "no limit".
_STREAM_LIMITS: dict[str, tuple[int, ...]] = {
    "max_age": (0,),
    "max_bytes": (-1,),
    "max_msgs": (-1,),
    "max_msgs_per_subject": (-1, 0),
}


# --------------------------------------------------------------------------- values


def format_value(name: str, value: Any) -> str:
    """A field's value in the topology's own units (`7d`, `5GiB`, `[1s, 5s]`)."""
    if value is None:
        return "-"
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "backoff" and isinstance(value, list | tuple):
        return "[" + ", ".join(format_duration(int(v)) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if leaf in DURATION_FIELDS and isinstance(value, int):
        return format_duration(value) if value else "0"
    if leaf in SIZE_FIELDS and isinstance(value, int):
        return format_size(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, str) and (len(value) > 60 or "\n" in value):
        return json.dumps(value[:57] + "...")
    return str(value)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _user_metadata(md: Any) -> dict[str, str]:
    if not isinstance(md, dict):
        return {}
    return {k: v for k, v in md.items() if not k.startswith(_RESERVED_PREFIXES)}


def asset_fingerprint(config: dict[str, Any]) -> str:
    """A short stable hash of an asset's config (without its metadata marks)."""
    cfg = {k: v for k, v in config.items() if k != "metadata"}
    cfg["metadata"] = _user_metadata(config.get("metadata"))
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- plan model


@dataclass(frozen=True)
class FieldChange:
    """One differing field, before (on the server) and after (in the topology).

    Attributes:
        field: The topology's field name (`max_age`, `filter_subjects`, `metadata.KEY`).
        before: The server's value (None when the asset does not exist).
        after: The topology's value (None when the asset is deleted).
        effect: `in_place`, `replace` or `destructive`.
        reason: Why a replace or destructive change is one, in a few words.
    """

    field: str
    before: Any
    after: Any
    effect: Effect = "in_place"
    reason: str = ""

    def render(self) -> str:
        """`max_age: 7d -> 1d (destructive: deletes messages older than 1d)`."""
        text = f"{self.field}: {format_value(self.field, self.before)} -> {format_value(self.field, self.after)}"
        if self.effect != "in_place":
            text += f" ({self.effect}: {self.reason})" if self.reason else f" ({self.effect})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "before": _jsonable(self.before),
            "after": _jsonable(self.after),
            "before_text": format_value(self.field, self.before),
            "after_text": format_value(self.field, self.after),
            "effect": self.effect,
            "reason": self.reason,
        }


_SYMBOL = {
    "create": "+",
    "update": "~",
    "replace": "-/+",
    "delete": "-",
    "none": "=",
    "unmanaged": "?",
}


@dataclass
class Change:
    """What plan found for one stream or consumer.

    Attributes:
        kind: `stream` or `consumer`.
        stream: The stream's name (the consumer's stream for a consumer).
        consumer: The consumer's durable name, or None for a stream.
        action: `create`, `update`, `replace`, `delete`, `none` or `unmanaged`.
        fields: The differing fields (empty for create, delete, none).
        note: Why, in a few words (adoption, replaced with its stream, owned elsewhere).
        conflict: The asset is declared but marked by another topology: apply refuses.
        config: The config apply sends (create/update/replace); not part of `to_dict`.
    """

    kind: Literal["stream", "consumer"]
    stream: str
    consumer: str | None
    action: Action
    fields: list[FieldChange] = field(default_factory=list)
    note: str = ""
    conflict: bool = False
    config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.stream if self.consumer is None else f"{self.stream}/{self.consumer}"

    @property
    def effect(self) -> Effect | None:
        """The worst effect: `destructive` for a delete, `replace` for a replace."""
        if self.action == "delete":
            return "destructive"
        effects = [f.effect for f in self.fields]
        if self.action == "replace":
            effects.append("replace")
        if not effects:
            return "in_place" if self.action in ("create", "update") else None
        return max(effects, key=lambda e: _EFFECT_RANK[e])

    @property
    def pending(self) -> bool:
        return self.action in _PENDING

    @property
    def needs_flag(self) -> bool:
        """Replace or destructive: apply refuses it without `allow_destructive`."""
        return self.pending and self.effect in ("replace", "destructive")

    def headline(self, *, drift: bool = False) -> str:
        """`~ stream X: update in place`; with `drift`, what the server lacks or has extra."""
        what = {
            "create": "create",
            "update": "update in place",
            "replace": "replace (delete and recreate)",
            "delete": "delete",
            "none": "in sync",
            "unmanaged": "unmanaged, left alone",
        }[self.action]
        if self.action == "update" and self.effect == "destructive":
            what = "update in place (destructive)"
        if drift and self.action == "create":
            what = "missing on the server"
        elif drift and self.action == "delete":
            what = "no longer declared (apply deletes it)"
        text = f"{_SYMBOL[self.action]} {self.kind} {self.name}: {what}"
        return f"{text} ({self.note})" if self.note else text

    def describe(self) -> str:
        """One line: symbol, asset, action, and the fields that differ."""
        text = self.headline()
        if self.fields:
            text += ": " + ", ".join(f.render() for f in self.fields)
        return text

    def to_text(self, *, drift: bool = False) -> str:
        head = self.headline(drift=drift)
        return "\n".join([head, *(f"    {f.render()}" for f in self.fields)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stream": self.stream,
            "consumer": self.consumer,
            "action": self.action,
            "effect": self.effect,
            "note": self.note,
            "conflict": self.conflict,
            "fields": [f.to_dict() for f in self.fields],
        }


@dataclass
class Plan:
    """Every stream and consumer in scope, in the order apply visits them.

    `changes` holds every asset, including `none` (in sync) and `unmanaged` ones; use
    `pending` for what apply would do.
    """

    topology: str
    environment: str | None
    server_version: str
    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.pending]

    @property
    def has_changes(self) -> bool:
        """Something to do, or a declared asset owned by another topology (a conflict)."""
        return any(c.pending or c.conflict for c in self.changes)

    @property
    def refused_without_flag(self) -> bool:
        """True when a replace or destructive step is present (apply needs the flag)."""
        return any(c.needs_flag for c in self.changes)

    @property
    def conflicts(self) -> list[Change]:
        return [c for c in self.changes if c.conflict]

    @property
    def unmanaged(self) -> list[Change]:
        return [c for c in self.changes if c.action == "unmanaged"]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("create", "update", "replace", "delete", "unmanaged", "none"), 0)
        for c in self.changes:
            out[c.action] += 1
        return out

    def summary(self) -> str:
        n = self.counts()
        text = (
            f"{n['create']} to create, {n['update']} to update, {n['replace']} to replace, "
            f"{n['delete']} to delete"
        )
        conflicts = len(self.conflicts)
        if n["unmanaged"] - conflicts:
            text += f"; {n['unmanaged'] - conflicts} unmanaged left alone"
        if conflicts:
            text += f"; {conflicts} declared but owned by another topology (apply refuses)"
        if self.refused_without_flag:
            text += "; replace/destructive steps need --allow-destructive"
        return text

    def to_text(self, *, drift: bool = False) -> str:
        """The plan in the topology's units; `drift` words it as differences found."""
        env = f" (env {self.environment})" if self.environment else ""
        target = f"topology `{self.topology}`{env}"
        shown = [c for c in self.changes if c.action != "none"]
        lines = [c.to_text(drift=drift) for c in shown]
        if not self.has_changes:
            head = (
                f"In sync: the server (nats-server {self.server_version}) matches {target}."
                if drift
                else f"No changes: the server (nats-server {self.server_version}) matches {target}."
            )
            return "\n".join([*lines, head])
        head = "Drift" if drift else "Plan"
        return "\n".join([*lines, f"{head} for {target}: {self.summary()}."])

    def to_dict(self) -> dict[str, Any]:
        return {
            "topology": self.topology,
            "environment": self.environment,
            "server_version": self.server_version,
            "has_changes": self.has_changes,
            "refused_without_flag": self.refused_without_flag,
            "counts": self.counts(),
            "changes": [c.to_dict() for c in self.changes if c.action != "none"],
        }


@dataclass(frozen=True)
class AppliedStep:
    """One change carried out, and how long the server took."""

    change: Change
    seconds: float

    def line(self) -> str:
        past = {
            "create": "created",
            "update": "updated",
            "replace": "replaced",
            "delete": "deleted",
        }[self.change.action]
        return f"{_SYMBOL[self.change.action]} {self.change.kind} {self.change.name} {past} ({self.seconds:.2f}s)"


@dataclass
class ApplyResult:
    """What apply did: the plan it carried out and each step taken."""

    plan: Plan
    steps: list[AppliedStep] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.steps)


# --------------------------------------------------------------------------- API access


class JetStreamApi:
    """Requests to the JetStream JSON API of one connection, decoding errors once."""

    def __init__(self, nc: Client, prefix: str = "$JS.API", timeout: float = 10.0) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout

    @classmethod
    def of(cls, js_or_nc: Client | JetStreamContext | JetStreamApi) -> JetStreamApi:
        if isinstance(js_or_nc, JetStreamApi):
            return js_or_nc
        if isinstance(js_or_nc, JetStreamContext):
            return cls(js_or_nc._nc, js_or_nc._prefix)
        return cls(js_or_nc)

    @property
    def server_version(self) -> tuple[int, int, int]:
        v = self.nc.connected_server_version
        try:
            return (v.major or 0, v.minor or 0, v.patch or 0)
        except ValueError:
            return (0, 0, 0)

    async def call(
        self, subject: str, body: dict[str, Any] | None = None, *, missing: int | None = None
    ) -> dict[str, Any] | None:
        """The decoded response of `<prefix>.<subject>`; None when its err_code is `missing`.

        Raises:
            ReconcileError: The API answered an error, timed out, or JetStream is not enabled.
        """
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        full = f"{self.prefix}.{subject}"
        for attempt in range(_ATTEMPTS):
            last = attempt == _ATTEMPTS - 1
            try:
                msg = await self.nc.request(full, payload, timeout=self.timeout)
            except NoRespondersError as exc:
                raise ReconcileError(
                    f"JetStream is not enabled on the server (no responder for {full})"
                ) from exc
            except TimeoutError as exc:
                # A cluster electing a leader answers late; creates and updates are
                # idempotent for the same config, so asking again is safe.
                if not last:
                    await asyncio.sleep(0.25 * 2**attempt)
                    continue
                raise ReconcileError(
                    f"{full}: no answer within {self.timeout:g}s ({_ATTEMPTS} attempts)"
                ) from exc
            except NatsError as exc:
                raise ReconcileError(f"{full}: {exc}") from exc
            data: dict[str, Any] = json.loads(msg.data) if msg.data else {}
            err = data.get("error")
            if not isinstance(err, dict):
                return data
            code = err.get("err_code")
            if missing is not None and code == missing:
                return None
            if code == _TEMPORARILY_UNAVAILABLE and not last:
                await asyncio.sleep(0.25 * 2**attempt)
                continue
            raise ReconcileError(
                f"{full}: {err.get('description', 'error')} (err_code {code})",
                err_code=code if isinstance(code, int) else None,
            )
        raise AssertionError("unreachable")

    async def _paged(self, subject: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        missing: list[str] = []
        offset = 0
        while True:
            data = await self.call(subject, {"offset": offset})
            assert data is not None
            page = data.get(key) or []
            items += page
            missing += data.get("missing") or []
            offset += len(page)
            if not page or offset >= int(data.get("total", 0)):
                break
        if missing:
            # A cluster may leave some assets out of a list when their leader is slow.
            if key == "streams":
                more = await asyncio.gather(*(self.stream_info(n) for n in missing))
            else:
                stream = subject.rsplit(".", 1)[-1]
                more = await asyncio.gather(*(self.consumer_info(stream, n) for n in missing))
            items += [m for m in more if m is not None]
        return items

    async def list_streams(self) -> list[dict[str, Any]]:
        """Stream infos (config and state) of every stream, all pages."""
        return await self._paged("STREAM.LIST", "streams")

    async def list_consumers(self, stream: str) -> list[dict[str, Any]]:
        """Consumer infos of every consumer of `stream`, all pages."""
        return await self._paged(f"CONSUMER.LIST.{stream}", "consumers")

    async def stream_info(self, name: str) -> dict[str, Any] | None:
        return await self.call(f"STREAM.INFO.{name}", missing=_STREAM_NOT_FOUND)

    async def consumer_info(self, stream: str, name: str) -> dict[str, Any] | None:
        return await self.call(f"CONSUMER.INFO.{stream}.{name}", missing=_CONSUMER_NOT_FOUND)


# --------------------------------------------------------------------------- classification


def _vstr(v: tuple[int, int, int]) -> str:
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
            _vstr(MIN_SERVER),
            _vstr(server),
        )
    for s, c in topology.iter_assets():
        table = _STREAM_FEATURES if c is None else _CONSUMER_FEATURES
        asset: Stream | Consumer = s if c is None else c
        for fld, (feature, version, default) in table.items():
            value = getattr(asset, fld)
            if server < version and value is not None and value != default:
                where = f"streams.{s.name}" + (f".consumers.{c.name}" if c else "")
                raise UnsupportedFeatureError(
                    f"{where}.{fld}", feature, _vstr(version), _vstr(server)
                )


def _dropped_fields(asset: Stream | Consumer, server: tuple[int, int, int]) -> set[str]:
    """Fields set to their default that an older server does not know: never sent."""
    table = _STREAM_FEATURES if isinstance(asset, Stream) else _CONSUMER_FEATURES
    return {
        fld
        for fld, (_, version, _default) in table.items()
        if server < version and getattr(asset, fld) is not None
    }


def _limit(value: Any, unlimited: tuple[int, ...]) -> float:
    if value is None or value in unlimited or (isinstance(value, int) and value < 0):
        return float("inf")
    return float(value)


def _lowering_reason(fld: str, after: Any) -> str:
    if fld == "max_age":
        return f"deletes messages older than {format_duration(after)}"
    if fld == "max_bytes":
        return f"deletes the oldest messages above {format_size(after)}"
    if fld == "max_msgs":
        return f"deletes the oldest messages above {after}"
    return f"keeps only the newest {after} messages of each subject"


def _classify_stream_field(fld: str, before: Any, after: Any) -> tuple[Effect, str]:
    if fld == "storage":
        return "replace", "storage cannot change in place; the stream's messages are lost"
    if fld == "retention" and "workqueue" in (before, after):
        return "replace", "retention cannot change to or from workqueue; messages are lost"
    if fld == "max_consumers":
        return "replace", "max_consumers cannot change in place; messages are lost"
    if fld in ("deny_delete", "deny_purge", "allow_msg_ttl") and before and not after:
        return "replace", f"{fld} cannot be turned off; messages are lost"
    if fld in _STREAM_LIMITS:
        unlimited = _STREAM_LIMITS[fld]
        if _limit(after, unlimited) < _limit(before, unlimited):
            return "destructive", _lowering_reason(fld, after)
    return "in_place", ""


def _stream_value(cfg: dict[str, Any], key: str) -> Any:
    value = cfg.get(key, _STREAM_ABSENT.get(key))
    if key == "num_replicas" and not value:
        return 1
    if key == "max_msgs_per_subject" and value == 0:
        return -1
    return value


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


def _metadata_fields(
    want: Sequence[tuple[str, str]], have_md: Any, marks: dict[str, str]
) -> list[FieldChange]:
    out: list[FieldChange] = []
    have = _user_metadata(have_md)
    if want:
        wanted = dict(want)
        for key in sorted(set(wanted) | set(have)):
            if wanted.get(key) != have.get(key):
                out.append(FieldChange(f"metadata.{key}", have.get(key), wanted.get(key)))
    live = have_md if isinstance(have_md, dict) else {}
    # The marks that decide management; the fingerprint is informational and not compared.
    for key, value in marks.items():
        if key != MARK_FINGERPRINT and live.get(key) != value:
            out.append(FieldChange(f"metadata.{key}", live.get(key), value))
    return out


def _merged_metadata(
    live_md: Any, want: Sequence[tuple[str, str]], marks: dict[str, str]
) -> dict[str, str]:
    md = dict(live_md) if isinstance(live_md, dict) else {}
    if want:
        md = {k: v for k, v in md.items() if k.startswith(_RESERVED_PREFIXES)}
        md.update(dict(want))
    md.update(marks)
    return md


def _stream_create_config(
    stream: Stream, topology: Topology, server: tuple[int, int, int]
) -> dict[str, Any]:
    cfg = stream.to_stream_config()
    for fld in _dropped_fields(stream, server):
        cfg.pop(STREAM_FIELD_TO_API[fld], None)
    md = dict(cfg.get("metadata") or {})
    md[MARK_TOPOLOGY] = topology.name
    md[MARK_FINGERPRINT] = asset_fingerprint(cfg)
    cfg["metadata"] = md
    return cfg


def _consumer_create_config(
    consumer: Consumer, topology: Topology, server: tuple[int, int, int]
) -> dict[str, Any]:
    cfg = consumer.to_consumer_config()
    for fld in _dropped_fields(consumer, server):
        cfg.pop(CONSUMER_FIELD_TO_API[fld], None)
    md = dict(cfg.get("metadata") or {})
    md[MARK_TOPOLOGY] = topology.name
    md[MARK_SERVICE] = consumer.service
    md[MARK_FINGERPRINT] = asset_fingerprint(cfg)
    cfg["metadata"] = md
    return cfg


def _diff_stream(
    stream: Stream, live: dict[str, Any], topology: Topology, server: tuple[int, int, int]
) -> tuple[list[FieldChange], dict[str, Any]]:
    """The differing fields of a stream and the update config (the live one, overlaid)."""
    fields: list[FieldChange] = []
    dropped = _dropped_fields(stream, server)
    update = copy.deepcopy(live)
    for fld, key in STREAM_FIELD_TO_API.items():
        want = getattr(stream, fld)
        if want is None or fld in dropped:
            continue
        have = _stream_value(live, key)
        update[key] = _jsonable(want)
        if not _same(fld, _stream_value({key: want}, key), have):
            effect, reason = _classify_stream_field(fld, have, want)
            fields.append(FieldChange(fld, have, want, effect, reason))
    want_subjects = sorted(stream.subjects)
    have_subjects = sorted(live.get("subjects") or [])
    update["subjects"] = list(stream.subjects)
    if want_subjects != have_subjects:
        fields.append(FieldChange("subjects", have_subjects, want_subjects))
    create = _stream_create_config(stream, topology, server)
    marks = {MARK_TOPOLOGY: topology.name, MARK_FINGERPRINT: create["metadata"][MARK_FINGERPRINT]}
    fields += _metadata_fields(stream.metadata, live.get("metadata"), marks)
    update["metadata"] = _merged_metadata(live.get("metadata"), stream.metadata, marks)
    return fields, update


def _diff_consumer(
    consumer: Consumer,
    live: dict[str, Any],
    stream_replicas: int,
    topology: Topology,
    server: tuple[int, int, int],
) -> tuple[list[FieldChange], dict[str, Any]]:
    fields: list[FieldChange] = []
    dropped = _dropped_fields(consumer, server)
    update = copy.deepcopy(live)
    for fld, key in CONSUMER_FIELD_TO_API.items():
        want = getattr(consumer, fld)
        if want is None or fld in dropped:
            continue
        have = live.get(key, _CONSUMER_ABSENT.get(key))
        if fld == "replicas" and not have:
            have = stream_replicas  # 0: the consumer follows its stream
        update[key] = _jsonable(want)
        if not _same(fld, want, have):
            if fld in _CONSUMER_REPLACE:
                reason = f"{fld} cannot change in place; the consumer's delivery position is lost"
                fields.append(FieldChange(fld, have, want, "replace", reason))
            else:
                fields.append(FieldChange(fld, have, want))
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
    create = _consumer_create_config(consumer, topology, server)
    marks = {
        MARK_TOPOLOGY: topology.name,
        MARK_SERVICE: consumer.service,
        MARK_FINGERPRINT: create["metadata"][MARK_FINGERPRINT],
    }
    fields += _metadata_fields(consumer.metadata, live.get("metadata"), marks)
    update["metadata"] = _merged_metadata(live.get("metadata"), consumer.metadata, marks)
    return fields, update


def _owner(cfg: dict[str, Any]) -> str | None:
    md = cfg.get("metadata")
    if isinstance(md, dict):
        owner = md.get(MARK_TOPOLOGY)
        return owner if isinstance(owner, str) else None
    return None


# --------------------------------------------------------------------------- plan


async def _read_consumers(
    api: JetStreamApi, streams: Iterable[str], concurrency: int = 32
) -> dict[str, list[dict[str, Any]]]:
    sem = asyncio.Semaphore(concurrency)

    async def one(name: str) -> tuple[str, list[dict[str, Any]]]:
        async with sem:
            return name, await api.list_consumers(name)

    return dict(await asyncio.gather(*(one(n) for n in streams)))


async def plan_changes(
    js_or_nc: Client | JetStreamContext | JetStreamApi,
    topology: Topology,
    only_streams: Iterable[str] | None = None,
    only_consumers: Iterable[tuple[str, str]] | None = None,
) -> Plan:
    """Compare `topology` with the live server and plan what apply would do.

    Without scope every stream on the server is read: declared ones are compared, marked
    undeclared ones are planned for deletion, others reported as unmanaged. With
    `only_streams` (every declared consumer of those streams) and/or `only_consumers`
    ((stream, consumer) pairs) only those assets are read, and nothing is deleted.

    Raises:
        UnsupportedFeatureError: The topology needs a newer server.
        ReconcileError: The server refused a request or did not answer.
        KeyError: A scoped stream or consumer is not declared in the topology.
    """
    started = time.perf_counter()
    api = JetStreamApi.of(js_or_nc)
    server = api.server_version
    check_features(topology, server)
    planner = _Planner(
        topology,
        server,
        set(only_streams) if only_streams is not None else None,
        set(only_consumers) if only_consumers is not None else None,
    )
    plan = Plan(topology.name, topology.environment, _vstr(server))
    await planner.read(api)
    plan.changes = planner.changes()
    plan.seconds = time.perf_counter() - started
    return plan


class _Planner:
    """One plan's reading of the server and its decisions, stream by stream."""

    def __init__(
        self,
        topology: Topology,
        server: tuple[int, int, int],
        stream_scope: set[str] | None,
        consumer_scope: set[tuple[str, str]] | None,
    ) -> None:
        self.topology = topology
        self.server = server
        self.stream_scope = stream_scope
        self.consumer_scope = consumer_scope
        self.scoped = stream_scope is not None or consumer_scope is not None
        if self.scoped:
            names = set(stream_scope or ()) | {s for s, _ in consumer_scope or ()}
            self.declared = [s for s in topology.streams if s.name in names]
            missing = names - {s.name for s in self.declared}
            if missing:
                raise KeyError(sorted(missing)[0])
            for sname, cname in consumer_scope or ():
                topology.stream(sname).consumer(cname)  # KeyError when not declared
        else:
            self.declared = list(topology.streams)
        self.declared_names = {s.name for s in self.declared}
        self.live_streams: dict[str, dict[str, Any]] = {}
        self.live_consumers: dict[str, list[dict[str, Any]]] = {}

    async def read(self, api: JetStreamApi) -> None:
        if self.scoped:
            infos = await asyncio.gather(*(api.stream_info(s.name) for s in self.declared))
            self.live_streams = {i["config"]["name"]: i for i in infos if i is not None}
        else:
            self.live_streams = {i["config"]["name"]: i for i in await api.list_streams()}
        # Consumers of every declared stream that exists, and of every marked one.
        to_read = [
            n
            for n, info in self.live_streams.items()
            if n in self.declared_names or _owner(info["config"]) == self.topology.name
        ]
        if self.consumer_scope is not None and self.stream_scope is None:
            pairs = [p for p in sorted(self.consumer_scope) if p[0] in self.live_streams]
            cinfos = await asyncio.gather(*(api.consumer_info(s, c) for s, c in pairs))
            self.live_consumers = {n: [] for n in to_read}
            for (sname, _), cinfo in zip(pairs, cinfos, strict=True):
                if cinfo is not None:
                    self.live_consumers[sname].append(cinfo)
        else:
            self.live_consumers = await _read_consumers(api, to_read)

    def changes(self) -> list[Change]:
        out: list[Change] = []
        name = self.topology.name
        # 1. Managed streams the topology no longer declares: deleted first, so that
        #    their subjects are free for the streams that take them over.
        if not self.scoped:
            for sname, info in sorted(self.live_streams.items()):
                if sname not in self.declared_names and _owner(info["config"]) == name:
                    out.append(Change("stream", sname, None, "delete", note=_state_note(info)))
        # 2. Declared streams, each followed by its consumers.
        for stream in self.declared:
            out += self._stream(stream)
        # 3. Streams that belong to nobody here: reported, never touched.
        if not self.scoped:
            for sname, info in sorted(self.live_streams.items()):
                owner = _owner(info["config"])
                if sname in self.declared_names or owner == name:
                    continue
                note = f"managed by topology `{owner}`" if owner else "not created by natstopo"
                out.append(Change("stream", sname, None, "unmanaged", note=note))
        return out

    def _wanted(self, stream: Stream) -> list[Consumer]:
        if self.consumer_scope is None or (
            self.stream_scope is not None and stream.name in self.stream_scope
        ):
            return list(stream.consumers)
        return [c for c in stream.consumers if (stream.name, c.name) in self.consumer_scope]

    def _conflict(
        self, kind: Literal["stream", "consumer"], stream: str, consumer: str | None, owner: str
    ) -> Change:
        note = f"declared here but managed by topology `{owner}`; apply refuses"
        return Change(kind, stream, consumer, "unmanaged", note=note, conflict=True)

    def _stream(self, stream: Stream) -> list[Change]:
        topology, server = self.topology, self.server
        wanted = self._wanted(stream)
        info = self.live_streams.get(stream.name)
        if info is None:
            create = _stream_create_config(stream, topology, server)
            return [Change("stream", stream.name, None, "create", config=create)] + [
                Change(
                    "consumer",
                    stream.name,
                    c.name,
                    "create",
                    config=_consumer_create_config(c, topology, server),
                )
                for c in wanted
            ]
        live = info["config"]
        owner = _owner(live)
        if owner not in (None, topology.name):
            return [self._conflict("stream", stream.name, None, str(owner))]
        fields, update = _diff_stream(stream, live, topology, server)
        replaced = any(f.effect == "replace" for f in fields)
        live_cons = {ci["name"]: ci for ci in self.live_consumers.get(stream.name, [])}
        deletes, unmanaged = self._undeclared_consumers(stream, live_cons, replaced)
        out = deletes
        if replaced:
            create = _stream_create_config(stream, topology, server)
            note = _state_note(info)
            out.append(Change("stream", stream.name, None, "replace", fields, note, config=create))
        elif fields:
            note = "adopted: not yet marked as managed" if owner is None else ""
            out.append(Change("stream", stream.name, None, "update", fields, note, config=update))
        else:
            out.append(Change("stream", stream.name, None, "none"))
        replicas = int(_stream_value(live, "num_replicas"))
        for c in wanted:
            out.append(self._consumer(stream, c, live_cons.get(c.name), replaced, replicas))
        return out + unmanaged

    def _undeclared_consumers(
        self, stream: Stream, live_cons: dict[str, dict[str, Any]], replaced: bool
    ) -> tuple[list[Change], list[Change]]:
        """Marked consumers the stream no longer declares (deletes), and unmarked ones."""
        deletes: list[Change] = []
        unmanaged: list[Change] = []
        if self.scoped:
            return deletes, unmanaged  # a scoped plan looks only at what it was asked about
        declared = {c.name for c in stream.consumers}
        for cname, ci in sorted(live_cons.items()):
            if cname in declared:
                continue
            owner = _owner(ci.get("config", {}))
            if owner == self.topology.name:
                note = "deleted with its stream" if replaced else ""
                deletes.append(Change("consumer", stream.name, cname, "delete", note=note))
                continue
            note = f"managed by topology `{owner}`" if owner else "not created by natstopo"
            if replaced:
                note += "; lost when its stream is replaced"
            unmanaged.append(Change("consumer", stream.name, cname, "unmanaged", note=note))
        return deletes, unmanaged

    def _consumer(
        self,
        stream: Stream,
        consumer: Consumer,
        info: dict[str, Any] | None,
        stream_replaced: bool,
        stream_replicas: int,
    ) -> Change:
        topology, server = self.topology, self.server
        create = _consumer_create_config(consumer, topology, server)
        if stream_replaced or info is None:
            note = "recreated with its stream" if stream_replaced and info is not None else ""
            return Change(
                "consumer", stream.name, consumer.name, "create", note=note, config=create
            )
        live = info.get("config", {})
        owner = _owner(live)
        if owner not in (None, topology.name):
            return self._conflict("consumer", stream.name, consumer.name, str(owner))
        fields, update = _diff_consumer(consumer, live, stream_replicas, topology, server)
        if any(f.effect == "replace" for f in fields):
            note = _consumer_note(info)
            return Change(
                "consumer", stream.name, consumer.name, "replace", fields, note, config=create
            )
        if fields:
            note = "adopted: not yet marked as managed" if owner is None else ""
            return Change(
                "consumer", stream.name, consumer.name, "update", fields, note, config=update
            )
        return Change("consumer", stream.name, consumer.name, "none")


def _state_note(info: dict[str, Any]) -> str:
    state = info.get("state") or {}
    msgs = int(state.get("messages", 0) or 0)
    size = int(state.get("bytes", 0) or 0)
    if not msgs:
        return "holds no messages"
    return f"holds {msgs} message{'s' if msgs != 1 else ''}, {format_size(size)}"


def _consumer_note(info: dict[str, Any]) -> str:
    pending = int(info.get("num_pending", 0) or 0) + int(info.get("num_ack_pending", 0) or 0)
    return f"{pending} message(s) pending or unacked" if pending else ""


# --------------------------------------------------------------------------- apply


async def apply_plan(
    js_or_nc: Client | JetStreamContext | JetStreamApi,
    plan: Plan,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = 1,
) -> ApplyResult:
    """Carry out `plan`: streams before their consumers, a replace as delete then create.

    Args:
        js_or_nc: A connection or JetStream context (of the server that was planned).
        plan: A plan from `plan_changes`, applied as it is (no re-read).
        allow_destructive: Needed for any replace, delete or lowered limit.
        progress: Called with one line per asset done (`+ stream X created (0.02s)`).
        concurrency: Streams (each with its consumers) worked on at once. 1 keeps the
            file's order, which matters when a subject moves from one stream to another.

    Raises:
        ChangesRefusedError: Replace or destructive steps without `allow_destructive`;
            nothing was changed.
        ReconcileError: A conflict with another topology (nothing changed), or the server
            refused a step (the steps before it are done).
    """
    started = time.perf_counter()
    if plan.conflicts:
        raise ReconcileError(
            "assets declared here are managed by another topology; nothing was changed:\n  "
            + "\n  ".join(c.describe() for c in plan.conflicts)
        )
    if plan.refused_without_flag and not allow_destructive:
        raise ChangesRefusedError([c.describe() for c in plan.changes if c.needs_flag])
    api = JetStreamApi.of(js_or_nc)
    result = ApplyResult(plan)
    replaced_streams = {
        c.stream for c in plan.changes if c.kind == "stream" and c.action == "replace"
    }
    steps = [
        c
        for c in plan.changes
        if c.pending
        # A consumer deleted with its replaced stream needs no step of its own.
        and not (c.kind == "consumer" and c.action == "delete" and c.stream in replaced_streams)
    ]
    # Stream deletes first (they free subjects), then one group per declared stream:
    # its consumer deletes, the stream, its consumers, in that order. Groups whose stream
    # gives up subjects go before the others, so a topic moved from one stream to
    # another is free when the other stream takes it (else: error 10065, overlap).
    first = [c for c in steps if c.kind == "stream" and c.action == "delete"]
    groups: dict[str, list[Change]] = {}
    first_ids = {id(c) for c in first}
    for c in steps:
        if id(c) not in first_ids:
            groups.setdefault(c.stream, []).append(c)
    for group in groups.values():
        # Likewise inside a stream: a consumer that gives up filter subjects goes before
        # one that takes them (a work-queue stream refuses overlapping filters, 10100).
        group.sort(key=_step_rank)

    def releases(group: list[Change]) -> bool:
        return any(c.kind == "stream" and _gives_up_subjects(c) for c in group)

    releasing = [g for g in groups.values() if releases(g)]
    others = [g for g in groups.values() if not releases(g)]
    failures: list[ReconcileError] = []
    sem = asyncio.Semaphore(max(1, concurrency))

    async def run(group: list[Change]) -> None:
        async with sem:
            for change in group:
                if failures:
                    return
                t0 = time.perf_counter()
                try:
                    await _apply_one(api, change)
                except ReconcileError as exc:
                    failures.append(
                        ReconcileError(
                            f"{change.kind} {change.name}: {change.action} failed "
                            f"({len(result.steps)} step(s) done before): {exc}",
                            err_code=exc.err_code,
                        )
                    )
                    failures[-1].__cause__ = exc
                    return
                step = AppliedStep(change, time.perf_counter() - t0)
                result.steps.append(step)
                if progress is not None:
                    progress(step.line())

    for phase in ([[c] for c in first], releasing, others):
        if not failures:
            await asyncio.gather(*(run(g) for g in phase))
    if failures:
        raise failures[0]
    result.seconds = time.perf_counter() - started
    return result


def _gives_up_subjects(change: Change) -> bool:
    """A stream losing subjects, or a consumer losing filter subjects."""
    if change.action not in ("update", "replace"):
        return False
    name = "subjects" if change.kind == "stream" else "filter_subjects"
    return any(
        f.field == name and bool(set(f.before or ()) - set(f.after or ())) for f in change.fields
    )


def _step_rank(change: Change) -> int:
    """Order inside one stream's group: consumer deletes, the stream, consumers giving
    up filters, other consumers (a stable sort keeps the file's order otherwise)."""
    if change.kind == "stream":
        return 1
    if change.action == "delete":
        return 0
    return 2 if _gives_up_subjects(change) else 3


async def _apply_one(api: JetStreamApi, change: Change) -> None:
    s, c = change.stream, change.consumer
    if change.kind == "stream":
        if change.action in ("delete", "replace"):
            await api.call(f"STREAM.DELETE.{s}", missing=_STREAM_NOT_FOUND)
        if change.action in ("create", "replace"):
            await api.call(f"STREAM.CREATE.{s}", change.config)
        elif change.action == "update":
            await api.call(f"STREAM.UPDATE.{s}", change.config)
        return
    if change.action in ("delete", "replace"):
        await api.call(f"CONSUMER.DELETE.{s}.{c}", missing=_CONSUMER_NOT_FOUND)
    if change.action in ("create", "replace", "update"):
        await api.call(f"CONSUMER.CREATE.{s}.{c}", {"stream_name": s, "config": change.config})


# --------------------------------------------------------------------------- one call


async def reconcile_async(
    options: ConnectOptions,
    topology: Topology,
    *,
    apply: bool = True,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = 1,
) -> ApplyResult:
    """Connect, plan, apply (unless `apply` is False: the result then has no steps), close."""
    nc = await connect(options)
    try:
        plan = await plan_changes(nc, topology)
        if not apply:
            return ApplyResult(plan, seconds=plan.seconds)
        return await apply_plan(
            nc,
            plan,
            allow_destructive=allow_destructive,
            progress=progress,
            concurrency=concurrency,
        )
    finally:
        await nc.close()


def reconcile(
    servers: str | Sequence[str] | ConnectOptions,
    topology: Topology,
    *,
    apply: bool = True,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = 1,
) -> ApplyResult:
    """Blocking plan-and-apply for callers without an event loop (the Pulumi provider).

    `servers` is a URL, a list of URLs or full `ConnectOptions` (other options then come
    from the NATS_* environment variables).
    """
    options = (
        servers
        if isinstance(servers, ConnectOptions)
        else ConnectOptions.from_env(
            servers=servers if isinstance(servers, str) else tuple(servers)
        )
    )
    work = partial(
        reconcile_async,
        options,
        topology,
        apply=apply,
        allow_destructive=allow_destructive,
        progress=progress,
        concurrency=concurrency,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work())
    # Called from inside an event loop (a Pulumi program, a notebook): asyncio.run would
    # refuse, so the work gets a loop of its own in another thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()

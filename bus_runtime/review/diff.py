"""`natstopo diff`: what a topology change does, in the server's terms and the contract's.

Two topology versions (BASE and HEAD) are compared per environment. Every change is one
`ReviewChange` with two separate judgements:

- **infrastructure** (streams and consumers, per environment): `safe` (the server takes it
  in place), `replace` (the server refuses it in place: recreate, losing messages or the
  delivery position), `destructive` (a delete, a lowered limit, a retention change that
  drops messages), by `bus_runtime.jetstream.rules` for the target server version, with
  no live state (the worst the server could do);
- **contract** (topics, consumers, payload schemas, publishers): `compatible` or
  `breaking`, naming the services affected and the deploy order that keeps it safe.

Permission changes (a service gaining or losing the right to publish a topic or to read
through a consumer) are their own changes, flagged for reviewers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..jetstream import rules
from ..reconcile.plan import format_value, jsonable
from ..topology.model import (
    CONSUMER_FIELD_TO_API,
    STREAM_FIELD_TO_API,
    Consumer,
    Location,
    Stream,
    Topic,
    Topology,
)
from ..topology.subjects import subject_matches
from ..topology.yaml_source import Locations
from .schema_compat import SchemaDelta, compare_schemas, deploy_order

FORMAT = "natstopo.diff/v1"
Kind = Literal["stream", "consumer", "topic", "service", "schema", "environment", "permission"]
Action = Literal["create", "update", "replace", "delete"]
Infra = Literal["safe", "replace", "destructive"]
Contract = Literal["compatible", "breaking"]
_INFRA_RANK = {"safe": 0, "replace": 1, "destructive": 2}
# Where HEAD sets a field: (kind, stream, consumer, environment, field) -> its place.
Locator = Callable[[str, str, "str | None", "str | None", str], "Location | None"]
# Gate levels `--fail-on` takes.
LEVELS = ("replace", "destructive", "breaking", "permission")
# replace is in the default gate: a replaced stream loses every message it holds.
DEFAULT_FAIL_ON = ("replace", "destructive", "breaking")


@dataclass(frozen=True)
class FieldDelta:
    """One setting before -> after, in the topology's field names and units.

    `before`/`after` None means the asset does not have the field set there (the server's
    default applies, shown as `default (X)`).
    """

    field: str
    before: Any
    after: Any
    effect: Infra = "safe"
    reason: str = ""

    def render(self) -> str:
        text = (
            f"{self.field}: {_shown(self.field, self.before)} -> {_shown(self.field, self.after)}"
        )
        if self.effect != "safe":
            text += f" ({self.effect}: {self.reason})" if self.reason else f" ({self.effect})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "before": jsonable(self.before),
            "after": jsonable(self.after),
            "before_text": _shown(self.field, self.before),
            "after_text": _shown(self.field, self.after),
            "effect": self.effect,
            "reason": self.reason,
        }


def _shown(fld: str, value: Any) -> str:
    return "unset" if value is None else format_value(fld, value)


@dataclass
class ReviewChange:
    """One change between BASE and HEAD.

    Attributes:
        kind: stream, consumer, topic, service, schema, environment or permission.
        name: The asset (`STREAM`, `STREAM/consumer`, a topic, `service publishes topic`).
        action: create, update, replace or delete.
        environment: The environment whose effective settings were compared (infra changes);
            None for what does not depend on the environment.
        fields: Settings before -> after.
        infrastructure: safe / replace / destructive for streams and consumers, else None.
        contract: compatible / breaking where publishers or consumers are concerned, else None.
        reasons: Why, one line each (the infrastructure reason first).
        services: The services the contract judgement names.
        deploy_order: `consumers first`, `publishers first`, `no safe order`, or None.
        review: Flagged for reviewers (permission changes).
        location: Where HEAD declares it (BASE for what HEAD deleted).
    """

    kind: Kind
    name: str
    action: Action
    environment: str | None = None
    fields: list[FieldDelta] = field(default_factory=list)
    infrastructure: Infra | None = None
    contract: Contract | None = None
    reasons: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    deploy_order: str | None = None
    review: bool = False
    location: Location | None = None

    @property
    def risk(self) -> int:
        """Ordering key: destructive, breaking, replace, permission, the rest."""
        if self.infrastructure == "destructive":
            return 0
        if self.contract == "breaking":
            return 1
        if self.infrastructure == "replace":
            return 2
        if self.review:
            return 3
        return 4

    def levels(self) -> set[str]:
        """The gate levels this change reaches."""
        out: set[str] = set()
        if self.infrastructure in ("replace", "destructive"):
            out.add("replace")
        if self.infrastructure == "destructive":
            out.add("destructive")
        if self.contract == "breaking":
            out.add("breaking")
        if self.review:
            out.add("permission")
        return out

    def judgement(self) -> str:
        parts: list[str] = []
        if self.infrastructure:
            parts.append(self.infrastructure)
        if self.contract:
            who = (
                f" for {', '.join(self.services)}"
                if self.services and self.contract == "breaking"
                else ""
            )
            parts.append(f"{self.contract}{who}")
        if self.review:
            parts.append("permission")
        return ", ".join(parts) or "note"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "environment": self.environment,
            "infrastructure": self.infrastructure,
            "contract": self.contract,
            "services": self.services,
            "deploy_order": self.deploy_order,
            "review": self.review,
            "reasons": self.reasons,
            "fields": [f.to_dict() for f in self.fields],
            "location": None
            if self.location is None
            else {
                "file": self.location.file,
                "line": self.location.line,
                "column": self.location.column,
            },
        }


@dataclass
class Review:
    """Every change between two topology versions, with the gate's verdict."""

    base: str
    head: str
    server_version: str
    environments: list[str | None]
    changes: list[ReviewChange]
    fail_on: tuple[str, ...] = DEFAULT_FAIL_ON

    @property
    def failing(self) -> list[ReviewChange]:
        return [c for c in self.changes if c.levels() & set(self.fail_on)]

    @property
    def gate_failed(self) -> bool:
        return bool(self.failing)

    def counts(self) -> dict[str, int]:
        out = {
            "changes": len(self.changes),
            "destructive": 0,
            "replace": 0,
            "safe": 0,
            "breaking": 0,
            "compatible": 0,
            "permission": 0,
        }
        for c in self.changes:
            if c.infrastructure:
                out[c.infrastructure] += 1
            if c.contract:
                out[c.contract] += 1
            if c.review:
                out["permission"] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "base": self.base,
            "head": self.head,
            "server_version": self.server_version,
            "environments": ["base" if e is None else e for e in self.environments],
            "summary": self.counts(),
            "gate": {
                "fail_on": list(self.fail_on),
                "failed": self.gate_failed,
                "failing": len(self.failing),
            },
            "changes": [c.to_dict() for c in self.changes],
        }


# --------------------------------------------------------------------------- versions


def oldest_server_for(topologies: Iterable[Topology]) -> tuple[int, int, int]:
    """The oldest server version every topology's features allow (2.10 unless a newer feature
    is set)."""
    version = rules.MIN_SERVER
    for topology in topologies:
        for s, c in topology.iter_assets():
            asset: Stream | Consumer = s if c is None else c
            kind: rules.Kind = "stream" if c is None else "consumer"
            for rule in rules.FIELD_RULES[kind].values():
                value = getattr(asset, rule.field)
                if value is not None and value != rules.effective(kind, rule.key, {}):
                    version = max(version, rule.since)
    return version


def parse_version(text: str) -> tuple[int, int, int]:
    """`2.10`, `2.11.3` or `v2.14.0` as a version tuple.

    Raises:
        ValueError: Not a version.
    """
    parts = text.strip().lstrip("v").split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a server version (e.g. 2.10 or 2.14.3)")
    nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    version = (nums[0], nums[1], nums[2])
    if version < rules.MIN_SERVER:
        oldest = ".".join(map(str, rules.MIN_SERVER[:2]))
        raise ValueError(f"{text!r}: natstopo supports nats-server {oldest} and newer")
    return version


# --------------------------------------------------------------------------- infrastructure


def _effect(eff: str) -> Infra:
    return {"in_place": "safe", "replace": "replace", "destructive": "destructive"}[eff]  # type: ignore[return-value]


def _worst(effects: Iterable[Infra]) -> Infra:
    return max(effects, key=lambda e: _INFRA_RANK[e], default="safe")


def _server_value(kind: str, fld: str, value: Any) -> Any:
    """A topology value as the server holds it: unset is the server's default."""
    if value is not None:
        return list(value) if isinstance(value, tuple) else value
    if kind == "stream":
        return rules.STREAM_DEFAULTS.get(STREAM_FIELD_TO_API[fld])
    return rules.CONSUMER_DEFAULTS.get(CONSUMER_FIELD_TO_API[fld])


def _classify(
    kind: str, fld: str, before: Any, after: Any, version: tuple[int, int, int]
) -> tuple[Infra, str]:
    b, a = _server_value(kind, fld, before), _server_value(kind, fld, after)
    # The live planner's classifier, without a server: no state, the worst case.
    eff, reason = rules.classify(kind, fld, b, a, version)  # type: ignore[arg-type]
    return _effect(eff), reason


def _setting_deltas(
    kind: str, old: Mapping[str, Any], new: Mapping[str, Any], version: tuple[int, int, int]
) -> list[FieldDelta]:
    out: list[FieldDelta] = []
    for fld in old:
        before, after = old[fld], new[fld]
        if _norm(before) == _norm(after):
            continue
        if _server_value(kind, fld, before) == _server_value(kind, fld, after):
            continue  # writing out the server's default (or dropping it) changes nothing
        effect, reason = _classify(kind, fld, before, after, version)
        out.append(FieldDelta(fld, _norm(before), _norm(after), effect, reason))
    return out


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _stream_changes(
    base: Topology, head: Topology, env: str | None, version: tuple[int, int, int]
) -> list[ReviewChange]:
    out: list[ReviewChange] = []
    old = {s.name: s for s in base.streams}
    new = {s.name: s for s in head.streams}
    for name in sorted(set(old) - set(new)):
        s = old[name]
        out.append(
            ReviewChange(
                "stream",
                name,
                "delete",
                env,
                infrastructure="destructive",
                reasons=[
                    f"stream `{name}` is deleted with every message it holds"
                    + (f" and its {len(s.consumers)} consumer(s)" if s.consumers else "")
                ],
                location=s.location,
            )
        )
    for name in [s.name for s in head.streams if s.name not in old]:
        out.append(
            ReviewChange(
                "stream", name, "create", env, infrastructure="safe", location=new[name].location
            )
        )
    for name in [s.name for s in head.streams if s.name in old]:
        a, b = old[name], new[name]
        fields = _setting_deltas("stream", a.settings(), b.settings(), version)
        if sorted(a.subjects) != sorted(b.subjects):
            fields.append(FieldDelta("subjects", sorted(a.subjects), sorted(b.subjects)))
        if dict(a.metadata) != dict(b.metadata):
            fields.append(FieldDelta("metadata", dict(a.metadata), dict(b.metadata)))
        if a.dead_letter != b.dead_letter:
            fields.append(FieldDelta("dead_letter", a.dead_letter, b.dead_letter))
        if not fields:
            continue
        infra = _worst(f.effect for f in fields)
        reasons = []
        if infra == "replace" and a.consumers:
            reasons.append(f"its {len(a.consumers)} consumer(s) are recreated and start over")
        out.append(
            ReviewChange(
                "stream",
                name,
                "replace" if infra == "replace" else "update",
                env,
                fields,
                infrastructure=infra,
                reasons=reasons,
                location=b.location,
            )
        )
        if infra == "replace":
            # The stream's consumers go with it: each loses its position.
            for c in b.consumers:
                if any(x.name == c.name for x in a.consumers):
                    out.append(
                        ReviewChange(
                            "consumer",
                            f"{name}/{c.name}",
                            "replace",
                            env,
                            infrastructure="replace",
                            reasons=[f"recreated with its stream `{name}`: delivery position lost"],
                            location=c.location,
                        )
                    )
    return out


def _consumer_changes(
    base: Topology, head: Topology, env: str | None, version: tuple[int, int, int]
) -> list[ReviewChange]:
    out: list[ReviewChange] = []
    old_streams = {s.name: s for s in base.streams}
    replaced = {
        s.name
        for s in head.streams
        if s.name in old_streams
        and any(
            f.effect == "replace"
            for f in _setting_deltas(
                "stream", old_streams[s.name].settings(), s.settings(), version
            )
        )
    }
    old = {(c.stream, c.name): c for c in base.consumers}
    new = {(c.stream, c.name): c for c in head.consumers}
    head_streams = {s.name for s in head.streams}
    for key in sorted(set(old) - set(new)):
        c = old[key]
        if c.stream not in head_streams:
            continue  # deleted with its stream
        out.append(
            ReviewChange(
                "consumer",
                f"{key[0]}/{key[1]}",
                "delete",
                env,
                infrastructure="destructive",
                reasons=[
                    f"consumer `{key[1]}` is deleted with its delivery position and unacknowledged messages"
                ],
                location=_parent_location(head, c.stream),
            )
        )
    for key in [(c.stream, c.name) for c in head.consumers if (c.stream, c.name) not in old]:
        out.append(
            ReviewChange(
                "consumer",
                f"{key[0]}/{key[1]}",
                "create",
                env,
                infrastructure="safe",
                location=new[key].location,
            )
        )
    for key in [(c.stream, c.name) for c in head.consumers if (c.stream, c.name) in old]:
        if key[0] in replaced:
            continue  # reported with its stream's replace
        a, b = old[key], new[key]
        fields = _setting_deltas("consumer", a.settings(), b.settings(), version)
        if sorted(a.filter_subjects) != sorted(b.filter_subjects):
            effect, reason = _filter_effect(base, head, a, b)
            fields.append(
                FieldDelta(
                    "filter_subjects",
                    sorted(a.filter_subjects),
                    sorted(b.filter_subjects),
                    effect,
                    reason,
                )
            )
        if dict(a.metadata) != dict(b.metadata):
            fields.append(FieldDelta("metadata", dict(a.metadata), dict(b.metadata)))
        if not fields:
            continue
        infra = _worst(f.effect for f in fields)
        out.append(
            ReviewChange(
                "consumer",
                f"{key[0]}/{key[1]}",
                "replace" if infra == "replace" else "update",
                env,
                fields,
                infrastructure=infra,
                location=b.location,
            )
        )
    return out


def _filter_effect(base: Topology, head: Topology, a: Consumer, b: Consumer) -> tuple[Infra, str]:
    """A consumer's filter change. On an interest stream the server deletes, right away,
    stored messages that no consumer's filter takes any more (measured on 2.10 to 2.15)."""
    stream = next((s for s in head.streams if s.name == b.stream), None)
    old_stream = next((s for s in base.streams if s.name == a.stream), None)
    if stream is None or old_stream is None or old_stream.retention != "interest":
        return "safe", ""
    every = list(old_stream.subjects)
    before = set(a.filter_subjects or every)
    after = set(b.filter_subjects or stream.subjects)
    others = [c for c in stream.consumers if c.name != b.name]
    dropped = []
    for subject in sorted(before - after):
        covered = any(
            not c.filter_subjects or any(subject_matches(f, subject) for f in c.filter_subjects)
            for c in others
        )
        if not covered:
            dropped.append(subject)
    if not dropped:
        return "safe", ""
    return "destructive", (
        f"interest stream: stored messages on {', '.join(dropped)} that no other consumer "
        "takes are deleted"
    )


def _parent_location(topology: Topology, stream: str) -> Location | None:
    for s in topology.streams:
        if s.name == stream:
            return s.location
    return None


# --------------------------------------------------------------------------- contract


def _consumer_topics(topology: Topology, c: Consumer) -> tuple[str, ...]:
    if c.topics:
        return c.topics
    return tuple(t.name for t in topology.stream(c.stream).topics)


def _readers_index(topology: Topology) -> dict[str, list[str]]:
    """Topic -> the services that consume it, for the whole topology at once."""
    out: dict[str, set[str]] = {}
    for s in topology.streams:
        every = tuple(t.name for t in s.topics)
        for c in s.consumers:
            for name in c.topics or every:
                out.setdefault(name, set()).add(c.service)
    return {k: sorted(v) for k, v in out.items()}


def _contract_changes(base: Topology, head: Topology) -> list[ReviewChange]:
    out: list[ReviewChange] = []
    readers = (_readers_index(base), _readers_index(head))
    old_topics = {t.name: t for t in base.topics}
    new_topics = {t.name: t for t in head.topics}
    by_subject = {t.subject: t for t in head.topics}
    for name in sorted(set(old_topics) - set(new_topics)):
        t = old_topics[name]
        users = sorted(set(t.publishers) | set(readers[0].get(name, ())))
        renamed = by_subject.get(t.subject)
        reasons = [
            f"topic `{name}` is removed" + (f" (renamed to `{renamed.name}`?)" if renamed else "")
        ]
        if users:
            reasons.append(
                f"still used by {', '.join(users)}: their publish or subscribe of `{name}` fails"
            )
        out.append(
            ReviewChange(
                "topic",
                name,
                "delete",
                contract="breaking" if users else "compatible",
                reasons=reasons,
                services=users,
                location=_parent_location(head, t.stream),
            )
        )
    for name in [t.name for t in head.topics if t.name not in old_topics]:
        t = new_topics[name]
        out.append(
            ReviewChange("topic", name, "create", contract="compatible", location=t.location)
        )
    for name in [t.name for t in head.topics if t.name in old_topics]:
        a, b = old_topics[name], new_topics[name]
        if a == b and a.schema_digest == b.schema_digest:
            continue
        out += _topic_changes(a, b, readers)
    out += _consumer_contract(base, head)
    out += _permission_changes(base, head)
    old_services = {s.name for s in base.services}
    new_services = {s.name for s in head.services}
    for name in sorted(old_services - new_services):
        out.append(
            ReviewChange(
                "service", name, "delete", reasons=[f"service `{name}` is no longer declared"]
            )
        )
    for name in sorted(new_services - old_services):
        out.append(ReviewChange("service", name, "create"))
    return out


def _topic_changes(
    a: Topic, b: Topic, readers_of: tuple[dict[str, list[str]], dict[str, list[str]]]
) -> list[ReviewChange]:
    out: list[ReviewChange] = []
    readers = sorted(set(readers_of[0].get(a.name, ())) | set(readers_of[1].get(b.name, ())))
    writers = sorted(set(a.publishers) | set(b.publishers))
    if a.subject != b.subject or a.stream != b.stream:
        fields = [FieldDelta("subject", a.subject, b.subject)] if a.subject != b.subject else []
        if a.stream != b.stream:
            fields.append(FieldDelta("stream", a.stream, b.stream))
        out.append(
            ReviewChange(
                "topic",
                b.name,
                "update",
                fields=fields,
                contract="breaking" if readers else "compatible",
                reasons=[
                    f"events already stored under `{a.subject}` in `{a.stream}` are not delivered "
                    "to consumers of the new place; clients outside bus_runtime that use the old "
                    "subject stop working"
                ],
                services=readers,
                location=b.location,
            )
        )
    if a.deprecated != b.deprecated and b.deprecated:
        out.append(
            ReviewChange(
                "topic",
                b.name,
                "update",
                fields=[FieldDelta("deprecated", a.deprecated, b.deprecated)],
                contract="compatible",
                reasons=["publishers should stop"],
                services=list(b.publishers),
                location=b.location,
            )
        )
    if (a.schema_digest or None) != (b.schema_digest or None):
        deltas = compare_schemas(a.schema, b.schema)
        change = _schema_change(b, deltas, writers, readers)
        if a.schema_file != b.schema_file:
            change.fields.append(FieldDelta("schema", a.schema_file, b.schema_file))
        out.append(change)
    return out


def _schema_change(
    topic: Topic, deltas: list[SchemaDelta], writers: list[str], readers: list[str]
) -> ReviewChange:
    broken: set[str] = set()
    if any(d.breaks_writers for d in deltas):
        broken |= set(writers)
    if any(d.breaks_readers for d in deltas):
        broken |= set(readers)
    order = deploy_order(deltas)
    reasons = list(dict.fromkeys(d.render() for d in deltas)) or ["only annotations changed"]
    return ReviewChange(
        "schema",
        topic.name,
        "update",
        fields=[],
        contract="breaking" if broken else "compatible",
        reasons=reasons,
        services=sorted(broken),
        deploy_order=order,
        location=topic.location,
    )


def _consumer_contract(base: Topology, head: Topology) -> list[ReviewChange]:
    out: list[ReviewChange] = []
    old = {(c.stream, c.name): c for c in base.consumers}
    new = {(c.stream, c.name): c for c in head.consumers}
    for key in sorted(set(old) - set(new)):
        c = old[key]
        out.append(
            ReviewChange(
                "consumer",
                f"{key[0]}/{key[1]}",
                "delete",
                contract="breaking",
                services=[c.service],
                reasons=[
                    f"`{c.service}` subscribes through it: its subscribe fails once the topology "
                    "no longer declares it"
                ],
                location=_parent_location(head, c.stream),
            )
        )
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if a.service != b.service:
            out.append(
                ReviewChange(
                    "consumer",
                    f"{key[0]}/{key[1]}",
                    "update",
                    fields=[FieldDelta("service", a.service, b.service)],
                    contract="breaking",
                    services=sorted({a.service, b.service}),
                    reasons=[
                        f"moved from `{a.service}` to `{b.service}`: `{a.service}` can no longer "
                        f"subscribe, and `{b.service}` continues from `{a.service}`'s position"
                    ],
                    location=b.location,
                )
            )
        if b.headers_only and not a.headers_only:
            out.append(
                ReviewChange(
                    "consumer",
                    f"{key[0]}/{key[1]}",
                    "update",
                    fields=[FieldDelta("headers_only", a.headers_only, b.headers_only)],
                    contract="breaking",
                    services=[b.service],
                    reasons=[
                        f"messages reach `{b.service}` without their body: its handlers cannot "
                        "read an event (bus_runtime dead-letters each one)"
                    ],
                    location=b.location,
                )
            )
        lost = sorted(set(_consumer_topics(base, a)) - set(_consumer_topics(head, b)))
        if lost:
            out.append(
                ReviewChange(
                    "consumer",
                    f"{key[0]}/{key[1]}",
                    "update",
                    fields=[
                        FieldDelta(
                            "topics",
                            list(_consumer_topics(base, a)),
                            list(_consumer_topics(head, b)),
                        )
                    ],
                    contract="breaking",
                    services=[b.service],
                    reasons=[
                        f"no longer receives {', '.join(f'`{t}`' for t in lost)}: "
                        f"`{b.service}`'s subscribe of those topics fails"
                    ],
                    location=b.location,
                )
            )
    return out


def _rights(topology: Topology) -> set[tuple[str, str, str]]:
    out = {(svc, "publish", t.name) for t in topology.topics for svc in t.publishers}
    out |= {(c.service, "consume", f"{c.stream}/{c.name}") for c in topology.consumers}
    return out


def _permission_changes(base: Topology, head: Topology) -> list[ReviewChange]:
    out: list[ReviewChange] = []
    old, new = _rights(base), _rights(head)
    for svc, verb, what in sorted(new - old):
        out.append(
            ReviewChange(
                "permission",
                f"{svc} {verb} {what}",
                "create",
                review=True,
                services=[svc],
                reasons=[f"`{svc}` gains the right to {verb} `{what}`"],
                location=_right_location(head, verb, what),
            )
        )
    for svc, verb, what in sorted(old - new):
        out.append(
            ReviewChange(
                "permission",
                f"{svc} {verb} {what}",
                "delete",
                review=True,
                services=[svc],
                contract="breaking"
                if verb == "publish" and what in {t.name for t in head.topics}
                else None,
                reasons=[f"`{svc}` loses the right to {verb} `{what}`"],
                location=_right_location(head, verb, what) or _right_location(base, verb, what),
            )
        )
    return out


def _right_location(topology: Topology, verb: str, what: str) -> Location | None:
    if verb == "publish":
        return next((t.location for t in topology.topics if t.name == what), None)
    stream, _, name = what.partition("/")
    return next(
        (c.location for c in topology.consumers if c.stream == stream and c.name == name), None
    )


# --------------------------------------------------------------------------- the review


def review(
    base: Mapping[str | None, Topology],
    head: Mapping[str | None, Topology],
    *,
    base_label: str,
    head_label: str,
    environments: Sequence[str | None] | None = None,
    server_version: tuple[int, int, int] | None = None,
    fail_on: Sequence[str] = DEFAULT_FAIL_ON,
    locate: Locator | None = None,
    head_file: str | None = None,
) -> Review:
    """Compare BASE and HEAD models (key None: the base model; others: environments).

    Args:
        base, head: Models by environment, as `load_every_environment` returns them.
        environments: Which to compare (default: every environment either declares, or
            the base when neither declares one).
        server_version: The target server (default: the oldest HEAD's features allow).
        fail_on: Gate levels (see `LEVELS`).
        locate: Finds the line that sets a field in HEAD (`settings_locator`), so that an
            annotation points at `max_bytes: 30GiB`, not at the stream's name.
        head_file: The name locations carry (HEAD's path from the repository's top), so
            that every location names the file a pull request changes.
    """
    declared = sorted({e for e in (*base, *head) if e is not None})
    if environments is None:
        environments = declared or [None]
    version = server_version or oldest_server_for(head.values())
    per_env: list[tuple[str | None, list[ReviewChange]]] = []
    for env in environments:
        # An environment that one side does not declare has that side's base settings.
        b, h = base.get(env) or base[None], head.get(env) or head[None]
        found = _stream_changes(b, h, env, version) + _consumer_changes(b, h, env, version)
        found += [_with_env(c, env) for c in _contract_changes(b, h)]
        if locate is not None:
            for c in found:
                _point_at_setting(c, locate)
        per_env.append((env, found))
    changes = _merge(_collapse(per_env))
    changes += _environment_changes(base, head)
    if head_file is not None:
        for c in changes:
            if c.location is not None:
                c.location = Location(head_file, c.location.line, c.location.column)
    changes.sort(key=_order)
    return Review(
        base_label,
        head_label,
        ".".join(map(str, version)),
        list(environments),
        changes,
        tuple(fail_on),
    )


def _with_env(change: ReviewChange, env: str | None) -> ReviewChange:
    change.environment = env
    return change


def _signature(c: ReviewChange) -> str:
    """What a change says, without where and for which environment."""
    d = c.to_dict()
    d.pop("environment")
    d.pop("location")
    return json.dumps(d, sort_keys=True, default=str)


def _collapse(per_env: list[tuple[str | None, list[ReviewChange]]]) -> list[ReviewChange]:
    """A change that every compared environment has alike is reported once (environment
    None: the same everywhere); one that differs stays per environment."""
    if len(per_env) == 1:
        return per_env[0][1]
    counts: dict[str, int] = {}
    for _env, found in per_env:
        for sig in {_signature(c) for c in found}:
            counts[sig] = counts.get(sig, 0) + 1
    out: list[ReviewChange] = []
    emitted: set[str] = set()
    for _env, found in per_env:
        for c in found:
            sig = _signature(c)
            if counts[sig] == len(per_env):
                if sig in emitted:
                    continue
                emitted.add(sig)
                c.environment = None
            out.append(c)
    return out


def _merge(changes: list[ReviewChange]) -> list[ReviewChange]:
    """One object per asset, action and environment: an infrastructure judgement and a
    contract judgement of the same consumer become one change with both."""
    out: dict[tuple[str, str, str, str | None], ReviewChange] = {}
    for c in changes:
        key = (c.kind, c.name, c.action, c.environment)
        have = out.get(key)
        if have is None:
            out[key] = c
            continue
        have.infrastructure = have.infrastructure or c.infrastructure
        have.contract = _worse_contract(have.contract, c.contract)
        have.services = sorted(set(have.services) | set(c.services))
        have.deploy_order = have.deploy_order or c.deploy_order
        have.review = have.review or c.review
        have.fields += [f for f in c.fields if f not in have.fields]
        have.reasons += [r for r in c.reasons if r not in have.reasons]
        have.location = have.location or c.location
    return list(out.values())


def _worse_contract(a: Contract | None, b: Contract | None) -> Contract | None:
    if "breaking" in (a, b):
        return "breaking"
    return a or b


_KIND_ORDER = {
    "stream": 0,
    "consumer": 1,
    "topic": 2,
    "schema": 3,
    "permission": 4,
    "service": 5,
    "environment": 6,
}


def _order(c: ReviewChange) -> tuple[int, str, int, str, str]:
    """Riskiest first; within a level a stream before its consumers."""
    stream = c.name.split("/", 1)[0] if c.kind in ("stream", "consumer") else c.name
    return (c.risk, stream, _KIND_ORDER[c.kind], c.name, c.environment or "")


def _environment_changes(
    base: Mapping[str | None, Topology], head: Mapping[str | None, Topology]
) -> list[ReviewChange]:
    out: list[ReviewChange] = []
    old = {e for e in base if e is not None}
    new = {e for e in head if e is not None}
    for env in sorted(old - new):
        out.append(
            ReviewChange(
                "environment",
                env,
                "delete",
                reasons=[
                    f"environment `{env}` is removed: its stack gets the base settings "
                    "(compared as such above), or no topology if the stack goes too"
                ],
            )
        )
    for env in sorted(new - old):
        out.append(
            ReviewChange(
                "environment",
                env,
                "create",
                reasons=[
                    f"environment `{env}` is new: compared with the base settings it replaces"
                ],
            )
        )
    return out


def _point_at_setting(change: ReviewChange, locate: Locator) -> None:
    if change.kind not in ("stream", "consumer") or not change.fields:
        return
    stream, _, consumer = change.name.partition("/")
    worst = sorted(change.fields, key=lambda f: -_INFRA_RANK[f.effect])
    for f in worst:
        if f.after is None:
            continue
        found = locate(change.kind, stream, consumer or None, change.environment, f.field)
        if found is not None:
            change.location = found
            return


def settings_locator(locs: Locations, file: str) -> Locator:
    """A `Locator` over HEAD's key places: the highest layer that sets the field wins
    (environment override, the asset's own field, environment defaults, defaults)."""

    def locate(
        kind: str, stream: str, consumer: str | None, env: str | None, fld: str
    ) -> Location | None:
        own: tuple[str | int, ...] = ("streams", stream)
        if kind == "consumer" and consumer is not None:
            own += ("consumers", consumer)
        paths: list[tuple[str | int, ...]] = []
        if env is not None:
            paths.append(("environments", env, *own, fld))
        paths.append((*own, fld))
        if env is not None:
            paths.append(("environments", env, "defaults", kind, fld))
        paths.append(("defaults", kind, fld))
        for path in paths:
            found = locs.find_key(path)
            if found is not None:
                return Location(file, found[0], found[1])
        return None

    return locate

"""The review's objects: one `ReviewChange` per change with its judgements, the whole
`Review` with the gate's verdict, and the server versions the judgements are for."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..jetstream import rules
from ..reconcile.plan import format_value, jsonable
from ..topology.model import (
    Consumer,
    Location,
    Stream,
    Topology,
)

FORMAT = "natstopo.diff/v1"
Kind = Literal["stream", "consumer", "topic", "service", "schema", "environment", "permission"]
Action = Literal["create", "update", "replace", "delete"]
Infra = Literal["safe", "replace", "destructive"]
Contract = Literal["compatible", "breaking"]
INFRA_RANK = {"safe": 0, "replace": 1, "destructive": 2}
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
        text = f"{self.field}: {shown(self.field, self.before)} -> {shown(self.field, self.after)}"
        if self.effect != "safe":
            text += f" ({self.effect}: {self.reason})" if self.reason else f" ({self.effect})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "before": jsonable(self.before),
            "after": jsonable(self.after),
            "before_text": shown(self.field, self.before),
            "after_text": shown(self.field, self.after),
            "effect": self.effect,
            "reason": self.reason,
        }


def shown(fld: str, value: Any) -> str:
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
            table = rules.STREAM_FEATURES if c is None else rules.CONSUMER_FEATURES
            for fld, (_feature, needs, default) in table.items():
                value = getattr(asset, fld)
                if value is not None and value != default and needs > version:
                    version = needs
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


def parent_location(topology: Topology, stream: str) -> Location | None:
    for s in topology.streams:
        if s.name == stream:
            return s.location
    return None

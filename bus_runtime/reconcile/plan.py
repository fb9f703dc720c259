"""The plan model: what plan found for each stream and consumer, in the topology's units."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..jetstream.rules import Effect
from ..topology.model import DURATION_FIELDS, SIZE_FIELDS
from ..topology.units import format_duration, format_size

Action = Literal["create", "update", "replace", "delete", "none", "unmanaged"]
_EFFECT_RANK: dict[str, int] = {"in_place": 0, "replace": 1, "destructive": 2}
_PENDING: frozenset[str] = frozenset({"create", "update", "replace", "delete"})
SAVED_PLAN_FORMAT = 1

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


def jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
        """`max_age: 7d -> 1d (destructive: deletes messages older than 1d)`; long subject
        lists as what goes and what comes (`subjects: -[a.x] +[a.y]`)."""
        text = f"{self.field}: {format_value(self.field, self.before)} -> {format_value(self.field, self.after)}"
        long_lists = (
            self.field in ("subjects", "filter_subjects")
            and isinstance(self.before, list)
            and isinstance(self.after, list)
            and len(set(self.before) | set(self.after)) > 4
        )
        if long_lists:
            gone = [x for x in self.before if x not in self.after]
            new = [x for x in self.after if x not in self.before]
            parts = ([f"-{format_value(self.field, gone)}"] if gone else []) + (
                [f"+{format_value(self.field, new)}"] if new else []
            )
            text = f"{self.field}: {' '.join(parts)}"
        if self.effect != "in_place":
            text += f" ({self.effect}: {self.reason})" if self.reason else f" ({self.effect})"
        elif self.reason:
            text += f" ({self.reason})"
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FieldChange:
        return cls(data["field"], data["before"], data["after"], data["effect"], data["reason"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "before": jsonable(self.before),
            "after": jsonable(self.after),
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

    def to_dict(self, *, config: bool = False) -> dict[str, Any]:
        """The change as JSON; with `config`, also the config apply sends (saved plans)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "stream": self.stream,
            "consumer": self.consumer,
            "action": self.action,
            "effect": self.effect,
            "note": self.note,
            "conflict": self.conflict,
            "fields": [f.to_dict() for f in self.fields],
        }
        if config:
            out["config"] = self.config
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        return cls(
            kind=data["kind"],
            stream=data["stream"],
            consumer=data["consumer"],
            action=data["action"],
            fields=[FieldChange.from_dict(f) for f in data["fields"]],
            note=data["note"],
            conflict=data["conflict"],
            config=data.get("config"),
        )


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
    errors: list[str] = field(default_factory=list)
    """Problems apply would run into (one line each, `FILE:LINE:COL: error: ...` when the
    topology is at fault): overlapping unmanaged streams, replicas above the cluster's
    size, features the server lacks, account limits. Apply refuses a plan with errors."""
    snapshot: dict[str, str] = field(default_factory=dict, repr=False)
    """What the plan read: a fingerprint of every stream's and consumer's config on the
    server (`STREAM`, `STREAM/CONSUMER`), so that a saved plan can tell the server changed."""

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.pending]

    @property
    def has_changes(self) -> bool:
        """Something to do, a declared asset owned by another topology (a conflict), or
        an error: the server does not match the topology."""
        return bool(self.errors) or any(c.pending or c.conflict for c in self.changes)

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
        lines += [e if ": error: " in e else f"error: {e}" for e in self.errors]
        if not self.has_changes:
            head = (
                f"In sync: the server (nats-server {self.server_version}) matches {target}."
                if drift
                else f"No changes: the server (nats-server {self.server_version}) matches {target}."
            )
            return "\n".join([*lines, head])
        head = "Drift" if drift else "Plan"
        summary = self.summary()
        if self.errors:
            summary += f"; {len(self.errors)} error(s): apply refuses until they are fixed"
        return "\n".join([*lines, f"{head} for {target}: {summary}."])

    def to_dict(self) -> dict[str, Any]:
        return {
            "topology": self.topology,
            "environment": self.environment,
            "server_version": self.server_version,
            "has_changes": self.has_changes,
            "refused_without_flag": self.refused_without_flag,
            "counts": self.counts(),
            "errors": list(self.errors),
            "changes": [c.to_dict() for c in self.changes if c.action != "none"],
        }

    # -- saved plans ---------------------------------------------------------------
    def to_saved(self) -> dict[str, Any]:
        """The plan as `natstopo plan -o` writes it: every change with the config apply
        sends, and the fingerprints of what the server held (`snapshot`)."""
        body = {
            "natstopo_plan": SAVED_PLAN_FORMAT,
            "topology": self.topology,
            "environment": self.environment,
            "server_version": self.server_version,
            "errors": list(self.errors),
            "snapshot": dict(sorted(self.snapshot.items())),
            "changes": [c.to_dict(config=True) for c in self.changes],
        }
        return {**body, "digest": _digest(body)}

    @classmethod
    def from_saved(cls, data: Any) -> Plan:
        """A plan read back from `to_saved`'s JSON.

        Raises:
            ValueError: Not a saved plan of this format.
        """
        if not isinstance(data, dict) or data.get("natstopo_plan") != SAVED_PLAN_FORMAT:
            raise ValueError(
                f"not a saved natstopo plan (format {SAVED_PLAN_FORMAT}); write one with "
                "`natstopo plan -o FILE`"
            )
        body = {k: v for k, v in data.items() if k != "digest"}
        if data.get("digest") != _digest(body):
            raise ValueError(
                "the saved plan was edited since `natstopo plan -o` wrote it (its digest does "
                "not match); plan again"
            )
        try:
            return cls(
                topology=data["topology"],
                environment=data["environment"],
                server_version=data["server_version"],
                changes=[Change.from_dict(c) for c in data["changes"]],
                errors=list(data["errors"]),
                snapshot=dict(data["snapshot"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a saved plan without its {exc} (edited by hand?)") from exc


def _digest(body: dict[str, Any]) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


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

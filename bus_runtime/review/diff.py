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
from collections.abc import Mapping, Sequence

from ..topology.model import (
    Location,
    Topology,
)
from ..topology.yaml_source import Locations
from .changes import (
    DEFAULT_FAIL_ON,
    FORMAT,
    INFRA_RANK,
    LEVELS,
    Action,
    Contract,
    FieldDelta,
    Infra,
    Kind,
    Locator,
    Review,
    ReviewChange,
    oldest_server_for,
    parse_version,
)
from .contract import contract_changes
from .infrastructure import consumer_changes, stream_changes

__all__ = [
    "DEFAULT_FAIL_ON",
    "FORMAT",
    "LEVELS",
    "Action",
    "Contract",
    "FieldDelta",
    "Infra",
    "Kind",
    "Locator",
    "Review",
    "ReviewChange",
    "oldest_server_for",
    "parse_version",
    "review",
    "settings_locator",
]

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
        server_version: The target server (default: the oldest BASE's and HEAD's features
            allow).
        fail_on: Gate levels (see `LEVELS`).
        locate: Finds the line that sets a field in HEAD (`settings_locator`), so that an
            annotation points at `max_bytes: 30GiB`, not at the stream's name.
        head_file: The name locations carry (HEAD's path from the repository's top), so
            that every location names the file a pull request changes.
    """
    declared = sorted({e for e in (*base, *head) if e is not None})
    if environments is None:
        environments = declared or [None]
    # BASE runs today, so the target has its features too
    version = server_version or oldest_server_for([*base.values(), *head.values()])
    per_env: list[tuple[str | None, list[ReviewChange]]] = []
    for env in environments:
        # An environment that one side does not declare has that side's base settings.
        b, h = base.get(env) or base[None], head.get(env) or head[None]
        found = stream_changes(b, h, env, version) + consumer_changes(b, h, env, version)
        found += [_with_env(c, env) for c in contract_changes(b, h)]
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
    worst = sorted(change.fields, key=lambda f: -INFRA_RANK[f.effect])
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

"""Infrastructure judgements: each environment's streams and consumers, BASE against HEAD,
by the server's rules for the target version (`bus_runtime.jetstream.rules`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from ..jetstream import rules
from ..topology.model import (
    CONSUMER_FIELD_TO_API,
    STREAM_FIELD_TO_API,
    Consumer,
    Stream,
    Topology,
)
from ..topology.subjects import subject_matches
from .changes import INFRA_RANK, FieldDelta, Infra, ReviewChange, parent_location

# --------------------------------------------------------------------------- infrastructure


def _effect(eff: str) -> Infra:
    return {"in_place": "safe", "replace": "replace", "destructive": "destructive"}[eff]  # type: ignore[return-value]


def _worst(effects: Iterable[Infra]) -> Infra:
    return max(effects, key=lambda e: INFRA_RANK[e], default="safe")


def _setting_deltas(
    kind: Literal["stream", "consumer"],
    old: Stream | Consumer,
    new: Stream | Consumer,
    version: tuple[int, int, int],
    retention: str | None = None,
) -> list[FieldDelta]:
    """The settings that differ once the server has stored them (writing out a default, or
    dropping it, is no change), each judged by the server's rules for `version`, with no
    stored state known (the worst case) but the asset's new config (a stream's `discard`
    decides whether a lowered limit deletes anything) and, for a consumer, its stream's
    retention."""
    if isinstance(old, Stream) and isinstance(new, Stream):
        table, old_cfg, new_cfg = (
            STREAM_FIELD_TO_API,
            old.to_stream_config(),
            new.to_stream_config(),
        )
    elif isinstance(old, Consumer) and isinstance(new, Consumer):
        table, old_cfg, new_cfg = (
            CONSUMER_FIELD_TO_API,
            old.to_consumer_config(),
            new.to_consumer_config(),
        )
    else:
        raise TypeError("compare a stream with a stream, a consumer with a consumer")
    out: list[FieldDelta] = []
    for fld, key in table.items():
        before, after = getattr(old, fld), getattr(new, fld)
        if _norm(before) == _norm(after):
            continue
        b, a = rules.effective(kind, key, old_cfg), rules.effective(kind, key, new_cfg)
        if b == a:
            continue
        eff, reason = rules.classify(kind, fld, b, a, version, config=new_cfg, retention=retention)
        out.append(FieldDelta(fld, _norm(before), _norm(after), _effect(eff), reason))
    return out


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def stream_changes(
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
        fields = _setting_deltas("stream", a, b, version)
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


def consumer_changes(
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
            for f in _setting_deltas("stream", old_streams[s.name], s, version)
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
                location=parent_location(head, c.stream),
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
        stream = next((s for s in head.streams if s.name == b.stream), None)
        retention = stream.retention if stream is not None else None
        fields = _setting_deltas("consumer", a, b, version, retention)
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

"""Contract judgements: topics, consumers, payload schemas and permissions, per reader and
writer, with the deploy order that keeps a schema change safe."""

from __future__ import annotations

from ..topology.model import (
    Consumer,
    Location,
    Topic,
    Topology,
)
from .changes import FieldDelta, ReviewChange, parent_location
from .schema_compat import SchemaDelta, compare_schemas, deploy_order

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


def contract_changes(base: Topology, head: Topology) -> list[ReviewChange]:
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
                location=parent_location(head, t.stream),
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
                location=parent_location(head, c.stream),
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

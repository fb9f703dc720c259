"""Mandatory policies: nothing that holds data is replaced or deleted unless the stack allows it.

An independent second opinion beside the program's own refusals, run by
`pulumi preview --policy-pack infra/policy`:
- `stream-data-loss`: each stream and consumer of the direct provisioner, planned against the
  live server by the reconciler (the asset's inputs carry its model): a replace, or an
  update that deletes stored messages, without `natstopo:allowDestructive`;
- `stream-delete`: streams and consumers of the stack's topology on the server that it no
  longer declares (the reconciler plans their deletion), without `natstopo:allowDestructive`;
- `statefulset-replace`: a change of a StatefulSet field that Kubernetes cannot change in
  place, compared with the object as last rendered (render mode; against a cluster the live
  object would be the witness, which this pack does not read yet), without
  `natstopo:allowReplace`;
- `nack-streams-keep-data`: NACK Stream resources without `preventDelete` (deleting the
  resource would delete the stream and its messages), without `natstopo:allowDestructive`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

PACK = "natstopo-data-safety"
DYNAMIC = "pulumi-python:dynamic:Resource"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
NACK_STREAM = "kubernetes:jetstream.nats.io/v1beta2:Stream"
DIRECT = "natstopo:direct_provisioner:DirectProvisioner"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
IMMUTABLE_FIELDS = (
    "serviceName",
    "podManagementPolicy",
    "selector",
    "volumeClaimTemplates",
    "revisionHistoryLimit",
)
Planner = Callable[[Mapping[str, Any]], Any]


def _known(value: Any) -> bool:
    value = _normal(value)
    if value == UNKNOWN:
        return False
    if isinstance(value, dict):
        return all(_known(v) for v in value.values())
    if isinstance(value, list):
        return all(_known(v) for v in value)
    return True


def _normal(value: Any) -> Any:
    """Plain data: the SDK hands props over as read-only proxies, numbers as floats."""
    if isinstance(value, str | bytes):
        return value
    if hasattr(value, "items"):
        return {k: _normal(v) for k, v in value.items()}
    if hasattr(value, "__iter__"):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _plan_with_reconciler(props: Mapping[str, Any]) -> Any:
    from jetstream_assets import plan_asset

    change, _plan = asyncio.run(plan_asset(props))
    return change


# --------------------------------------------------------------------------- streams


def check_stream_change(
    props: Mapping[str, Any], report: ReportViolation, plan: Planner = _plan_with_reconciler
) -> None:
    """A direct-provisioner asset whose reconciler plan replaces it or deletes messages."""
    props = _normal(props)
    if props.get("kind") not in ("stream", "consumer") or "model" not in props:
        return
    if not _known(props.get("model")) or not _known(props.get("servers")):
        return  # not decided yet in this preview (an input depends on another resource)
    if props.get("allow_destructive"):
        return
    name = props["stream"] + (f"/{props['consumer']}" if props.get("consumer") else "")
    try:
        change = plan(props)
    except Exception as exc:  # fail closed: what cannot be checked is not let through
        report(f"{props['kind']} {name}: cannot plan it against the server: {exc}", None)
        return
    if change.needs_flag:
        report(
            f"{change.describe()}: stored messages or the consumer's position would be lost; "
            "set natstopo:allowDestructive to let it happen",
            None,
        )


def _plan_stack_assets(assets: list[Mapping[str, Any]]) -> list[Any]:
    """The reconciler's whole plan for the topology these assets declare, on their server."""
    import dataclasses

    from bus_runtime import plan_changes
    from jetstream_assets import connect_options, model_from_json, open_connection

    streams: dict[str, Any] = {}
    consumers: dict[str, list[Any]] = {}
    topology = None
    for props in assets:
        topology, stream, consumer = model_from_json(props["model"])
        if consumer is None:
            streams[stream.name] = stream
        else:
            consumers.setdefault(stream.name, []).append(consumer)
    assert topology is not None
    declared = dataclasses.replace(
        topology,
        streams=tuple(
            dataclasses.replace(s, consumers=tuple(consumers.get(name, ())))
            for name, s in streams.items()
        ),
    )

    async def plan() -> list[Any]:
        with connect_options(assets[0]) as options:
            nc = await open_connection(options)
        try:
            return list((await plan_changes(nc, declared)).changes)
        finally:
            await nc.close()

    return asyncio.run(plan())


def check_stream_deletes(
    resources: list[Any],
    report: ReportViolation,
    plan: Callable[[list[Mapping[str, Any]]], list[Any]] = _plan_stack_assets,
) -> None:
    """Streams and consumers of the stack's topology, on its server, that it no longer declares:
    the reconciler plans their deletion (and `pulumi up` deletes those the stack created)."""
    for component in resources:
        if component.resource_type != DIRECT:
            continue
        assets = [
            _normal(r.props)
            for r in resources
            if r.resource_type == DYNAMIC and r.parent is not None and r.parent.urn == component.urn
        ]
        if any(a.get("allow_destructive") for a in assets):
            continue
        if not assets or not all(
            _known(a.get("model")) and _known(a.get("servers")) for a in assets
        ):
            continue
        try:
            changes = plan(assets)
        except Exception as exc:  # fail closed
            report(f"cannot plan the topology against its server: {exc}", component.urn)
            continue
        for change in changes:
            if change.action == "delete" and change.needs_flag:
                report(
                    f"{change.describe()}: no longer declared, and `pulumi up` deletes what this "
                    "stack created (messages or the consumer's position are lost); set "
                    "natstopo:allowDestructive to let it happen",
                    component.urn,
                )


# --------------------------------------------------------------------------- the StatefulSet


def _immutable(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _normal(spec.get(k)) for k in IMMUTABLE_FIELDS}


def _rendered_statefulset(render_dir: str, meta: Mapping[str, Any]) -> dict[str, Any] | None:
    ns = meta.get("namespace") or "default"
    path = Path(render_dir) / "1-manifest" / f"apps_v1-statefulset-{ns}-{meta.get('name')}.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def check_statefulset_replace(resources: list[Any], report: ReportViolation) -> None:
    """A StatefulSet whose immutable fields differ from the last run's."""
    for res in resources:
        if res.resource_type != STATEFULSET or not _known(res.props.get("spec")):
            continue
        meta = res.props.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        if annotations.get("natstopo.io/allow-replace") == "true":
            continue
        now = _immutable(res.props.get("spec") or {})
        before: list[tuple[str, dict[str, Any]]] = []
        provider = res.provider
        render_dir = provider.props.get("renderYamlToDirectory") if provider is not None else None
        if render_dir:
            rendered = _rendered_statefulset(render_dir, meta)
            if rendered is not None:
                before.append(
                    (f"the rendered {render_dir}", _immutable(rendered.get("spec") or {}))
                )
        for source, old in before:
            changed = [k for k in IMMUTABLE_FIELDS if old.get(k) is not None and old[k] != now[k]]
            if changed:
                report(
                    f"StatefulSet {meta.get('name')}: {', '.join(changed)} differ from {source}; "
                    "Kubernetes cannot change them in place, so the StatefulSet would be deleted "
                    "and created again; set natstopo:allowReplace to let it happen",
                    res.urn,
                )
                break


def check_nack_streams(resources: list[Any], report: ReportViolation) -> None:
    """NACK streams that would take their messages with them when their resource goes."""
    for res in resources:
        if res.resource_type != NACK_STREAM:
            continue
        annotations = (res.props.get("metadata") or {}).get("annotations") or {}
        if annotations.get("natstopo.io/allow-destructive") == "true":
            continue
        spec = res.props.get("spec") or {}
        if spec.get("preventDelete") is not True:
            report(
                f"NACK Stream {spec.get('name')}: preventDelete is not set, so deleting the "
                "resource deletes the stream and its messages",
                res.urn,
            )


# --------------------------------------------------------------------------- the pack


def _stream_change(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == DYNAMIC:
        check_stream_change(args.props, report)


def _stack(check: Callable[[list[Any], ReportViolation], None]) -> Callable[..., None]:
    def run(args: StackValidationArgs, report: ReportViolation) -> None:
        check(list(args.resources), report)

    return run


def policy_pack() -> PolicyPack:
    """Build (and serve: the SDK starts the gRPC server) the pack."""
    mandatory = EnforcementLevel.MANDATORY
    return PolicyPack(
        name=PACK,
        enforcement_level=mandatory,
        policies=[
            ResourceValidationPolicy(
                name="stream-data-loss",
                description="No stream or consumer is replaced, nor are stored messages deleted, "
                "unless natstopo:allowDestructive",
                validate=_stream_change,
            ),
            StackValidationPolicy(
                name="stream-delete",
                description="No stream or consumer the stack created is deleted unless "
                "natstopo:allowDestructive",
                validate=_stack(check_stream_deletes),
            ),
            StackValidationPolicy(
                name="statefulset-replace",
                description="The NATS StatefulSet (and its volumes) is never replaced unless "
                "natstopo:allowReplace",
                validate=_stack(check_statefulset_replace),
            ),
            StackValidationPolicy(
                name="nack-streams-keep-data",
                description="NACK streams keep their messages when their resource is deleted",
                validate=_stack(check_nack_streams),
            ),
        ],
    )

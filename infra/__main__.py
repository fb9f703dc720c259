"""The natstopo Pulumi program: one stack per topology environment (stack name = environment).

Reads the stack's config, loads and checks the topology, refuses what the cluster cannot
hold or what only a replace could change, then wires the components: the NATS cluster,
the topology's ConfigMap for application pods, and the streams and consumers (through the
reconciler, `direct`, or as NACK resources, `nack`). See docs/infra.md.
"""

from __future__ import annotations

from typing import Any

import pulumi

from stack_program import build

SKIP_AWAIT = "pulumi.com/skipAwait"


def _skip_await_everywhere(
    args: pulumi.ResourceTransformArgs,
) -> pulumi.ResourceTransformResult | None:
    """`natstopo:kubernetes.skipAwait`: no Kubernetes object of the stack is awaited.

    The StatefulSet carries the annotation already; a Service would still wait for endpoints
    and a Namespace for its deletion, which never come on a cluster that runs no pods.
    """
    if not args.custom or not args.type_.startswith("kubernetes:"):
        return None
    metadata = args.props.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return None  # an Output: left alone
    meta: dict[str, Any] = dict(metadata or {})
    annotations = meta.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        return None
    meta["annotations"] = {**(annotations or {}), SKIP_AWAIT: "true"}
    return pulumi.ResourceTransformResult(props={**args.props, "metadata": meta}, opts=args.opts)


_kube = pulumi.Config("natstopo").get_object("kubernetes") or {}
if isinstance(_kube, dict) and str(_kube.get("skipAwait", "")).lower() == "true":
    pulumi.runtime.register_resource_transform(_skip_await_everywhere)

build(pulumi.get_stack(), pulumi.get_project())

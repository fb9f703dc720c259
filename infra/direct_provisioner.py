"""`DirectProvisioner`: the topology's streams and consumers, kept on a server by the reconciler.

One `JetStreamAsset` per stream and per consumer (consumers wait for their stream). Before
any of them is registered, `preflight_plan` asks the reconciler for the whole plan against
the server:
- a delete of an asset this stack created (it is no longer declared) stops the program, in
  `preview` and in `up`: no provider sees a delete before it happens;
- a replace or a destructive update stops `up` before anything is applied; in `preview`
  each asset's own diff refuses it (and the policy pack reports it), so that the preview
  shows every refused asset with its verdict.
Unless the stack allows it (`natstopo:allowDestructive`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict, TypeVar

import pulumi

from bus_runtime import ConnectOptions, Plan, Topology
from jetstream_assets import JetStreamAsset, asset_inputs

TYPE = "natstopo:direct_provisioner:DirectProvisioner"
T = TypeVar("T")


def resource_name(stream: str, consumer: str | None = None) -> str:
    return stream if consumer is None else f"{stream}.{consumer}"


def plan_problems(
    plan: Plan,
    managed: Iterable[str],
    *,
    allow_destructive: bool,
    changes_too: bool = True,
) -> list[str]:
    """What in the reconciler's plan the stack must refuse.

    Args:
        plan: The reconciler's plan of the whole topology against the server.
        managed: Names (`STREAM`, `STREAM/consumer`) of the assets this stack created before;
            those it no longer declares are deleted by `pulumi up`. Other assets the plan would
            delete were made outside this stack, and `pulumi up` leaves them alone.
        allow_destructive: The stack lets replace and destructive steps through.
        changes_too: Report replace and destructive steps of declared assets, not only deletes.
    """
    known = set(managed)
    problems = [
        f"{c.describe()}: the server's asset belongs to another topology" for c in plan.conflicts
    ]
    if allow_destructive:
        return problems
    for change in plan.changes:
        if not change.needs_flag:
            continue
        if change.action == "delete":
            if change.name in known:
                problems.append(change.describe())
        elif changes_too:
            problems.append(change.describe())
    return problems


def preflight_plan(
    options: ConnectOptions,
    topology: Topology,
    managed: Iterable[str],
    *,
    allow_destructive: bool,
    changes_too: bool = True,
) -> tuple[Plan, list[str]]:
    """The reconciler's plan of the whole topology, and the steps the stack refuses.

    Raises:
        BusError: The server cannot be reached, or refused a request.
    """
    # `bus_runtime.reconcile` (the blocking call) is shadowed by the subpackage of the same
    # name once that is imported; reconcile_async is the same call and has no such twin.
    from bus_runtime import reconcile_async

    result = _blocking(lambda: reconcile_async(options, topology, apply=False))
    return result.plan, plan_problems(
        result.plan, managed, allow_destructive=allow_destructive, changes_too=changes_too
    )


def _blocking(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from synchronous code, inside a running event loop or not
    (the Pulumi program runs inside one): a thread gets a loop of its own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


class DirectProvisionerArgs(TypedDict):
    """Arguments of `DirectProvisioner`."""

    topology: Topology
    """The topology whose streams and consumers are kept on the server."""
    servers: list[str]
    """Server URLs the provider connects to."""
    credentials: pulumi.Input[dict[str, str]] | None
    """Secret: `{user, password}`, `{token}`, `{creds}` (file content) or `{nkeySeed}`."""
    allow_destructive: bool
    """Let replace, destructive and delete steps happen (stored messages are lost)."""
    depends_on: list[pulumi.Resource]
    """Resources the assets wait for (the cluster, when the stack also creates it)."""


class DirectProvisioner(pulumi.ComponentResource):
    """A `JetStreamAsset` for every declared stream and consumer.

    Outputs:
        streams: Names of the streams.
        consumers: `STREAM/consumer` names.
    """

    streams: pulumi.Output[list[str]]
    consumers: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: DirectProvisionerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        # No props: a component's props are compared as they are, so a flag of one run
        # (allowDestructive) would show as a change in the next. The assets carry it.
        super().__init__(TYPE, name, None, opts)
        topology = args["topology"]
        for stream in topology.streams:
            created = JetStreamAsset(
                resource_name(stream.name),
                asset_inputs(
                    topology,
                    stream,
                    None,
                    args["servers"],
                    args["credentials"],
                    args["allow_destructive"],
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=args["depends_on"]),
            )
            for consumer in stream.consumers:
                inputs: dict[str, Any] = asset_inputs(
                    topology,
                    stream,
                    consumer,
                    args["servers"],
                    args["credentials"],
                    args["allow_destructive"],
                )
                # Unknown while its stream is created or replaced: the consumer then follows.
                inputs["stream_ready"] = created.id
                JetStreamAsset(
                    resource_name(stream.name, consumer.name),
                    inputs,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[created]),
                )
        self.streams = pulumi.Output.from_input([s.name for s in topology.streams])
        self.consumers = pulumi.Output.from_input(
            [f"{c.stream}/{c.name}" for c in topology.consumers]
        )
        self.register_outputs({"streams": self.streams, "consumers": self.consumers})

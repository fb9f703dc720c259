"""The direct provisioner's dynamic provider: one Pulumi resource per stream and per consumer.

Every decision is the reconciler's: `diff` plans the one asset against the live server
(`plan_changes` scoped to it) and reports its verdict as it is (in place -> update,
replace -> replace, missing on the server -> update that recreates it, in sync -> no
change); `create` and `update` apply that asset's plan with `apply_plan`; `delete` removes
the asset only when its metadata marks it as this topology's.

The engine pickles the provider (dill) into each resource and runs its methods in another
process whose working folder is the program's (infra/), so this module is importable there
by name; the methods import what they need from bus_runtime and nats-py (installed) and
keep no state between calls. A resource's inputs carry its asset as JSON (`model`), so the
provider rebuilds the model without the topology file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from bus_runtime import ConnectOptions, Consumer, Stream, Topology

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's placeholder for unknown inputs
CONNECT_TIMEOUT = 5.0
# Inputs whose change is a change of how the provider reaches the server, not of the asset.
CONNECTION_INPUTS = ("servers", "credentials")


class ProvisionerError(Exception):
    """The reconciler's plan for an asset cannot be carried out as the stack is configured."""


# --------------------------------------------------------------------------- the model as JSON


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _fields(obj: Any, skip: tuple[str, ...]) -> dict[str, Any]:
    return {
        f.name: _plain(getattr(obj, f.name))
        for f in dataclasses.fields(obj)
        if f.name not in skip and f.compare
    }


def asset_model(topology: Topology, stream: Stream, consumer: Consumer | None) -> str:
    """The asset as JSON: the stream's settings (without topics), and the one consumer."""
    data: dict[str, Any] = {
        "topology": topology.name,
        "environment": topology.environment,
        "stream": _fields(stream, ("topics", "consumers")),
        "consumer": None if consumer is None else _fields(consumer, ()),
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _restore(cls: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        ann = str(f.type)
        if value is not None and ann.startswith("tuple[tuple["):
            value = tuple(tuple(p) for p in value)
        elif value is not None and ann.startswith("tuple["):
            value = tuple(value)
        out[f.name] = value
    return out


def model_from_json(text: str) -> tuple[Topology, Stream, Consumer | None]:
    """The topology holding just this asset (what a scoped plan needs), its stream and consumer."""
    data = json.loads(text)
    consumer = (
        None if data["consumer"] is None else Consumer(**_restore(Consumer, data["consumer"]))
    )
    stream = Stream(
        **_restore(Stream, data["stream"]), consumers=() if consumer is None else (consumer,)
    )
    topology = Topology(
        name=data["topology"],
        environment=data["environment"],
        services=(),
        streams=(stream,),
    )
    return topology, stream, consumer


# --------------------------------------------------------------------------- connecting


@contextmanager
def connect_options(props: Mapping[str, Any]) -> Iterator[ConnectOptions]:
    """ConnectOptions from a resource's `servers` and `credentials` (user/password, token, or
    the content of a creds file or nkey seed, written to a 0600 file for the call; and the
    identity's `inboxPrefix`)."""
    creds = props.get("credentials") or {}
    files: list[str] = []
    try:

        def secret_file(content: str) -> str:
            fd, path = tempfile.mkstemp(prefix="natstopo-", suffix=".creds")
            with os.fdopen(fd, "w") as out:
                out.write(content)
            files.append(path)
            return path

        yield ConnectOptions(
            servers=tuple(props["servers"]),
            user=creds.get("user"),
            password=creds.get("password"),
            token=creds.get("token"),
            creds=secret_file(creds["creds"]) if creds.get("creds") else None,
            nkey_seed=secret_file(creds["nkeySeed"]) if creds.get("nkeySeed") else None,
            # The admin identity may subscribe to its own inbox only (`_INBOX.admin.>`).
            inbox_prefix=creds.get("inboxPrefix") or None,
            connect_timeout=CONNECT_TIMEOUT,
            name="natstopo-pulumi",
        )
    finally:
        for path in files:
            os.unlink(path)


async def open_connection(options: ConnectOptions) -> Any:
    """A NATS connection that fails at once with a one-line reason (no reconnect loop)."""
    import nats

    problem = options.file_problem()
    if problem:
        raise ProvisionerError(f"cannot connect to {', '.join(options.servers)}: {problem}")
    kwargs: dict[str, Any] = {
        "servers": list(options.servers),
        "name": options.name,
        "connect_timeout": options.connect_timeout,
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
    }

    async def quiet(_exc: Exception) -> None:
        return None  # reported once, below

    kwargs["error_cb"] = quiet
    if options.user is not None:
        kwargs.update(user=options.user, password=options.password or "")
    if options.token is not None:
        kwargs["token"] = options.token
    if options.creds is not None:
        kwargs["user_credentials"] = options.creds
    if options.nkey_seed is not None:
        kwargs["nkeys_seed"] = options.nkey_seed
    tls = options.tls_context()
    if tls is not None:
        kwargs["tls"] = tls
    if options.inbox_prefix is not None:
        kwargs["inbox_prefix"] = options.inbox_prefix
    try:
        return await nats.connect(**kwargs)
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise ProvisionerError(f"cannot connect to {', '.join(options.servers)}: {reason}") from exc


# --------------------------------------------------------------------------- planning one asset


def _asset_change(plan: Any, stream: str, consumer: str | None) -> Any:
    for change in plan.changes:
        if change.stream == stream and change.consumer == consumer:
            return change
    raise ProvisionerError(f"the reconciler's plan has no step for {stream}/{consumer}")


async def plan_asset(props: Mapping[str, Any]) -> tuple[Any, Any]:
    """(change, plan) for the asset of `props`: the reconciler's verdict against the server."""
    from bus_runtime import plan_changes

    topology, stream, consumer = model_from_json(props["model"])
    with connect_options(props) as options:
        nc = await open_connection(options)
    try:
        if consumer is None:
            plan = await plan_changes(nc, topology, only_streams=[stream.name])
        else:
            plan = await plan_changes(nc, topology, only_consumers=[(stream.name, consumer.name)])
    finally:
        await nc.close()
    return _asset_change(plan, stream.name, None if consumer is None else consumer.name), plan


async def _apply_one(props: Mapping[str, Any]) -> dict[str, Any]:
    """Plan the asset and apply that one step; returns what the outputs record."""
    from bus_runtime import Plan, apply_plan, plan_changes

    topology, stream, consumer = model_from_json(props["model"])
    cname = None if consumer is None else consumer.name
    with connect_options(props) as options:
        nc = await open_connection(options)
    try:
        if consumer is None:
            plan = await plan_changes(nc, topology, only_streams=[stream.name])
        else:
            plan = await plan_changes(nc, topology, only_consumers=[(stream.name, consumer.name)])
        change = _asset_change(plan, stream.name, cname)
        _refuse(change, bool(props.get("allow_destructive")))
        one = Plan(plan.topology, plan.environment, plan.server_version, changes=[change])
        await apply_plan(nc, one, allow_destructive=bool(props.get("allow_destructive")))
        return {"server_version": plan.server_version, "last_action": change.action}
    finally:
        await nc.close()


def _refuse(change: Any, allow_destructive: bool) -> None:
    if change.conflict:
        raise ProvisionerError(
            f"{change.describe()}: the server's asset belongs to another topology"
        )
    if change.needs_flag and not allow_destructive:
        raise ProvisionerError(
            f"{change.describe()}; refused: set `pulumi config set natstopo:allowDestructive true` "
            "to let it happen (stored messages or a consumer's position are lost)"
        )


async def _delete_one(props: Mapping[str, Any]) -> None:
    from bus_runtime import Plan, apply_plan, plan_changes

    topology, stream, consumer = model_from_json(props["model"])
    with connect_options(props) as options:
        nc = await open_connection(options)
    try:
        # A scoped plan of an empty topology of the same name: it reads the asset and its marks.
        empty = dataclasses.replace(topology, streams=())
        plan = await plan_changes(nc, empty)
        wanted = [
            c
            for c in plan.changes
            if c.action == "delete"
            and c.stream == stream.name
            and c.consumer == (None if consumer is None else consumer.name)
        ]
        if consumer is not None and not wanted:
            # Consumers of undeclared streams are deleted with them; a declared stream's
            # extra consumer is planned through its stream.
            kept = dataclasses.replace(stream, consumers=())
            plan = await plan_changes(nc, dataclasses.replace(topology, streams=(kept,)))
            wanted = [
                c
                for c in plan.changes
                if c.action == "delete" and c.stream == stream.name and c.consumer == consumer.name
            ]
        if wanted:
            one = Plan(plan.topology, plan.environment, plan.server_version, changes=wanted)
            await apply_plan(nc, one, allow_destructive=True)
    finally:
        await nc.close()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# --------------------------------------------------------------------------- the provider


def _unknown(value: Any) -> bool:
    if value == UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_unknown(v) for v in value)
    return False


class JetStreamAssetProvider(ResourceProvider):
    """create/diff/update/delete of one stream or consumer through the reconciler."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if _unknown(news.get("model")) or _unknown(news.get("servers")):
            return DiffResult(changes=True)
        identity = [k for k in ("kind", "stream", "consumer") if olds.get(k) != news.get(k)]
        if identity:
            return DiffResult(changes=True, replaces=identity, delete_before_replace=True)
        if _unknown(news.get("stream_ready")):
            # Its stream is being created or replaced in this run: the consumer is recreated.
            return DiffResult(changes=True)
        moved = [k for k in CONNECTION_INPUTS if olds.get(k) != news.get(k)]
        change, _plan = _run(plan_asset(news))
        if change.action == "none":
            return DiffResult(changes=bool(moved))
        _refuse(change, bool(news.get("allow_destructive")))
        if change.action == "replace":
            fields = [f.field for f in change.fields if f.effect == "replace"] or ["model"]
            return DiffResult(changes=True, replaces=fields, delete_before_replace=True)
        # update in place, or create: the asset is missing on the server and update recreates it
        return DiffResult(changes=True)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = _run(_apply_one(props))
        name = (
            props["stream"]
            if props["kind"] == "stream"
            else f"{props['stream']}/{props['consumer']}"
        )
        return CreateResult(id_=name, outs={**props, **outs})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        outs = _run(_apply_one(news))
        return UpdateResult(outs={**news, **outs})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _run(_delete_one(props))


def asset_inputs(
    topology: Topology,
    stream: Stream,
    consumer: Consumer | None,
    servers: pulumi.Input[list[str]],
    credentials: pulumi.Input[dict[str, str]] | None,
    allow_destructive: bool,
) -> dict[str, Any]:
    """The inputs of one asset's resource (`config` is for people reading the preview)."""
    config = stream.to_stream_config() if consumer is None else consumer.to_consumer_config()
    inputs: dict[str, Any] = {
        "kind": "stream" if consumer is None else "consumer",
        "topology": topology.name,
        "stream": stream.name,
        "servers": servers,
        "credentials": credentials,
        "allow_destructive": allow_destructive,
        "config": config,
        "model": asset_model(topology, stream, consumer),
        "server_version": None,
        "last_action": None,
    }
    if consumer is not None:
        inputs["consumer"] = consumer.name
    return inputs


class JetStreamAsset(pulumi.dynamic.Resource):
    """One stream or consumer on the server, kept as the reconciler plans it.

    Outputs:
        server_version: The server's version at the last create or update.
        last_action: What the last create or update did (`create`, `update`, `none`, ...).
    """

    stream: pulumi.Output[str]
    server_version: pulumi.Output[str]
    last_action: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        inputs: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["credentials"])
        )
        super().__init__(JetStreamAssetProvider(), resource_name, inputs, opts)

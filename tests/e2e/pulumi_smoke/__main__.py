"""Smoke program: a Kubernetes Namespace and ConfigMap rendered to files, and a JetStream
stream created on a real nats-server by a dynamic resource.

Config, each part optional: `renderDir` (the Kubernetes part), `natsUrl` and `maxAge` in
seconds (the stream), secret `apiToken` (exported as a secret output).
The provider class lives in this file on purpose: dill pickles classes of `__main__` by value,
so the dynamic-provider process needs nothing of this folder on its import path.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

_INPUTS = ("server", "name", "subjects", "max_age")


class JetStreamStreamProvider(ResourceProvider):
    """Creates, updates and deletes one JetStream stream through nats-py.

    Methods run synchronously in the dynamic-provider process, so each opens its own
    connection inside asyncio.run.
    """

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in _INPUTS if olds.get(k) != news.get(k)]
        replaces = [k for k in ("server", "name") if k in changed]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> CreateResult:
        asyncio.run(_put_stream(props, create=True))
        return CreateResult(id_=props["name"], outs=_outs(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        asyncio.run(_put_stream(news, create=False))
        return UpdateResult(outs=_outs(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        asyncio.run(_delete_stream(props))


def _outs(props: dict[str, Any]) -> dict[str, Any]:
    return {k: props[k] for k in _INPUTS}


async def _put_stream(props: dict[str, Any], *, create: bool) -> None:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(props["server"], connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()
        config = StreamConfig(
            name=props["name"], subjects=list(props["subjects"]), max_age=float(props["max_age"])
        )
        if create:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
    finally:
        await nc.close()


async def _delete_stream(props: dict[str, Any]) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(props["server"], connect_timeout=5, allow_reconnect=False)
    try:
        with contextlib.suppress(NotFoundError):  # already gone: deleting is idempotent
            await nc.jetstream().delete_stream(props["name"])
    finally:
        await nc.close()


class JetStreamStream(pulumi.dynamic.Resource):
    """A JetStream stream; `max_age` in seconds."""

    name: pulumi.Output[str]
    max_age: pulumi.Output[int]

    def __init__(
        self,
        resource_name: str,
        *,
        server: pulumi.Input[str],
        name: str,
        subjects: list[str],
        max_age: pulumi.Input[int],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            JetStreamStreamProvider(),
            resource_name,
            {"server": server, "name": name, "subjects": subjects, "max_age": max_age},
            opts,
        )


config = pulumi.Config()
exports: dict[str, Any] = {}

render_dir = config.get("renderDir")
if render_dir:  # imported only here: the stream part runs without the Kubernetes provider
    import pulumi_kubernetes as k8s

    render = k8s.Provider("render", render_yaml_to_directory=render_dir)
    in_render = pulumi.ResourceOptions(provider=render)
    namespace = k8s.core.v1.Namespace("smoke", metadata={"name": "natstopo-smoke"}, opts=in_render)
    k8s.core.v1.ConfigMap(
        "smoke",
        metadata={"name": "natstopo-smoke", "namespace": namespace.metadata["name"]},
        data={"stream": "SMOKE"},
        opts=in_render,
    )
    exports["namespace"] = namespace.metadata["name"]

nats_url = config.get("natsUrl")
if nats_url:
    stream = JetStreamStream(
        "smoke",
        server=nats_url,
        name="SMOKE",
        subjects=["smoke.>"],
        max_age=config.require_int("maxAge"),
    )
    exports["stream"] = stream.name
    exports["maxAge"] = stream.max_age

token = config.get_secret("apiToken")
if token is not None:
    exports["token"] = token

for key, value in exports.items():
    pulumi.export(key, value)

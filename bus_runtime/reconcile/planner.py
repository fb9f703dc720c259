"""`plan_changes`: read the server and decide, per declared or marked asset, what apply would do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Literal

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from ..jetstream.api import JetStreamApi
from ..jetstream.rules import check_features, stream_value, version_text
from ..topology.model import Consumer, Stream, Topology
from ..topology.units import format_size
from .diff import consumer_create_config, diff_consumer, diff_stream, stream_create_config
from .marks import owner as owner_of
from .plan import Change, Plan


async def plan_changes(
    js_or_nc: Client | JetStreamContext | JetStreamApi,
    topology: Topology,
    only_streams: Iterable[str] | None = None,
    only_consumers: Iterable[tuple[str, str]] | None = None,
) -> Plan:
    """Compare `topology` with the live server and plan what apply would do.

    Without scope every stream on the server is read: declared ones are compared, marked
    undeclared ones are planned for deletion, others reported as unmanaged. With
    `only_streams` (every declared consumer of those streams) and/or `only_consumers`
    ((stream, consumer) pairs) only those assets are read, and nothing is deleted.

    Raises:
        UnsupportedFeatureError: The topology needs a newer server.
        ReconcileError: The server refused a request or did not answer.
        KeyError: A scoped stream or consumer is not declared in the topology.
    """
    started = time.perf_counter()
    api = JetStreamApi.of(js_or_nc)
    server = api.server_version
    check_features(topology, server)
    planner = _Planner(
        topology,
        server,
        set(only_streams) if only_streams is not None else None,
        set(only_consumers) if only_consumers is not None else None,
    )
    plan = Plan(topology.name, topology.environment, version_text(server))
    await planner.read(api)
    plan.changes = planner.changes()
    plan.seconds = time.perf_counter() - started
    return plan


class _Planner:
    """One plan's reading of the server and its decisions, stream by stream."""

    def __init__(
        self,
        topology: Topology,
        server: tuple[int, int, int],
        stream_scope: set[str] | None,
        consumer_scope: set[tuple[str, str]] | None,
    ) -> None:
        self.topology = topology
        self.server = server
        self.stream_scope = stream_scope
        self.consumer_scope = consumer_scope
        self.scoped = stream_scope is not None or consumer_scope is not None
        if self.scoped:
            names = set(stream_scope or ()) | {s for s, _ in consumer_scope or ()}
            self.declared = [s for s in topology.streams if s.name in names]
            missing = names - {s.name for s in self.declared}
            if missing:
                raise KeyError(sorted(missing)[0])
            for sname, cname in consumer_scope or ():
                topology.stream(sname).consumer(cname)  # KeyError when not declared
        else:
            self.declared = list(topology.streams)
        self.declared_names = {s.name for s in self.declared}
        self.live_streams: dict[str, dict[str, Any]] = {}
        self.live_consumers: dict[str, list[dict[str, Any]]] = {}

    async def read(self, api: JetStreamApi) -> None:
        if self.scoped:
            infos = await asyncio.gather(*(api.stream_info(s.name) for s in self.declared))
            self.live_streams = {i["config"]["name"]: i for i in infos if i is not None}
        else:
            self.live_streams = {i["config"]["name"]: i for i in await api.list_streams()}
        # Consumers of every declared stream that exists, and of every marked one.
        to_read = [
            n
            for n, info in self.live_streams.items()
            if n in self.declared_names or owner_of(info["config"]) == self.topology.name
        ]
        if self.consumer_scope is not None and self.stream_scope is None:
            pairs = [p for p in sorted(self.consumer_scope) if p[0] in self.live_streams]
            cinfos = await asyncio.gather(*(api.consumer_info(s, c) for s, c in pairs))
            self.live_consumers = {n: [] for n in to_read}
            for (sname, _), cinfo in zip(pairs, cinfos, strict=True):
                if cinfo is not None:
                    self.live_consumers[sname].append(cinfo)
        else:
            self.live_consumers = await api.consumers_of(to_read)

    def changes(self) -> list[Change]:
        out: list[Change] = []
        name = self.topology.name
        # 1. Managed streams the topology no longer declares: deleted first, so that
        #    their subjects are free for the streams that take them over.
        if not self.scoped:
            for sname, info in sorted(self.live_streams.items()):
                if sname not in self.declared_names and owner_of(info["config"]) == name:
                    out.append(Change("stream", sname, None, "delete", note=_state_note(info)))
        # 2. Declared streams, each followed by its consumers.
        for stream in self.declared:
            out += self._stream(stream)
        # 3. Streams that belong to nobody here: reported, never touched.
        if not self.scoped:
            for sname, info in sorted(self.live_streams.items()):
                owner = owner_of(info["config"])
                if sname in self.declared_names or owner == name:
                    continue
                note = f"managed by topology `{owner}`" if owner else "not created by natstopo"
                out.append(Change("stream", sname, None, "unmanaged", note=note))
        return out

    def _wanted(self, stream: Stream) -> list[Consumer]:
        if self.consumer_scope is None or (
            self.stream_scope is not None and stream.name in self.stream_scope
        ):
            return list(stream.consumers)
        return [c for c in stream.consumers if (stream.name, c.name) in self.consumer_scope]

    def _conflict(
        self, kind: Literal["stream", "consumer"], stream: str, consumer: str | None, owner: str
    ) -> Change:
        note = f"declared here but managed by topology `{owner}`; apply refuses"
        return Change(kind, stream, consumer, "unmanaged", note=note, conflict=True)

    def _stream(self, stream: Stream) -> list[Change]:
        topology, server = self.topology, self.server
        wanted = self._wanted(stream)
        info = self.live_streams.get(stream.name)
        if info is None:
            create = stream_create_config(stream, topology, server)
            return [Change("stream", stream.name, None, "create", config=create)] + [
                Change(
                    "consumer",
                    stream.name,
                    c.name,
                    "create",
                    config=consumer_create_config(c, topology, server),
                )
                for c in wanted
            ]
        live = info["config"]
        owner = owner_of(live)
        if owner not in (None, topology.name):
            return [self._conflict("stream", stream.name, None, str(owner))]
        fields, update = diff_stream(stream, live, topology, server)
        replaced = any(f.effect == "replace" for f in fields)
        live_cons = {ci["name"]: ci for ci in self.live_consumers.get(stream.name, [])}
        deletes, unmanaged = self._undeclared_consumers(stream, live_cons, replaced)
        out = deletes
        if replaced:
            create = stream_create_config(stream, topology, server)
            note = _state_note(info)
            out.append(Change("stream", stream.name, None, "replace", fields, note, config=create))
        elif fields:
            note = "adopted: not yet marked as managed" if owner is None else ""
            out.append(Change("stream", stream.name, None, "update", fields, note, config=update))
        else:
            out.append(Change("stream", stream.name, None, "none"))
        replicas = int(stream_value(live, "num_replicas"))
        for c in wanted:
            out.append(self._consumer(stream, c, live_cons.get(c.name), replaced, replicas))
        return out + unmanaged

    def _undeclared_consumers(
        self, stream: Stream, live_cons: dict[str, dict[str, Any]], replaced: bool
    ) -> tuple[list[Change], list[Change]]:
        """Marked consumers the stream no longer declares (deletes), and unmarked ones."""
        deletes: list[Change] = []
        unmanaged: list[Change] = []
        if self.scoped:
            return deletes, unmanaged  # a scoped plan looks only at what it was asked about
        declared = {c.name for c in stream.consumers}
        for cname, ci in sorted(live_cons.items()):
            if cname in declared:
                continue
            owner = owner_of(ci.get("config", {}))
            if owner == self.topology.name:
                note = "deleted with its stream" if replaced else ""
                deletes.append(Change("consumer", stream.name, cname, "delete", note=note))
                continue
            note = f"managed by topology `{owner}`" if owner else "not created by natstopo"
            if replaced:
                note += "; lost when its stream is replaced"
            unmanaged.append(Change("consumer", stream.name, cname, "unmanaged", note=note))
        return deletes, unmanaged

    def _consumer(
        self,
        stream: Stream,
        consumer: Consumer,
        info: dict[str, Any] | None,
        stream_replaced: bool,
        stream_replicas: int,
    ) -> Change:
        topology, server = self.topology, self.server
        create = consumer_create_config(consumer, topology, server)
        if stream_replaced or info is None:
            note = "recreated with its stream" if stream_replaced and info is not None else ""
            return Change(
                "consumer", stream.name, consumer.name, "create", note=note, config=create
            )
        live = info.get("config", {})
        owner = owner_of(live)
        if owner not in (None, topology.name):
            return self._conflict("consumer", stream.name, consumer.name, str(owner))
        fields, update = diff_consumer(consumer, live, stream_replicas, topology, server)
        if any(f.effect == "replace" for f in fields):
            note = _consumer_note(info)
            return Change(
                "consumer", stream.name, consumer.name, "replace", fields, note, config=create
            )
        if fields:
            note = "adopted: not yet marked as managed" if owner is None else ""
            return Change(
                "consumer", stream.name, consumer.name, "update", fields, note, config=update
            )
        return Change("consumer", stream.name, consumer.name, "none")


def _state_note(info: dict[str, Any]) -> str:
    state = info.get("state") or {}
    msgs = int(state.get("messages", 0) or 0)
    size = int(state.get("bytes", 0) or 0)
    if not msgs:
        return "holds no messages"
    return f"holds {msgs} message{'s' if msgs != 1 else ''}, {format_size(size)}"


def _consumer_note(info: dict[str, Any]) -> str:
    pending = int(info.get("num_pending", 0) or 0) + int(info.get("num_ack_pending", 0) or 0)
    return f"{pending} message(s) pending or unacked" if pending else ""

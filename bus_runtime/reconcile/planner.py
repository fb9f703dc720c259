"""`plan_changes`: read the server and decide, per declared or marked asset, what apply would do.

A plan also names what apply would run into, as errors, before anything is changed:
subjects of an unmanaged stream overlapping a declared one, replicas above the cluster's
size, fields the server's version does not know, and the account's JetStream limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from .._errors import UnsupportedFeatureError
from ..jetstream.api import JetStreamApi
from ..jetstream.rules import (
    MIN_SERVER,
    StreamState,
    Version,
    effective,
    feature_errors,
    needs_subjects,
    version_text,
)
from ..topology.model import Consumer, Location, Stream, Topology
from ..topology.subjects import subjects_overlap
from ..topology.units import format_size
from .diff import consumer_create_config, diff_consumer, diff_stream, stream_create_config
from .marks import owner as owner_of
from .plan import Change, FieldChange, Plan


async def plan_changes(
    js_or_nc: Client | JetStreamContext | JetStreamApi,
    topology: Topology,
    only_streams: Iterable[str] | None = None,
    only_consumers: Iterable[tuple[str, str]] | None = None,
    every_consumer: bool = True,
) -> Plan:
    """Compare `topology` with the live server and plan what apply would do.

    Without scope every stream on the server is read: declared ones are compared, marked
    undeclared ones are planned for deletion, others reported as unmanaged. With
    `only_streams` (every declared consumer of those streams) and/or `only_consumers`
    ((stream, consumer) pairs) only those assets are read, and nothing is deleted.
    `every_consumer=False` reads only the consumers of `only_consumers`, never a stream's
    list of consumers (a service's permissions allow CONSUMER.INFO of its own ones only);
    what needs the others' state (interest retention) is then planned as unknown.

    What apply would fail on is in `Plan.errors` (apply refuses such a plan).

    Raises:
        UnsupportedFeatureError: The server is older than 2.10 (no metadata, no marks).
        ReconcileError: The server refused a request or did not answer.
        KeyError: A scoped stream or consumer is not declared in the topology.
    """
    started = time.perf_counter()
    api = JetStreamApi.of(js_or_nc)
    server = api.server_version
    if server < MIN_SERVER:
        raise UnsupportedFeatureError(
            "metadata",
            "stream and consumer metadata (natstopo marks the assets it manages)",
            version_text(MIN_SERVER),
            version_text(server),
        )
    planner = _Planner(
        topology,
        server,
        set(only_streams) if only_streams is not None else None,
        set(only_consumers) if only_consumers is not None else None,
        every_consumer,
    )
    plan = Plan(topology.name, topology.environment, version_text(server))
    await planner.read(api)
    plan.changes = planner.changes()
    plan.errors = planner.errors(plan.changes, api)
    plan.snapshot = planner.snapshot()
    plan.seconds = time.perf_counter() - started
    return plan


def _at(where: Location | None, path: str, message: str) -> str:
    """`FILE:LINE:COL: error: PATH: MESSAGE`, the validator's form (`PATH: MESSAGE` when
    the topology has no place, e.g. built in code)."""
    return f"{where}: error: {path}: {message}" if where is not None else f"{path}: {message}"


def fingerprint(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def snapshot_of(
    streams: Mapping[str, Mapping[str, Any]], consumers: Mapping[str, list[dict[str, Any]]]
) -> dict[str, str]:
    """Fingerprints of the configs read: `stream:NAME` and `consumers:NAME` (all of a stream)."""
    out = {f"stream:{n}": fingerprint(i.get("config")) for n, i in streams.items()}
    for n, infos in consumers.items():
        configs = sorted((c.get("config") or {} for c in infos), key=lambda c: str(c.get("name")))
        out[f"consumers:{n}"] = fingerprint(configs)
    return out


class _Planner:
    """One plan's reading of the server and its decisions, stream by stream."""

    def __init__(
        self,
        topology: Topology,
        server: Version,
        stream_scope: set[str] | None,
        consumer_scope: set[tuple[str, str]] | None,
        every_consumer: bool = True,
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
        # Every consumer of the stream was read (its state can tell interest retention).
        self.all_consumers_read = every_consumer and not (
            consumer_scope is not None and stream_scope is None
        )
        self.may_list = every_consumer
        self.subjects: dict[str, dict[str, int]] = {}
        self.state_consumers: dict[str, list[dict[str, Any]]] = {}
        self.account: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}

    async def read(self, api: JetStreamApi) -> None:
        self.server_info = dict(getattr(api.nc, "_server_info", None) or {})
        if self.scoped:
            infos = await asyncio.gather(*(api.stream_info(s.name) for s in self.declared))
            self.live_streams = {i["config"]["name"]: i for i in infos if i is not None}
        else:
            streams, account = await asyncio.gather(api.list_streams(), api.account_info())
            self.live_streams = {i["config"]["name"]: i for i in streams}
            self.account = account
        # Consumers of every declared stream that exists, and of every marked one.
        to_read = [
            n
            for n, info in self.live_streams.items()
            if n in self.declared_names or owner_of(info["config"]) == self.topology.name
        ]
        if not self.all_consumers_read:
            pairs = [p for p in sorted(self.consumer_scope or ()) if p[0] in self.live_streams]
            cinfos = await asyncio.gather(*(api.consumer_info(s, c) for s, c in pairs))
            self.live_consumers = {n: [] for n in to_read}
            for (sname, _), cinfo in zip(pairs, cinfos, strict=True):
                if cinfo is not None:
                    self.live_consumers[sname].append(cinfo)
        else:
            self.live_consumers = await api.consumers_of(to_read)
        self.state_consumers = dict(self.live_consumers) if self.all_consumers_read else {}
        # Per-subject counts, only where a change needs them (a lowered per-subject limit,
        # limits -> interest, a narrower filter on an interest stream) and the stream holds
        # messages; a plan scoped to some consumers then reads all of the stream's too.
        wanted = [s.name for s in self.declared if self._needs_subjects(s)]
        counts = await asyncio.gather(*(api.stream_subjects(n) for n in wanted))
        self.subjects = dict(zip(wanted, counts, strict=True))
        if not self.all_consumers_read and wanted and self.may_list:
            lists = await api.consumers_of(wanted)
            self.state_consumers.update(lists)

    def _needs_subjects(self, stream: Stream) -> bool:
        info = self.live_streams.get(stream.name)
        if info is None or not (info.get("state") or {}).get("messages"):
            return False
        fields, _ = diff_stream(stream, info["config"], self.topology, self.server, None)
        if any(needs_subjects("stream", f.field, f.before, f.after) for f in fields):
            return True
        if stream.retention != "interest":
            return False
        live = {ci["name"]: ci for ci in self.live_consumers.get(stream.name, [])}
        for c in self._wanted(stream):
            cinfo = live.get(c.name)
            if cinfo is None:
                continue
            cfields, _ = diff_consumer(c, cinfo.get("config", {}), 1, self.topology, self.server)
            if any(needs_subjects("consumer", f.field, f.before, f.after) for f in cfields):
                return True
        return False

    def state(self, name: str) -> StreamState:
        info = self.live_streams[name]
        consumers = self.state_consumers.get(name)
        state = StreamState.from_info(info, consumers or [], self.subjects.get(name))
        if consumers is None:
            # Not every consumer was read: interest retention cannot be judged.
            state = dataclasses.replace(state, consumers=None)
        return state

    def snapshot(self) -> dict[str, str]:
        return snapshot_of(self.live_streams, self.live_consumers)

    # -- decisions -------------------------------------------------------------------
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
        fields, update = diff_stream(stream, live, topology, server, self.state(stream.name))
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
        replicas = int(effective("stream", "num_replicas", live))
        retention = str(effective("stream", "retention", live))
        for c in wanted:
            out.append(
                self._consumer(stream, c, live_cons.get(c.name), replaced, replicas, retention)
            )
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
                note = "deleted with its stream" if replaced else _interest_note(stream, ci)
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
        retention: str,
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
        fields, update = diff_consumer(
            consumer, live, stream_replicas, topology, server, self.state(stream.name)
        )
        if any(f.effect == "replace" for f in fields):
            note = _consumer_note(info)
            if retention == "interest":
                note = "; ".join(n for n in (note, _interest_note(stream, info)) if n)
            return Change(
                "consumer", stream.name, consumer.name, "replace", fields, note, config=create
            )
        if fields:
            note = "adopted: not yet marked as managed" if owner is None else ""
            return Change(
                "consumer", stream.name, consumer.name, "update", fields, note, config=update
            )
        return Change("consumer", stream.name, consumer.name, "none")

    # -- what apply would fail on ----------------------------------------------------
    def errors(self, changes: list[Change], api: JetStreamApi) -> list[str]:
        out = feature_errors(self.topology, self.server)
        out += self._replica_errors()
        if not self.scoped:
            out += self._overlap_errors()
            out += self._account_errors(changes)
        return out

    def cluster_size(self) -> int | None:
        """Servers in the cluster: 1 when not clustered; None when it does not say."""
        if not self.server_info.get("cluster"):
            return 1
        urls = self.server_info.get("connect_urls") or []
        return len(urls) or None

    def _replica_errors(self) -> list[str]:
        size = self.cluster_size()
        if size is None:
            return []
        where = "a single server (not clustered)" if size == 1 else f"a cluster of {size} servers"
        out = []
        for s in self.declared:
            if s.replicas > size:
                out.append(
                    _at(
                        s.where("replicas"),
                        f"streams.{s.name}.replicas",
                        f"{s.replicas} replicas, but the server is {where}: it would refuse "
                        f"the stream (err_code {'10074' if size == 1 else '10005'}); set "
                        f"replicas to at most {size} for this environment",
                    )
                )
            for c in self._wanted(s):
                if c.replicas is not None and c.replicas > size:
                    out.append(
                        _at(
                            c.where("replicas"),
                            f"streams.{s.name}.consumers.{c.name}.replicas",
                            f"{c.replicas} replicas, but the server is {where}",
                        )
                    )
        return out

    def _overlap_errors(self) -> list[str]:
        out = []
        name = self.topology.name
        others = {
            n: info
            for n, info in self.live_streams.items()
            if n not in self.declared_names and owner_of(info["config"]) != name
        }
        for s in self.declared:
            for other, info in sorted(others.items()):
                theirs = info["config"].get("subjects") or []
                hit = next(
                    ((a, b) for a in s.subjects for b in theirs if subjects_overlap(a, b)), None
                )
                if hit is None:
                    continue
                owner = owner_of(info["config"])
                who = f"managed by topology `{owner}`" if owner else "not managed by natstopo"
                out.append(
                    _at(
                        s.where(),
                        f"streams.{s.name}",
                        f"subject `{hit[0]}` overlaps subject `{hit[1]}` of stream `{other}` on "
                        f"the server ({who}); the server refuses overlapping streams "
                        "(err_code 10065): move or delete that stream, or change the topics",
                    )
                )
        return out

    def _account_errors(self, changes: list[Change]) -> list[str]:
        limits = self.account.get("limits") or {}
        if not limits:
            return []
        out: list[str] = []
        streams = [c for c in changes if c.kind == "stream"]
        n_streams = len(self.live_streams)
        n_streams += sum(c.action == "create" for c in streams)
        n_streams -= sum(c.action == "delete" for c in streams)
        max_streams = int(limits.get("max_streams", -1) or -1)
        if 0 < max_streams < n_streams:
            out.append(
                f"the account allows {max_streams} streams; after apply it would have "
                f"{n_streams} (JetStream account limit max_streams)"
            )
        consumers = [c for c in changes if c.kind == "consumer"]
        n_consumers = int(self.account.get("consumers", 0) or 0)
        n_consumers += sum(c.action == "create" and "recreated" not in c.note for c in consumers)
        n_consumers -= sum(
            c.action == "delete" and "with its stream" not in c.note for c in consumers
        )
        max_consumers = int(limits.get("max_consumers", -1) or -1)
        if 0 < max_consumers < n_consumers:
            out.append(
                f"the account allows {max_consumers} consumers; after apply it would "
                f"have {n_consumers} (JetStream account limit max_consumers)"
            )
        for storage, limit_key, per_stream_key, reserved_key in (
            ("file", "max_storage", "storage_max_stream_bytes", "reserved_storage"),
            ("memory", "max_memory", "memory_max_stream_bytes", "reserved_memory"),
        ):
            reserved = int(self.account.get(reserved_key, 0) or 0)
            for s in self.declared:
                live = (self.live_streams.get(s.name) or {}).get("config")
                if live is not None and effective("stream", "storage", live) == storage:
                    mb = int(effective("stream", "max_bytes", live))
                    if mb > 0:
                        reserved -= mb * int(effective("stream", "num_replicas", live))
                if s.storage != storage:
                    continue
                mb = s.max_bytes if s.max_bytes is not None else -1
                per_stream = int(limits.get(per_stream_key, -1) or -1)
                if mb <= 0 and limits.get("max_bytes_required"):
                    out.append(
                        _at(
                            s.where("max_bytes"),
                            f"streams.{s.name}.max_bytes",
                            "the account requires every stream to set max_bytes "
                            "(JetStream account limit max_bytes_required)",
                        )
                    )
                elif per_stream > 0 and mb > per_stream:
                    out.append(
                        _at(
                            s.where("max_bytes"),
                            f"streams.{s.name}.max_bytes",
                            f"{format_size(mb)} is above the account's limit of "
                            f"{format_size(per_stream)} per {storage} stream",
                        )
                    )
                if mb > 0:
                    reserved += mb * s.replicas
            limit = int(limits.get(limit_key, -1) or -1)
            if limit > 0 and reserved > limit:
                out.append(
                    f"{storage} streams would reserve {format_size(reserved)} (max_bytes "
                    f"x replicas); the account allows {format_size(limit)} ({limit_key})"
                )
        return out


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


def _interest_note(stream: Stream, info: dict[str, Any]) -> str:
    if stream.retention != "interest":
        return ""
    return "on an interest stream, messages only it had not acknowledged are dropped with it"


__all__ = ["FieldChange", "fingerprint", "plan_changes", "snapshot_of"]

"""Helpers of the runtime tests: a small topology written per test, provisioning, reading streams.

The topology: stream JOBS (interest, dead letters to DLQ) with topics `job.created` (a
payload schema) and `firm.*.synced` (a `*` token); service svc-a consumes `job.created`
through `a-worker` and `firm.*.synced` through `a-firms` (or both through `a-worker`, with
`one_consumer=True`); svc-b publishes nothing and, with `fanout=True`, consumes
`job.created` too, through `b-worker`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from bus_runtime import BusMetrics, EventPayload, Topology, load_topology
from bus_runtime.bus.envelope import encode_envelope, schema_field
from bus_runtime.reconcile.apply import apply_plan
from bus_runtime.reconcile.planner import plan_changes

JOB_SCHEMA = {
    "type": "object",
    "required": ["n"],
    "properties": {"n": {"type": "integer", "minimum": 0}, "fail": {"type": "string"}},
}

TOPOLOGY = """\
version: 1
name: rt-test
defaults:
  stream: {{storage: file, replicas: {replicas}, duplicate_window: 2m}}
  consumer: {{ack_policy: explicit, ack_wait: {ack_wait}, max_deliver: {max_deliver}}}
services:
  svc-a: {{}}
  svc-b: {{}}
streams:
  JOBS:
    subject_prefix: jobs
    retention: interest
{stream_extra}    dead_letter: DLQ
    topics:
      job.created:
        publishers: [svc-a]
        schema: job.json
      firm.*.synced:
        publishers: [svc-a]
    consumers:
      a-worker:
        service: svc-a
        topics: [job.created{worker_topics}]
{backoff}        fetch_batch: {fetch_batch}
        concurrency: {concurrency}
{firm_consumer}  DLQ:
    subject_prefix: dlq
    retention: limits
"""


def write_topology(
    folder: Path,
    *,
    replicas: int = 1,
    ack_wait: str = "2s",
    max_deliver: int = 3,
    backoff: str | None = "[100ms, 200ms]",
    fetch_batch: int = 10,
    concurrency: int = 4,
    name: str = "topology.yaml",
    one_consumer: bool = False,
    fanout: bool = False,
    stream_extra: str = "",
    extra: str = "",
) -> Path:
    """Write the test topology (and its schema) into `folder`; the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(JOB_SCHEMA))
    path = folder / name
    path.write_text(
        TOPOLOGY.format(
            replicas=replicas,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            backoff=f"        backoff: {backoff}\n" if backoff else "",
            fetch_batch=fetch_batch,
            concurrency=concurrency,
            worker_topics=", firm.*.synced" if one_consumer else "",
            stream_extra=stream_extra,
            firm_consumer=(
                ""
                if one_consumer
                else "      a-firms:\n        service: svc-a\n        topics: [firm.*.synced]\n"
            )
            + (
                "      b-worker:\n        service: svc-b\n        topics: [job.created]\n"
                "        backoff: [100ms, 200ms]\n"
                if fanout
                else ""
            ),
        )
        + extra
    )
    return path


async def provision(nc: Client, topology: Topology) -> None:
    """Create the topology's streams and consumers on the server (through the reconciler)."""
    plan = await plan_changes(nc, topology)
    if plan.has_changes:
        await apply_plan(nc, plan, allow_destructive=True)


async def provision_url(url: str | list[str], path: Path) -> Topology:
    import nats

    topology = load_topology(path)
    nc = await nats.connect(servers=url if isinstance(url, list) else [url])
    try:
        await provision(nc, topology)
    finally:
        await nc.close()
    return topology


def _headers(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    out: dict[str, str] = {}
    for line in base64.b64decode(raw).decode().split("\r\n")[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


async def stream_messages(nc: Client, stream: str) -> list[dict[str, Any]]:
    """Every message of a stream: dicts with subject, seq, headers, data (bytes)."""
    info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)).data)
    state = info["state"]
    out = []
    seq, last = state["first_seq"], state["last_seq"]
    while seq and seq <= last:
        resp = json.loads(
            (
                await nc.request(
                    f"$JS.API.STREAM.MSG.GET.{stream}",
                    json.dumps({"seq": seq, "next_by_subj": ">"}).encode(),
                    timeout=5,
                )
            ).data
        )
        if "error" in resp:
            break
        m = resp["message"]
        out.append(
            {
                "subject": m["subject"],
                "seq": m["seq"],
                "headers": _headers(m.get("hdrs")),
                "data": base64.b64decode(m.get("data") or ""),
            }
        )
        seq = m["seq"] + 1
    return out


async def eventually(
    predicate: Callable[[], bool], within: float = 15.0, what: str = "condition"
) -> None:
    """Wait until `predicate()` is true; AssertionError naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def published_body(path: Path | Topology, topic: str, payload: EventPayload) -> bytes:
    """The exact body a bus of this topology publishes for `payload` on `topic`."""
    topology = path if isinstance(path, Topology) else load_topology(path)
    return encode_envelope(topic, payload, schema_field(topology.topic(topic).schema_digest))


# -- one backend, both buses ----------------------------------------------------------
class Backend:
    """Either a real nats-server or one MemoryBroker: buses made here share it.

    Tests written against a Backend run on both buses (the `backend` fixture of the
    runtime tests), so the memory bus is held to the NATS bus's semantics case by case.
    """

    def __init__(self, kind: str, server: Any = None) -> None:
        self.kind = kind
        self.server = server
        self.broker: Any = None
        self._buses: list[Any] = []
        self._provisioned: set[str] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.url)

    async def bus(
        self, path: Path, service: str = "svc-a", *, provision: bool = True, **options: Any
    ) -> Any:
        """A new, not yet started bus of `service` (its topology provisioned on NATS)."""
        from bus_runtime import MemoryBroker, MemoryEventBus, NATSEventBus

        if self.kind == "memory":
            topology = load_topology(path)
            if self.broker is None:
                self.broker = MemoryBroker(topology)
            options.pop("startup_check", None)
            bus: Any = MemoryEventBus(
                topology=topology, service=service, broker=self.broker, **options
            )
        else:
            if provision and str(path) not in self._provisioned:
                await provision_url(self.url, path)
                self._provisioned.add(str(path))
            bus = NATSEventBus(self.url, topology=str(path), service=service, **options)
        self._buses.append(bus)
        return bus

    async def started(self, path: Path, service: str = "svc-a", **options: Any) -> Any:
        bus = await self.bus(path, service, **options)
        await bus.start()
        return bus

    async def messages(self, stream: str) -> list[dict[str, Any]]:
        """Every message kept by `stream`: dicts with subject, seq, headers, data."""
        if self.kind == "memory":
            return [
                {"subject": m.subject, "seq": m.seq, "headers": m.headers, "data": m.data}
                for m in self.broker.messages(stream)
            ]
        import nats

        nc = await nats.connect(self.url)
        try:
            return await stream_messages(nc, stream)
        finally:
            await nc.close()

    async def inject(
        self, stream: str, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Store a raw message, bypassing every bus check (a foreign publisher)."""
        if self.kind == "memory":
            assert self.broker.store(stream, subject, body, dict(headers or {})) is not None
            return
        import nats

        nc = await nats.connect(self.url)
        try:
            await nc.jetstream().publish(subject, body, headers=headers, stream=stream)
        finally:
            await nc.close()

    async def wait_for_messages(
        self, stream: str, count: int, within: float = 20.0
    ) -> list[dict[str, Any]]:
        """The messages of `stream` once it holds at least `count` (AssertionError after `within`)."""
        deadline = time.monotonic() + within
        while True:
            got = await self.messages(stream)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{stream} holds {len(got)} messages, expected {count}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for bus in self._buses:
            await bus.stop()

    async def pending(self, stream: str, consumer: str) -> tuple[int, int]:
        """(undelivered, delivered but unacknowledged) messages of `consumer`."""
        if self.kind == "memory":
            mc = self.broker.consumers[(stream, consumer)]
            return len(mc.ready) + len(mc.timers), mc.running
        import nats

        nc = await nats.connect(self.url)
        try:
            info = await nc.jetstream().consumer_info(stream, consumer)
        finally:
            await nc.close()
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    async def settled(self, stream: str, consumer: str, within: float = 20.0) -> None:
        """Wait until `consumer` has nothing undelivered and nothing unacknowledged.

        On the server: consumer info shows num_pending 0 and num_ack_pending 0 (a NAKed
        message stays pending until acked or terminated). In memory: nothing ready, no
        redelivery timer, no handler running.
        """
        deadline = time.monotonic() + within
        while True:
            if self.kind == "memory":
                mc = self.broker.consumers[(stream, consumer)]
                if mc.idle:
                    return
                state = f"ready {len(mc.ready)}, timers {len(mc.timers)}, running {mc.running}"
            else:
                import nats

                nc = await nats.connect(self.url)
                try:
                    info = await nc.jetstream().consumer_info(stream, consumer)
                finally:
                    await nc.close()
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                state = f"num_pending {info.num_pending}, num_ack_pending {info.num_ack_pending}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{stream}/{consumer} not settled after {within}s: {state}")
            await asyncio.sleep(0.05)


def backend_params() -> list[Any]:
    """`memory`, then the oldest and the newest server (as conftest's `_each` fixtures)."""
    from harness import available_servers

    found = available_servers()
    versions = sorted({found[0], found[-1]}) if found else []
    return [
        "memory",
        *(pytest.param(b, marks=pytest.mark.nats, id=f"nats-{b.version_str}") for b in versions),
    ]


@pytest.fixture(params=backend_params())
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A Backend: a MemoryBroker, or a fresh server of the oldest or the newest version."""
    from harness import running_server

    if request.param == "memory":
        memory = Backend("memory")
        try:
            yield memory
        finally:
            await memory.close()
        return
    with running_server(request.param) as server:
        real = Backend("nats", server)
        try:
            yield real
        finally:
            await real.close()


class Outcomes(BusMetrics):
    """Counts the outcome of every delivery (`acked`, `retried`, ...) and wakes a waiter."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.changed = asyncio.Event()

    def handled(self, topic: str, consumer: str, outcome: str, seconds: float) -> None:
        self.counts[outcome] += 1
        self.changed.set()

    async def wait_for(self, outcome: str, n: int = 1, within: float = 20.0) -> None:
        """Wait until `outcome` was counted `n` times (TimeoutError after `within` s)."""

        async def wait() -> None:
            while self.counts[outcome] < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), within)

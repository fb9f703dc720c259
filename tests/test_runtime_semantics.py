"""The bus's semantics, the same tests against NATSEventBus (a real server) and MemoryEventBus."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import available_servers, running_server
from test_runtime_support import (
    eventually,
    provision_url,
    published_body,
    stream_messages,
    write_topology,
)

from bus_runtime import (
    EventPayload,
    MemoryEventBus,
    NATSEventBus,
    PayloadValidationError,
    SetupError,
    TopicNotDeclaredError,
    create_event_bus,
)
from bus_runtime.bus.envelope import encode_envelope


@dataclass
class Rig:
    """A started bus of svc-a plus what a test needs to look behind it."""

    kind: str
    bus: Any
    path: Path
    url: str | None = None

    async def dead_letters(self) -> list[dict[str, Any]]:
        if isinstance(self.bus, MemoryEventBus):
            return [
                {"subject": m.subject, "headers": m.headers, "data": m.data}
                for m in self.bus.broker.dead_letters()
            ]
        return await stream_messages(self.bus.nc, "DLQ")

    async def stored(self, stream: str = "JOBS") -> list[dict[str, Any]]:
        if isinstance(self.bus, MemoryEventBus):
            return [
                {"subject": m.subject, "headers": m.headers, "data": m.data}
                for m in self.bus.broker.messages(stream)
            ]
        return await stream_messages(self.bus.nc, stream)

    async def inject(self, subject: str, body: bytes) -> None:
        """Put a raw body on a subject, bypassing the bus's checks (a foreign publisher)."""
        if isinstance(self.bus, MemoryEventBus):
            self.bus.broker.store("JOBS", subject, body, {})
        else:
            await self.bus.nc.jetstream().publish(subject, body)

    async def last_seq(self, stream: str = "JOBS") -> int:
        """Messages ever stored in the stream (acked ones leave an interest stream)."""
        if isinstance(self.bus, MemoryEventBus):
            return len(self.bus.broker.messages(stream))
        info = await self.bus.nc.jetstream().stream_info(stream)
        return int(info.state.last_seq)

    async def quiet(self, seconds: float = 0.6) -> None:
        """Let redeliveries that should not happen have a chance to happen."""
        await asyncio.sleep(seconds)


SERVERS = available_servers()


@pytest.fixture(
    params=[
        "memory",
        *(pytest.param(b, marks=pytest.mark.nats, id=f"nats-{b.version_str}") for b in SERVERS),
    ],
)
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    marker = request.node.get_closest_marker("rig_topology")
    path = write_topology(tmp_path, **(marker.kwargs if marker else {}))
    if request.param == "memory":
        bus = create_event_bus("memory", topology=str(path), service="svc-a", time_scale=1.0)
        await bus.start()
        yield Rig("memory", bus, path)
        await bus.stop()
        return
    with running_server(request.param) as server:  # every server version available
        await provision_url(server.url, path)
        bus = create_event_bus("nats", servers=server.url, topology=str(path), service="svc-a")
        assert isinstance(bus, NATSEventBus)
        await bus.start()
        yield Rig("nats", bus, path, server.url)
        await bus.stop()


def job(n: int, **extra: Any) -> EventPayload:
    return EventPayload(data={"n": n, **extra}, actor="svc-a", tenant_id="t-1", trace_id=f"tr-{n}")


async def test_publish_and_handle_once(rig: Rig) -> None:
    seen: list[tuple[str, EventPayload]] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        seen.append((topic, payload))

    await rig.bus.subscribe("job.created", handle)
    sent = job(1)
    assert await rig.bus.publish("job.created", sent) is True
    await eventually(lambda: len(seen) == 1, what="one delivery")
    topic, got = seen[0]
    assert topic == "job.created"
    assert got == sent  # every field, event_id and occurred_at included
    await rig.quiet(0.3)
    assert len(seen) == 1


async def test_retry_then_success(rig: Rig) -> None:
    attempts: Counter[int] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        n = payload.data["n"]
        attempts[n] += 1
        if payload.data.get("fail") == "twice" and attempts[n] <= 2:
            raise RuntimeError(f"attempt {attempts[n]} fails")

    await rig.bus.subscribe("job.created", handle)
    assert await rig.bus.publish("job.created", job(1, fail="twice"))
    assert await rig.bus.publish("job.created", job(2))
    await eventually(lambda: attempts[1] == 3 and attempts[2] == 1, what="3 attempts")
    await rig.quiet()
    assert attempts == Counter({1: 3, 2: 1})
    assert await rig.dead_letters() == []


async def test_always_failing_exactly_max_deliver_then_one_dead_letter(rig: Rig) -> None:
    attempts: Counter[str] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        attempts[payload.event_id] += 1
        raise ValueError("the handler always fails")

    await rig.bus.subscribe("job.created", handle)
    sent = job(7)
    assert await rig.bus.publish("job.created", sent)
    letters: list[dict[str, Any]] = []

    async def poll() -> None:
        letters[:] = await rig.dead_letters()

    for _ in range(300):
        await poll()
        if letters:
            break
        await asyncio.sleep(0.02)
    await rig.quiet(1.0)
    await poll()
    assert attempts == Counter({sent.event_id: 3})
    assert len(letters) == 1
    dl = letters[0]
    h = dl["headers"]
    assert dl["subject"] == "dlq.JOBS.jobs.job.created"
    assert dl["data"] == published_body(rig.path, "job.created", sent)
    assert h["Natstopo-Stream"] == "JOBS"
    assert h["Natstopo-Consumer"] == "a-worker"
    assert h["Natstopo-Subject"] == "jobs.job.created"
    assert h["Natstopo-Deliveries"] == "3"
    assert h["Natstopo-Reason"] == "handler-failed"
    assert h["Natstopo-Error"] == "ValueError: the handler always fails"
    assert h["Natstopo-Msg-Id"] == sent.event_id
    assert int(h["Natstopo-Stream-Seq"]) >= 1
    assert h["traceparent"].startswith("00-")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json at all", "not-json"),
        (b'{"event_id": "x"}', "missing-field"),
        (encode_envelope("job.created", job(1)).replace(b'"n":1', b'"n":-5'), "schema"),
        (encode_envelope("firm.*.synced", job(1)), "topic-mismatch"),
    ],
)
async def test_poison_body_goes_to_dead_letters_at_once(rig: Rig, body: bytes, reason: str) -> None:
    calls: list[EventPayload] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        calls.append(payload)

    await rig.bus.subscribe("job.created", handle)
    await rig.inject("jobs.job.created", body)
    letters: list[dict[str, Any]] = []
    for _ in range(300):
        letters = await rig.dead_letters()
        if letters:
            break
        await asyncio.sleep(0.02)
    await rig.quiet()
    letters = await rig.dead_letters()
    assert calls == []
    assert len(letters) == 1
    assert letters[0]["data"] == body
    assert letters[0]["headers"]["Natstopo-Reason"] == reason
    assert letters[0]["headers"]["Natstopo-Deliveries"] == "1"


async def test_same_payload_twice_is_stored_and_handled_once(rig: Rig) -> None:
    seen: list[str] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        seen.append(payload.event_id)

    await rig.bus.subscribe("job.created", handle)
    p = job(3)
    assert await rig.bus.publish("job.created", p)
    assert await rig.bus.publish("job.created", p)  # a retry by the application
    await eventually(lambda: len(seen) == 1)
    await rig.quiet(0.3)
    assert seen == [p.event_id]
    assert await rig.last_seq() == 1


async def test_wildcard_topic_needs_its_tokens(rig: Rig) -> None:
    seen: list[tuple[str, int]] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        seen.append((topic, payload.data["n"]))

    assert await rig.bus.publish("firm.*.synced", job(1), tokens=["iris"])
    assert await rig.bus.publish("firm.*.synced", job(2), tokens=("xero",))
    subjects = sorted(m["subject"] for m in await rig.stored())
    assert subjects == ["jobs.firm.iris.synced", "jobs.firm.xero.synced"]
    with pytest.raises(SetupError, match="needs 1 subject token"):
        await rig.bus.publish("firm.*.synced", job(3))
    with pytest.raises(SetupError, match="not a token"):
        await rig.bus.publish("firm.*.synced", job(3), tokens=["a.b"])
    with pytest.raises(SetupError, match="takes no subject tokens"):
        await rig.bus.publish("job.created", job(3), tokens=["x"])
    await rig.bus.subscribe("firm.*.synced", handle)
    await eventually(lambda: len(seen) == 2)
    assert sorted(seen) == [("firm.*.synced", 1), ("firm.*.synced", 2)]


async def test_refusals_send_nothing(rig: Rig) -> None:
    with pytest.raises(TopicNotDeclaredError, match=r"did you mean `job.created`"):
        await rig.bus.publish("job.creatd", job(1))
    with pytest.raises(PayloadValidationError, match=r"at n: -1 is less than the minimum") as ei:
        await rig.bus.publish("job.created", job(-1))
    assert ei.value.path == ("n",)
    with pytest.raises(PayloadValidationError, match=r"'n' is a required property"):
        await rig.bus.publish("job.created", EventPayload(data={}, actor="a", tenant_id="t"))
    with pytest.raises(PayloadValidationError):
        await rig.bus.publish_many("job.created", [job(1), job(2), job(-3)])
    assert await rig.stored() == []  # publish_many checks every payload before sending

    other = (
        MemoryEventBus(topology=str(rig.path), service="svc-b")
        if rig.kind == "memory"
        else NATSEventBus(rig.url or "", topology=str(rig.path), service="svc-b")
    )
    with pytest.raises(TopicNotDeclaredError, match="not a declared publisher"):
        await other.publish("job.created", job(1))

    async def handle(topic: str, payload: EventPayload) -> None:
        raise AssertionError("never called")

    with pytest.raises(TopicNotDeclaredError, match="declares no consumer for topic"):
        await other.subscribe("job.created", handle)
    with pytest.raises(SetupError, match="service `svc-c` is not declared"):
        create_event_bus(rig.kind, servers="nats://x", topology=str(rig.path), service="svc-c")
    assert await rig.stored() == []


# 500 messages wait in the runner's buffer: without the 100 ms backoff, so that a busy
# machine's late `in_progress` cannot make a (by design) redelivery look like a duplicate.
@pytest.mark.rig_topology(ack_wait="30s", backoff=None)
async def test_publish_many_in_order_each_handled_once(rig: Rig) -> None:
    seen: Counter[int] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        seen[payload.data["n"]] += 1

    results = await rig.bus.publish_many("job.created", [job(i) for i in range(500)])
    assert results == [True] * 500
    stored = await rig.stored()
    assert [json.loads(m["data"])["data"]["n"] for m in stored] == list(range(500))
    await rig.bus.subscribe("job.created", handle)
    await eventually(lambda: len(seen) == 500, what="500 handled")
    await rig.quiet(0.3)
    assert set(seen.values()) == {1}


async def test_source_document_factory_arguments_are_explained(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="come from the topology"):
        create_event_bus("nats", servers="nats://x", stream_name="S", consumer_group="g")
    with pytest.raises(SetupError, match="needs `topology`"):
        create_event_bus("nats", servers="nats://x")
    with pytest.raises(SetupError, match="unknown event bus kind"):
        create_event_bus("kafka", topology=str(write_topology(tmp_path)), service="svc-a")


# A handler held at a gate: the consumer without the suite's 100 ms backoff, so that a busy
# machine's late `in_progress` cannot get the message redelivered (by design) mid-test.
@pytest.mark.rig_topology(ack_wait="30s", backoff=None)
async def test_handler_finishing_during_stop_may_still_publish(rig: Rig) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    published: list[bool] = []

    async def stage(topic: str, payload: EventPayload) -> None:
        started.set()
        await gate.wait()
        published.append(await rig.bus.publish("firm.*.synced", job(99), tokens=["next"]))

    async def later(topic: str, payload: EventPayload) -> None:
        pass

    await rig.bus.subscribe("job.created", stage)
    await rig.bus.subscribe("firm.*.synced", later)
    assert await rig.bus.publish("job.created", job(1))
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(rig.bus.stop())
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.wait_for(stopping, 20)
    assert published == [True]
    if rig.kind == "memory":
        stored = len(await rig.stored())
    else:
        import nats

        nc = await nats.connect(rig.url)
        stored = (await nc.jetstream().stream_info("JOBS")).state.last_seq
        await nc.close()
    assert stored == 2


async def test_subscribe_before_start_and_a_handler_raising_cancelled(rig: Rig) -> None:
    await rig.bus.stop()
    bus = (
        MemoryEventBus(topology=str(rig.path), service="svc-a", time_scale=1.0)
        if rig.kind == "memory"
        else NATSEventBus(rig.url or "", topology=str(rig.path), service="svc-a")
    )
    attempts: Counter[int] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        attempts[payload.data["n"]] += 1
        if attempts[payload.data["n"]] == 1:
            raise asyncio.CancelledError  # the handler's own, not the bus stopping it

    await bus.subscribe("job.created", handle)  # before start: begins at start
    await bus.start()
    assert all(await bus.publish_many("job.created", [job(i) for i in range(6)]))
    await eventually(lambda: attempts == Counter(dict.fromkeys(range(6), 2)))
    await bus.stop()

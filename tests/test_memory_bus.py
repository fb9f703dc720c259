"""MemoryEventBus on its own: the shipped topology's fan-out and work queue between services,
time-scaled backoff, a stop that keeps unstarted messages, and the Prometheus adapter."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from test_runtime_support import write_topology

from bus_runtime import (
    BusClosedError,
    EventPayload,
    Handler,
    MemoryBroker,
    MemoryEventBus,
    PayloadValidationError,
    SetupError,
    load_topology,
    new_event_id,
)
from bus_runtime.contrib.prometheus import PrometheusMetrics

REPO = Path(__file__).resolve().parent.parent


def uploaded() -> EventPayload:
    return EventPayload(
        data={
            "document_id": new_event_id(),
            "client_id": new_event_id(),
            "source": "upload",
            "content_type": "application/pdf",
            "size_bytes": 1234,
            "sha256": "ab" * 32,
            "object_key": "s3://docs/a.pdf",
        },
        actor="svc-ingestion",
        tenant_id="firm-1",
        trace_id="req-42",
    )


async def test_shipped_topology_fan_out_and_work_queue_between_services() -> None:
    topology = load_topology(REPO / "topology" / "topology.yaml", "local")
    broker = MemoryBroker(topology)
    ingestion = MemoryEventBus(broker=broker, service="svc-ingestion")
    audit = MemoryEventBus(broker=broker, service="svc-audit")
    review = MemoryEventBus(broker=broker, service="ui-review")
    ocr = MemoryEventBus(broker=broker, service="svc-ocr")
    got: Counter[str] = Counter()

    def record(who: str) -> Handler:
        async def handle(topic: str, payload: EventPayload) -> None:
            got[f"{who}:{topic}"] += 1

        return handle

    for bus in (ingestion, audit, review, ocr):
        await bus.start()
    # ui-review's consumer takes four topics: it is read once each has a handler.
    for topic in (
        "document.uploaded",
        "document.ocr_completed",
        "document.extracted",
        "firm.*.sync_completed",
    ):
        await review.subscribe(topic, record("review"))
    await ocr.subscribe("ocr.requested", record("ocr"))

    event = uploaded()
    assert await ingestion.publish("document.uploaded", event)
    job = EventPayload(
        data={k: event.data[k] for k in ("document_id", "client_id", "object_key", "content_type")},
        actor="svc-ingestion",
        tenant_id="firm-1",
    )
    assert await ingestion.publish("ocr.requested", job)
    with pytest.raises(PayloadValidationError, match=r"'typo_field' was unexpected"):
        await ingestion.publish(
            "ocr.requested", EventPayload({**job.data, "typo_field": 1}, "a", "t")
        )
    await ingestion.settle()  # audit-trail's copy waits for a svc-audit that runs no handler
    assert got == Counter({"review:document.uploaded": 1, "ocr:ocr.requested": 1})
    assert len(broker.consumers[("TAX_AGENT_EVENTS", "audit-trail")].ready) == 1
    audit_topics = [
        t for t in broker.topology.stream("TAX_AGENT_EVENTS").consumer("audit-trail").topics
    ]
    for topic in audit_topics[:-1]:
        await audit.subscribe(topic, record("audit"))
    await audit.settle()
    assert got["audit:document.uploaded"] == 0  # one topic still without a handler: not read
    await audit.subscribe(audit_topics[-1], record("audit"))
    await audit.settle()
    assert got["audit:document.uploaded"] == 1
    for bus in (ingestion, audit, review, ocr):
        await bus.stop()


async def test_time_scale_runs_minutes_of_backoff_in_milliseconds(tmp_path: Path) -> None:
    path = write_topology(tmp_path, backoff="[1m, 5m]", max_deliver=3)
    bus = MemoryEventBus(topology=str(path), service="svc-a", time_scale=0.0001)
    await bus.start()
    attempts: list[float] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        attempts.append(asyncio.get_running_loop().time())
        raise RuntimeError("always")

    await bus.subscribe("job.created", handle)
    assert await bus.publish("job.created", EventPayload({"n": 1}, "a", "t"))
    await bus.settle(within=5)
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.006 and attempts[2] - attempts[1] >= 0.03
    [letter] = bus.broker.dead_letters()
    assert letter.headers["Natstopo-Deliveries"] == "3"
    await bus.stop()


async def test_stop_keeps_unstarted_messages_for_the_next_bus(tmp_path: Path) -> None:
    path = write_topology(tmp_path, concurrency=1)
    first = MemoryEventBus(topology=str(path), service="svc-a")
    handled: Counter[int] = Counter()
    gate = asyncio.Event()

    async def slow(topic: str, payload: EventPayload) -> None:
        await gate.wait()
        handled[payload.data["n"]] += 1

    await first.start()
    await first.subscribe("job.created", slow)
    await first.publish_many("job.created", [EventPayload({"n": i}, "a", "t") for i in range(5)])
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(first.stop())
    await asyncio.sleep(0.01)
    gate.set()  # the running handler finishes; the other four were not started
    await stopping
    assert handled == Counter({0: 1})
    with pytest.raises(BusClosedError):
        await first.publish("job.created", EventPayload({"n": 9}, "a", "t"))

    second = MemoryEventBus(broker=first.broker, service="svc-a")
    await second.start()
    await second.subscribe("job.created", slow)
    await second.settle()
    assert handled == Counter(dict.fromkeys(range(5), 1))
    await second.stop()


async def test_prometheus_adapter_counts(tmp_path: Path) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")  # the `prometheus` extra
    registry = prometheus_client.CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    path = write_topology(tmp_path)
    bus = MemoryEventBus(topology=str(path), service="svc-a", metrics=metrics, time_scale=0.01)
    await bus.start()

    async def handle(topic: str, payload: EventPayload) -> None:
        if payload.data.get("fail"):
            raise RuntimeError("no")

    await bus.subscribe("job.created", handle)
    await bus.publish("job.created", EventPayload({"n": 1}, "a", "t"))
    await bus.publish("job.created", EventPayload({"n": 2, "fail": "y"}, "a", "t"))
    await bus.settle()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("natstopo_bus_published_total", topic="job.created", result="ok") == 2
    assert (
        value(
            "natstopo_bus_handled_total", topic="job.created", consumer="a-worker", outcome="acked"
        )
        == 1
    )
    assert (
        value(
            "natstopo_bus_handled_total",
            topic="job.created",
            consumer="a-worker",
            outcome="retried",
        )
        == 2
    )
    assert (
        value(
            "natstopo_bus_dead_letters_total",
            stream="JOBS",
            consumer="a-worker",
            reason="handler-failed",
        )
        == 1
    )
    await bus.stop()


async def test_a_consumer_without_explicit_acks_is_refused(tmp_path: Path) -> None:
    path = write_topology(tmp_path)
    path.write_text(path.read_text().replace("ack_policy: explicit", "ack_policy: all"))
    bus = MemoryEventBus(topology=str(path), service="svc-a")

    async def handle(topic: str, payload: EventPayload) -> None:
        pass

    with pytest.raises(SetupError, match=r"ack_policy all.*needs `explicit`"):
        await bus.subscribe("job.created", handle)


def test_every_nats_bus_option_builds_a_memory_bus_too() -> None:
    """The same settings build either bus (an application switches with one word): each
    keyword NATSEventBus takes is taken by MemoryEventBus, read from its signature."""
    import inspect

    from bus_runtime import MemoryEventBus, NATSEventBus
    from bus_runtime.jetstream.connect import ConnectOptions

    samples: dict[str, object] = {
        "servers": "nats://127.0.0.1:4222",
        "connection": ConnectOptions(),
        "metrics": None,
        "environment": None,
    }
    params = inspect.signature(NATSEventBus).parameters.values()
    keywords = [p for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(keywords) > 15
    for p in keywords:
        if p.name in ("topology", "service"):
            continue
        value = samples.get(p.name, p.default)
        if value is None and p.name in ("user", "password", "token", "creds", "nkey_seed"):
            value = "x"
        bus = MemoryEventBus(
            topology=REPO / "topology" / "topology.yaml", service="svc-ocr", **{p.name: value}
        )
        assert bus.service == "svc-ocr", p.name

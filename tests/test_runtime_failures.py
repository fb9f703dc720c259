"""Paths that hung or raised raw errors: each now ends in one `BusError` subclass, raised
before anything is sent, or in a bounded, quiet return."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import pytest
from harness import NatsServer, free_port
from test_runtime_support import (
    Backend,
    Outcomes,
    backend,
    eventually,
    provision_url,
    write_topology,
)

from bus_runtime import (
    BusError,
    ConnectError,
    EventPayload,
    NATSEventBus,
    PayloadTooLargeError,
    PayloadValidationError,
    SetupError,
    StartupCheckError,
    TopologyValidationError,
    create_event_bus,
    load_topology,
)
from bus_runtime.topology.loader import check_topology

__all__ = ["backend"]  # the fixture, imported for pytest


def job(n: int, **extra: Any) -> EventPayload:
    return EventPayload(data={"n": n, **extra}, actor="svc-a", tenant_id="t-1")


# -- start and stop --------------------------------------------------------------------
async def test_start_against_an_unreachable_server_gives_up_with_one_connect_error(
    tmp_path: Path,
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    bus = NATSEventBus(
        url, topology=str(write_topology(tmp_path)), service="svc-a", start_timeout=1.5
    )
    began = time.monotonic()
    with pytest.raises(ConnectError) as ei:
        # the outer bound only keeps a regression from hanging the suite
        await asyncio.wait_for(bus.start(), 30)
    assert time.monotonic() - began < 15
    assert str(ei.value) == (
        f"cannot connect to {url}: connection refused (gave up after start_timeout 1.5s)"
    )
    assert bus.nc is None
    with pytest.raises(ConnectError):  # and again: the bus is still new, not half-started
        await asyncio.wait_for(bus.start(), 30)


@pytest.mark.nats
async def test_stop_after_the_server_died_returns_quietly(
    nats_server_each: NatsServer, tmp_path: Path
) -> None:
    path = write_topology(tmp_path)
    await provision_url(nats_server_each.url, path)
    bus = NATSEventBus(nats_server_each.url, topology=str(path), service="svc-a", stop_timeout=2)
    handled: list[int] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        handled.append(payload.data["n"])

    await bus.subscribe("job.created", handle)
    await bus.subscribe("firm.*.synced", handle)
    await bus.start()
    assert await bus.publish("job.created", job(1))
    for _ in range(200):
        if handled:
            break
        await asyncio.sleep(0.02)
    assert nats_server_each.proc is not None
    nc = bus.nc
    subscription_tasks = [s._wait_for_msgs_task for s in nc._subs.values()]
    assert subscription_tasks and all(t is not None for t in subscription_tasks)
    os.kill(nats_server_each.proc.pid, signal.SIGKILL)  # a crash, while the bus is busy:
    publishes = [asyncio.create_task(bus.publish("job.created", job(i))) for i in range(10)]
    began = time.monotonic()
    await asyncio.wait_for(bus.stop(), 30)  # raised ConnectionResetError here
    assert time.monotonic() - began < 15
    await bus.stop()  # twice: still quiet
    results = await asyncio.gather(*publishes, return_exceptions=True)
    # each publish ended as False (not confirmed) or BusClosedError: never a socket error
    assert all(r is False or isinstance(r, BusError) for r in results), results
    # nothing of the connection is left waiting (a close cut short by its bound left the
    # subscriptions' tasks pending for good: "Task was destroyed but it is pending")
    await asyncio.wait_for(asyncio.gather(*subscription_tasks, return_exceptions=True), 5)
    nats_server_each.proc.wait()


# -- refused before anything is sent ---------------------------------------------------
async def test_payloads_over_a_size_limit_are_refused_before_sending(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, stream_extra="    max_msg_size: 4KiB\n")
    bus = await backend.started(path)
    limit = 1024 * 1024 if backend.kind == "memory" else bus.nc.max_payload
    with pytest.raises(PayloadTooLargeError) as ei:
        await bus.publish("job.created", job(1, fail="x" * limit))
    assert ei.value.limit == limit and ei.value.limit_name == "the server's max_payload"
    with pytest.raises(
        PayloadTooLargeError, match=r"than the 4096 bytes of streams\.JOBS\.max_msg"
    ):
        await bus.publish("job.created", job(1, fail="x" * 5000))
    assert await backend.messages("JOBS") == []
    assert await bus.publish("job.created", job(2))  # the window kept no slot for them


@pytest.mark.nats
async def test_the_size_check_counts_what_the_server_counts(
    nats_server_each: NatsServer, tmp_path: Path
) -> None:
    """The refusal is the server's, measured: the largest payload the bus lets through is
    stored, one byte more would have been refused by the stream itself."""
    path = write_topology(tmp_path, stream_extra="    max_msg_size: 2000\n")
    await provision_url(nats_server_each.url, path)
    bus = NATSEventBus(nats_server_each.url, topology=str(path), service="svc-a")
    await bus.start()
    try:
        size = 1
        for _ in range(4000):  # the largest `fail` string the bus accepts (bounded search)
            try:
                bus.binding.prepare("job.created", job(1, fail="x" * (size + 1)))
            except PayloadTooLargeError:
                break
            size += 1
        else:
            raise AssertionError("a 4000-byte payload passed a 2000-byte max_msg_size")
        fits = job(1, fail="x" * size)
        assert await bus.publish("job.created", fits)
        _t, subject, body, headers = bus.binding.prepare("job.created", job(2, fail="x" * size))
        one_more = body.replace(b'"fail":"', b'"fail":"x', 1)
        ack = await bus.nc.request(subject, one_more, timeout=5, headers=headers)
        assert json.loads(ack.data)["error"]["err_code"] == 10054  # message size exceeds maximum
    finally:
        await bus.stop()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, r"`data` must be a dict \(a JSON object\), got NoneType"),
        ([1, 2], r"`data` must be a dict \(a JSON object\), got list"),
        ({"n": 1, "fail": math.nan}, r"not JSON: Out of range float values"),
        ({"n": 1, "x": float("inf")}, r"not JSON: Out of range float values"),
    ],
)
async def test_data_that_is_not_a_json_object_is_refused(
    backend: Backend, tmp_path: Path, data: Any, message: str
) -> None:
    path = write_topology(tmp_path)
    text = path.read_text().replace("        schema: job.json\n", "")  # no schema to refuse it
    path.write_text(text)
    bus = await backend.started(path)
    with pytest.raises(PayloadValidationError, match=message):
        await bus.publish("job.created", EventPayload(data=data, actor="a", tenant_id="t"))
    assert await backend.messages("JOBS") == []


@pytest.mark.parametrize("tokens", [[1], [b"iris"], [None], 7])
async def test_tokens_that_are_not_strings_are_a_setup_error(
    backend: Backend, tmp_path: Path, tokens: Any
) -> None:
    bus = await backend.started(write_topology(tmp_path))
    with pytest.raises(SetupError, match="tokens"):
        await bus.publish("firm.*.synced", job(1), tokens=tokens)
    assert await backend.messages("JOBS") == []


async def test_data_nested_too_deeply_is_refused_not_a_recursion_error(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path)
    path.write_text(path.read_text().replace("        schema: job.json\n", ""))
    bus = await backend.started(path)
    deep: dict[str, Any] = {"n": 1}
    for _ in range(5000):
        deep = {"n": 1, "x": deep}
    with pytest.raises(PayloadValidationError, match=r"nested too deeply|not JSON"):
        await bus.publish("job.created", EventPayload(data=deep, actor="a", tenant_id="t"))
    assert await backend.messages("JOBS") == []


def test_an_unknown_connect_option_is_a_setup_error_at_construction(tmp_path: Path) -> None:
    path = write_topology(tmp_path)
    with pytest.raises(SetupError, match=r"`conect_timeout` \(did you mean `connect_timeout`\?\)"):
        NATSEventBus(
            "nats://127.0.0.1:1",
            topology=str(path),
            service="svc-a",
            connect_options={"conect_timeout": 1},
        )
    # a keyword nats.connect takes is fine
    NATSEventBus(
        "nats://127.0.0.1:1",
        topology=str(path),
        service="svc-a",
        connect_options={"ping_interval": 5},
    )


async def test_a_dict_instead_of_an_event_payload_is_refused(
    backend: Backend, tmp_path: Path
) -> None:
    bus = await backend.started(write_topology(tmp_path))
    with pytest.raises(PayloadValidationError, match=r"expected an EventPayload, got dict: wrap"):
        await bus.publish("job.created", {"n": 1})
    with pytest.raises(PayloadValidationError, match=r"expected an EventPayload, got str"):
        await bus.publish_many("job.created", [job(1), "n=2"])
    with pytest.raises(PayloadValidationError, match=r"`event_id` 'a b' cannot be a Nats-Msg-Id"):
        await bus.publish("job.created", EventPayload({"n": 1}, "a", "t", event_id="a b"))
    with pytest.raises(SetupError, match=r"`tokens` must be a list"):
        await bus.publish("firm.*.synced", job(1), tokens="iris")
    assert await backend.messages("JOBS") == []


async def test_a_sync_handler_or_a_wrong_signature_is_refused_at_subscribe(
    backend: Backend, tmp_path: Path
) -> None:
    bus = await backend.bus(write_topology(tmp_path))
    calls: list[str] = []

    def sync_handler(topic: str, payload: EventPayload) -> None:
        calls.append(topic)

    async def one_argument(payload: EventPayload) -> None:
        calls.append("never")

    with pytest.raises(SetupError, match=r"`.*sync_handler` for topic `job.created` is not an"):
        await bus.subscribe("job.created", sync_handler)  # type: ignore[arg-type]
    with pytest.raises(SetupError, match=r"expected \(topic, payload\) or \(topic, payload, d"):
        await bus.subscribe("job.created", one_argument)  # type: ignore[arg-type]
    with pytest.raises(SetupError, match=r"is a str, not a function"):
        await bus.subscribe("job.created", "handle")  # type: ignore[arg-type]
    assert calls == []


def test_the_source_documents_constructor_gives_setup_error(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"stream_name, consumer_group: streams and consumers"):
        NATSEventBus(servers="nats://x:4222", stream_name="events", consumer_group="svc")  # type: ignore[call-arg]
    with pytest.raises(SetupError, match=r"2 more positional argument"):
        NATSEventBus("nats://x:4222", "events", "svc")  # type: ignore[misc]
    path = str(write_topology(tmp_path))
    with pytest.raises(SetupError, match=r"unknown argument\(s\) `stop_timout` \(did you mean"):
        NATSEventBus("nats://x", topology=path, service="svc-a", stop_timout=1)  # type: ignore[call-arg]
    with pytest.raises(SetupError, match=r"`publish_timeout` must be more than 0 seconds"):
        NATSEventBus("nats://x", topology=path, service="svc-a", publish_timeout=0)
    with pytest.raises(SetupError, match=r"`stop_timeout` must be a finite number of seconds"):
        NATSEventBus("nats://x", topology=path, service="svc-a", stop_timeout=float("inf"))
    with pytest.raises(SetupError, match=r"`pull_expires` must be at most 60 seconds"):
        NATSEventBus("nats://x", topology=path, service="svc-a", pull_expires=61)
    assert (
        NATSEventBus("nats://x", topology=path, service="svc-a", pull_expires=60).pull_expires == 60
    )
    with pytest.raises(SetupError, match=r"`max_in_flight` must be an integer of at least 1"):
        NATSEventBus("nats://x", topology=path, service="svc-a", max_in_flight=0)
    with pytest.raises(SetupError, match=r"`servers` must be a NATS URL"):
        NATSEventBus(None, topology=path, service="svc-a")  # type: ignore[arg-type]
    with pytest.raises(SetupError, match=r"`metrics` must be a BusMetrics"):
        create_event_bus("memory", topology=path, service="svc-a", metrics=object())
    with pytest.raises(SetupError, match=r"stream_name"):
        create_event_bus("memory", topology=path, service="svc-a", stream_name="x")


# -- payload schemas whose references cannot be resolved -------------------------------
@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("common.json#/$defs/n", "points outside the schema"),
        ("missing.json", "points outside the schema"),
        ("https://example.com/n.json", "points outside the schema"),
        ("#/$defs/nothing", "points to nothing inside the schema"),
    ],
)
def test_payload_schema_refs_that_do_not_resolve_are_refused(
    tmp_path: Path, ref: str, why: str
) -> None:
    path = write_topology(tmp_path)
    (tmp_path / "common.json").write_text(json.dumps({"$defs": {"n": {"type": "integer"}}}))
    (tmp_path / "job.json").write_text(
        json.dumps({"type": "object", "properties": {"n": {"$ref": ref}}})
    )
    _topology, errors = check_topology(path)
    [error] = [e for e in errors if "job.json" in e.message]
    assert error.path == "streams.JOBS.topics.job.created.schema"
    assert why in error.message and repr(ref) in error.message
    assert "move the definition into its `$defs`" in error.message


def test_payload_schema_refs_inside_the_schema_are_accepted(tmp_path: Path) -> None:
    path = write_topology(tmp_path)
    (tmp_path / "job.json").write_text(
        json.dumps(
            {
                "$defs": {"n": {"type": "integer", "minimum": 0}},
                "type": "object",
                "required": ["n"],
                "properties": {"n": {"$ref": "#/$defs/n"}, "fail": {"type": "string"}},
                "enum_of_data": {"enum": [{"$ref": "not a reference, data"}]},
            }
        )
    )
    load_topology(path)


async def test_a_schema_ref_that_cannot_resolve_is_a_setup_error_not_jsonschemas(
    backend: Backend, tmp_path: Path
) -> None:
    """A Topology built without the loader (in code) meets the same refusal at first use."""
    topology = load_topology(write_topology(tmp_path))
    stream = topology.stream("JOBS")
    topics = tuple(
        dataclasses.replace(t, schema={"properties": {"n": {"$ref": "sibling.json"}}})
        if t.name == "job.created"
        else t
        for t in stream.topics
    )
    streams = tuple(
        dataclasses.replace(s, topics=topics) if s.name == "JOBS" else s for s in topology.streams
    )
    broken = dataclasses.replace(topology, streams=streams)
    if backend.kind == "memory":
        bus: Any = create_event_bus("memory", topology=broken, service="svc-a")
    else:
        await provision_url(backend.url, write_topology(tmp_path / "p"))
        bus = NATSEventBus(backend.url, topology=broken, service="svc-a")
    await bus.start()
    try:
        with pytest.raises(
            SetupError, match=r"payload schema of topic `job.created` cannot be used"
        ):
            await bus.publish("job.created", job(1))

        async def handle(topic: str, payload: EventPayload) -> None:
            pass

        with pytest.raises(SetupError, match=r"'sibling.json' points outside the schema"):
            await bus.subscribe("job.created", handle)
    finally:
        await bus.stop()


# -- refusals of the validator: a topology that would lose messages ------------------------
def test_a_dead_letter_stream_with_interest_retention_is_refused(tmp_path: Path) -> None:
    path = write_topology(tmp_path)
    path.write_text(
        path.read_text().replace(
            "  DLQ:\n    subject_prefix: dlq\n    retention: limits\n",
            "  DLQ:\n    subject_prefix: dlq\n    retention: interest\n",
        )
    )
    with pytest.raises(TopologyValidationError) as ei:
        load_topology(path)
    [error] = ei.value.errors
    assert error.path == "streams.DLQ.retention"
    assert "receives the dead letters of `JOBS` but has retention interest" in error.message


@pytest.mark.nats
async def test_an_interest_stream_without_consumers_keeps_no_dead_letter(
    nats_server_each: NatsServer,
) -> None:
    """Why the rule above: the server acknowledges each message and keeps none."""
    nc = await nats.connect(nats_server_each.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="DLQ", subjects=["dlq.>"], retention="interest")
        ack = await js.publish("dlq.JOBS.jobs.job.created", b"a dead letter")
        assert ack.seq == 1
        info = await js.stream_info("DLQ")
        assert (info.state.messages, info.state.last_seq) == (0, 1)
    finally:
        await nc.close()


def test_a_headers_only_consumer_is_refused(tmp_path: Path) -> None:
    path = write_topology(tmp_path)
    path.write_text(
        path.read_text().replace(
            "        concurrency: 4\n", "        concurrency: 4\n        headers_only: true\n"
        )
    )
    with pytest.raises(TopologyValidationError) as ei:
        load_topology(path)
    [error] = ei.value.errors
    assert error.path == "streams.JOBS.consumers.a-worker.headers_only"
    assert "would deliver every message without its body" in error.message


@pytest.mark.nats
async def test_a_headers_only_consumer_delivers_empty_bodies(nats_server_each: NatsServer) -> None:
    """Why the rule above: the server sends the headers and `Nats-Msg-Size`, no body."""
    nc = await nats.connect(nats_server_each.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s.>"])
        await js.add_consumer("S", durable_name="h", ack_policy="explicit", headers_only=True)
        await js.publish("s.a", b'{"event_id": "x"}')
        [msg] = await (await js.pull_subscribe_bind("h", "S")).fetch(1, timeout=5)
        assert msg.data == b"" and msg.headers == {"Nats-Msg-Size": "17"}
    finally:
        await nc.close()


async def test_the_bus_refuses_a_headers_only_consumer_of_a_topology_built_in_code(
    backend: Backend, tmp_path: Path
) -> None:
    topology = load_topology(write_topology(tmp_path))
    stream = topology.stream("JOBS")
    consumers = tuple(dataclasses.replace(c, headers_only=True) for c in stream.consumers)
    streams = tuple(
        dataclasses.replace(s, consumers=consumers) if s.name == "JOBS" else s
        for s in topology.streams
    )
    broken = dataclasses.replace(topology, streams=streams)
    bus: Any = (
        create_event_bus("memory", topology=broken, service="svc-a")
        if backend.kind == "memory"
        else NATSEventBus(backend.url, topology=broken, service="svc-a")
    )

    async def handle(topic: str, payload: EventPayload) -> None:
        pass

    with pytest.raises(SetupError, match=r"consumer `a-worker` is headers_only"):
        await bus.subscribe("job.created", handle)


# -- the start-up check minds only this service's assets ----------------------------------
@pytest.mark.nats
async def test_a_publish_only_service_starts_though_another_services_consumer_drifted(
    nats_server_each: NatsServer, tmp_path: Path
) -> None:
    path = write_topology(tmp_path)
    text = path.read_text().replace("  svc-b: {}\n", "  svc-b: {}\n  svc-p: {}\n")
    text = text.replace(
        "        publishers: [svc-a]\n        schema",
        "        publishers: [svc-a, svc-p]\n        schema",
    )
    path.write_text(text)
    await provision_url(nats_server_each.url, path)
    drifted = tmp_path / "drifted"
    drifted.mkdir()
    (drifted / "job.json").write_text((tmp_path / "job.json").read_text())
    (drifted / "topology.yaml").write_text(text.replace("max_deliver: 3", "max_deliver: 7"))
    await provision_url(nats_server_each.url, drifted / "topology.yaml")  # a-worker now drifts

    publisher = NATSEventBus(nats_server_each.url, topology=str(path), service="svc-p")
    await publisher.start()  # refused before: a-worker is svc-a's, not svc-p's
    try:
        assert await publisher.publish("job.created", job(1))
    finally:
        await publisher.stop()
    consumer = NATSEventBus(nats_server_each.url, topology=str(path), service="svc-a")
    with pytest.raises(StartupCheckError, match=r"a-worker"):
        await consumer.start()


# -- what a hostile new user tried -------------------------------------------------------------
async def test_a_full_dead_letter_stream_leaves_the_original_in_its_stream(
    backend: Backend, tmp_path: Path
) -> None:
    # DLQ keeps one message and refuses more (discard: new): the second dead letter cannot
    # be stored, so its original stays where it is, and the bus says so at once (a full
    # stream answers 503, which is not worth retrying for publish_retry_for).
    path = write_topology(
        tmp_path, max_deliver=1, backoff=None, extra="    max_msgs: 1\n    discard: new\n"
    )
    outcomes = Outcomes()
    bus = await backend.bus(path, metrics=outcomes, publish_retry_for=120)

    async def fail(topic: str, payload: EventPayload) -> None:
        raise RuntimeError("no")

    await bus.subscribe("job.created", fail)
    await bus.subscribe("firm.*.synced", fail)
    await bus.start()
    assert all(await bus.publish_many("job.created", [job(1), job(2)]))
    await outcomes.wait_for("left", within=60)
    assert outcomes.counts == Counter({"dead_lettered": 1, "left": 1})
    assert len(await backend.messages("DLQ")) == 1
    kept = {json.loads(m["data"])["data"]["n"] for m in await backend.messages("JOBS")}
    assert len(kept) >= 1  # the one the dead-letter stream refused is still in JOBS


async def test_a_publish_to_a_full_stream_is_false_without_retrying(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, stream_extra="    max_msgs: 1\n    discard: new\n")
    path.write_text(path.read_text().replace("retention: interest", "retention: limits"))
    bus = await backend.started(path, publish_retry_for=120)
    assert await bus.publish("job.created", job(1))
    assert await asyncio.wait_for(bus.publish("job.created", job(2)), 60) is False


@pytest.mark.parametrize("window", [1, 4096])
async def test_publish_many_gives_each_payload_its_own_result_in_order(
    backend: Backend, tmp_path: Path, window: int
) -> None:
    # room for three: the fourth and later are refused by the server (discard new), so the
    # results of one call are mixed; window 1 sends each after the previous one's answer
    path = write_topology(tmp_path, stream_extra="    max_msgs: 3\n    discard: new\n")
    path.write_text(path.read_text().replace("retention: interest", "retention: limits"))
    bus = await backend.started(path, publish_retry_for=120, max_in_flight=window)
    results = await asyncio.wait_for(
        bus.publish_many("job.created", [job(i) for i in range(6)]), 60
    )
    assert results == [True, True, True, False, False, False]
    stored = [json.loads(m["data"])["data"]["n"] for m in await backend.messages("JOBS")]
    assert stored == [0, 1, 2]
    assert await bus.publish_many("job.created", []) == []
    await bus.stop()


async def test_publish_many_beyond_the_window_keeps_order_and_frees_every_place(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path)
    path.write_text(path.read_text().replace("retention: interest", "retention: limits"))
    bus = await backend.started(path, max_in_flight=7)
    # 7 in flight at most, several hand-overs to the socket on the way (every 256)
    assert (
        await asyncio.wait_for(bus.publish_many("job.created", [job(i) for i in range(1000)]), 120)
        == [True] * 1000
    )
    stored = [json.loads(m["data"])["data"]["n"] for m in await backend.messages("JOBS")]
    assert stored == list(range(1000))
    # every window place came back: seven at once still go out together
    assert (
        await asyncio.wait_for(
            asyncio.gather(*(bus.publish("job.created", job(1000 + i)) for i in range(7))), 30
        )
        == [True] * 7
    )
    await bus.stop()


async def test_publishing_from_outside_a_handler_does_not_hold_the_stop(
    backend: Backend, tmp_path: Path
) -> None:
    bus = await backend.started(write_topology(tmp_path))
    confirmed: list[str] = []
    refused: list[BaseException] = []

    async def keep_publishing() -> None:
        while True:
            p = job(len(confirmed))
            try:
                if await bus.publish("job.created", p):
                    confirmed.append(p.event_id)
            except BusError as exc:
                refused.append(exc)
                return

    tasks = [asyncio.create_task(keep_publishing()) for _ in range(5)]
    await eventually(lambda: len(confirmed) >= 50, what="publishing under way")
    await asyncio.wait_for(bus.stop(), 30)  # held for all of stop_timeout before
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert len(refused) == 5 and all(type(e).__name__ == "BusClosedError" for e in refused)
    stored = {json.loads(m["data"])["event_id"] for m in await backend.messages("JOBS")}
    assert set(confirmed) <= stored  # every True was stored


async def test_stop_from_inside_a_handler_and_twice_at_once(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path)
    bus = await backend.bus(path, stop_timeout=30)
    finished: list[int] = []

    async def stops_the_bus(topic: str, payload: EventPayload) -> None:
        await bus.stop()  # waited for itself (stop_timeout) before, then cancelled itself
        finished.append(payload.data["n"])

    await bus.subscribe("job.created", stops_the_bus)
    await bus.subscribe("firm.*.synced", stops_the_bus)
    await bus.start()
    assert await bus.publish("job.created", job(1))
    await eventually(lambda: finished == [1], what="the handler returned")
    await asyncio.wait_for(asyncio.gather(bus.stop(), bus.stop()), 10)
    with pytest.raises(BusError):
        await bus.publish("job.created", job(2))
    await backend.settled("JOBS", "a-worker")


@pytest.mark.parametrize("wrap", ["wait_for", "gather", "task"])
async def test_stop_from_a_task_a_handler_started_does_not_wait_for_that_handler(
    backend: Backend, tmp_path: Path, wrap: str
) -> None:
    path = write_topology(tmp_path)
    bus = await backend.bus(path, stop_timeout=30)
    finished: list[int] = []

    async def stops_the_bus(topic: str, payload: EventPayload) -> None:
        if wrap == "wait_for":
            await asyncio.wait_for(bus.stop(), 20)
        elif wrap == "gather":
            await asyncio.gather(bus.stop())
        else:
            await asyncio.get_running_loop().create_task(bus.stop())
        finished.append(payload.data["n"])

    await bus.subscribe("job.created", stops_the_bus)
    await bus.subscribe("firm.*.synced", stops_the_bus)
    await bus.start()
    assert await bus.publish("job.created", job(1))
    # returned at once: the handler is done (and acked) well inside stop_timeout
    await eventually(lambda: finished == [1], what="the handler returned", within=10)
    await asyncio.wait_for(bus.stop(), 10)
    await backend.settled("JOBS", "a-worker")


async def test_a_handler_raising_another_base_exception_is_a_failed_delivery(
    backend: Backend, tmp_path: Path
) -> None:
    class Abort(BaseException):
        pass

    bus = await backend.bus(write_topology(tmp_path, concurrency=1))
    tries: Counter[int] = Counter()

    async def aborts_once(topic: str, payload: EventPayload) -> None:
        tries[payload.data["n"]] += 1
        if tries[payload.data["n"]] == 1:
            raise Abort("not an Exception")

    await bus.subscribe("job.created", aborts_once)
    await bus.subscribe("firm.*.synced", aborts_once)
    await bus.start()
    assert all(await bus.publish_many("job.created", [job(i) for i in range(3)]))
    await backend.settled("JOBS", "a-worker")
    # the one worker survived each Abort and went on: every message retried once, then done
    assert tries == Counter({0: 2, 1: 2, 2: 2})


_EXITING_SERVICE = """
import asyncio, sys
from bus_runtime import EventPayload, NATSEventBus

async def main() -> None:
    bus = NATSEventBus(sys.argv[1], topology=sys.argv[2], service="svc-a")
    async def ends_the_program(topic, payload):
        raise {exc}("operator pressed ^C")
    async def ignore(topic, payload):
        return None
    await bus.subscribe("job.created", ends_the_program)
    await bus.subscribe("firm.*.synced", ignore)
    await bus.start()
    assert await bus.publish("job.created", EventPayload(data={{"n": 1}}, actor="a", tenant_id="t"))
    await asyncio.sleep(60)  # ended by the handler's exception long before

asyncio.run(main())
"""


@pytest.mark.nats
@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "SystemExit"])
async def test_a_handler_ending_the_program_hands_its_message_back(
    nats_server_each: NatsServer, tmp_path: Path, exc: str
) -> None:
    """The message is handed back, after the program ended: the next process gets it as
    delivery 2 within seconds, not after the 30 s ack wait."""
    import subprocess
    import sys

    path = write_topology(tmp_path, ack_wait="30s")
    await provision_url(nats_server_each.url, path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _EXITING_SERVICE.format(exc=exc),
        nats_server_each.url,
        str(path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(proc.wait(), 30) != 0
    bus = NATSEventBus(nats_server_each.url, topology=str(path), service="svc-a")
    got: asyncio.Queue[int] = asyncio.Queue()

    async def handle(topic: str, payload: EventPayload, delivery: Any) -> None:
        got.put_nowait(delivery.num_delivered)

    async def ignore(topic: str, payload: EventPayload) -> None:
        return None

    await bus.subscribe("job.created", handle)
    await bus.subscribe("firm.*.synced", ignore)
    await bus.start()
    try:
        # delivery 2 (the ending process took no other), well inside the 30 s ack wait
        assert await asyncio.wait_for(got.get(), 10) == 2
    finally:
        await bus.stop()

"""Paths that lost events: each test is one way the bus used to lose a message, run on the
memory bus and on real servers (the oldest and the newest)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import pytest
from harness import NatsServer
from test_runtime_support import (
    Backend,
    Outcomes,
    backend,
    eventually,
    provision_url,
    stream_messages,
    write_topology,
)

from bus_runtime import EventPayload, NATSEventBus, SetupError

__all__ = ["backend"]  # the fixture, imported for pytest


def job(n: int, **extra: Any) -> EventPayload:
    return EventPayload(data={"n": n, **extra}, actor="svc-a", tenant_id="t-1")


async def test_two_consumers_failing_one_message_keep_two_dead_letters(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, fanout=True)
    a = await backend.bus(path, "svc-a")
    b = await backend.bus(path, "svc-b")

    async def fail(topic: str, payload: EventPayload) -> None:
        raise RuntimeError("downstream is down")

    await a.subscribe("job.created", fail)
    await a.subscribe("firm.*.synced", fail)
    await b.subscribe("job.created", fail)
    await a.start()
    await b.start()
    assert await a.publish("job.created", job(1))
    await backend.wait_for_messages("DLQ", 2, within=10)
    await backend.settled("JOBS", "a-worker")
    await backend.settled("JOBS", "b-worker")
    letters = await backend.messages("DLQ")
    assert sorted(m["headers"]["Natstopo-Consumer"] for m in letters) == ["a-worker", "b-worker"]
    assert len({m["headers"]["Nats-Msg-Id"] for m in letters}) == 2


@pytest.mark.nats
async def test_dead_letters_survive_a_stream_replace(
    nats_server_each: NatsServer, tmp_path: Path
) -> None:
    import nats

    path = write_topology(tmp_path, max_deliver=1, backoff=None)
    backend = Backend("nats", nats_server_each)

    async def fail(topic: str, payload: EventPayload) -> None:
        raise RuntimeError("always")

    nc = await nats.connect(nats_server_each.url)
    try:
        for round_no in (1, 2):
            bus = await backend.bus(path, provision=False)
            await provision_url(nats_server_each.url, path)
            await bus.subscribe("job.created", fail)
            await bus.subscribe("firm.*.synced", fail)
            await bus.start()
            assert await bus.publish("job.created", job(round_no))
            await backend.wait_for_messages("DLQ", round_no)
            await backend.settled("JOBS", "a-worker")
            await bus.stop()
            # Replace the origin stream: its sequences start again at 1.
            await nc.jetstream().delete_stream("JOBS")
        letters = await stream_messages(nc, "DLQ")
    finally:
        await nc.close()
        await backend.close()
    assert [m["headers"]["Natstopo-Stream-Seq"] for m in letters] == ["1", "1"]
    assert [json.loads(m["data"])["data"]["n"] for m in letters] == [1, 2]


async def test_dead_letters_drop_the_headers_the_server_acts_on(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path)
    bus = await backend.bus(path)
    seen: list[EventPayload] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        seen.append(payload)

    await bus.subscribe("job.created", handle)
    await bus.subscribe("firm.*.synced", handle)
    await bus.start()
    # A foreign publisher's poison message with headers that the dead-letter stream would
    # act on: the expected stream is JOBS (DLQ would refuse the copy), a rollup would purge.
    await backend.inject(
        "JOBS",
        "jobs.job.created",
        b"not an envelope",
        {"Nats-Expected-Stream": "JOBS", "Nats-Msg-Id": "foreign-1", "X-Custom": "kept"},
    )
    [letter] = await backend.wait_for_messages("DLQ", 1)
    await backend.settled("JOBS", "a-worker")
    headers = letter["headers"]
    assert headers["Natstopo-Reason"] == "not-json"
    assert headers["X-Custom"] == "kept"
    assert headers["Natstopo-Msg-Id"] == "foreign-1"
    assert [k for k in headers if k.lower().startswith("nats-")] == ["Nats-Msg-Id"]
    assert seen == []


async def _store_with_raw_headers(
    url: str, subject: str, header_lines: list[str], body: bytes
) -> None:
    """Store a message as a foreign client can (Go's, the `nats` CLI): header names that
    nats-py's publish refuses, written on the wire by hand."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO
        hdr = ("NATS/1.0\r\n" + "".join(f"{h}\r\n" for h in header_lines) + "\r\n").encode()
        writer.write(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
            + b"SUB _INBOX.raw 1\r\n"
            + f"HPUB {subject} _INBOX.raw {len(hdr)} {len(hdr) + len(body)}\r\n".encode()
            + hdr + body + b"\r\n"
        )  # fmt: skip
        await writer.drain()
        seen = b""
        while b'"seq":' not in seen:  # the stream's PubAck
            seen += await asyncio.wait_for(reader.read(4096), 10)
        assert b'"error"' not in seen, seen
    finally:
        writer.close()


@pytest.mark.nats
async def test_a_dead_letter_keeps_header_names_nats_py_cannot_publish(
    nats_server_each: NatsServer, tmp_path: Path
) -> None:
    # The reader keeps `X/Trace` or `A(b)`; nats-py's publish refuses such a name, so the
    # dead-letter copy could never be sent and the message stayed in JOBS for good.
    path = write_topology(tmp_path)
    await provision_url(nats_server_each.url, path)
    odd = ["X/Trace: 1", "A(b): 2", "k=v: 3", "Plain: kept"]
    await _store_with_raw_headers(nats_server_each.url, "jobs.job.created", odd, b"not json")
    envelope_body = (
        b'{"event_id":"01J0000000000000000000000A","topic":"job.created",'
        b'"occurred_at":"2026-01-01T00:00:00Z","actor":"x","tenant_id":"t","trace_id":null,'
        b'"schema":null,"data":{"n":7}}'
    )
    await _store_with_raw_headers(nats_server_each.url, "jobs.job.created", odd, envelope_body)
    bus = NATSEventBus(nats_server_each.url, topology=str(path), service="svc-a")

    async def fails(topic: str, payload: EventPayload) -> None:
        raise ValueError("always")

    async def nothing(topic: str, payload: EventPayload) -> None:
        pass

    await bus.subscribe("job.created", fails)
    await bus.subscribe("firm.*.synced", nothing)
    await bus.start()
    nc = await nats.connect(nats_server_each.url)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(letters := await stream_messages(nc, "DLQ")) < 2:
            assert asyncio.get_running_loop().time() < deadline, f"{len(letters)} dead letters"
            await asyncio.sleep(0.1)
    finally:
        await bus.stop()
        await nc.close()
    assert sorted(m["headers"]["Natstopo-Reason"] for m in letters) == [
        "handler-failed",
        "not-json",
    ]
    for m in letters:
        assert {k: m["headers"][k] for k in ("X/Trace", "A(b)", "k=v", "Plain")} == {
            "X/Trace": "1",
            "A(b)": "2",
            "k=v": "3",
            "Plain": "kept",
        }


async def test_stop_hands_back_nothing_so_a_restart_costs_no_delivery(
    backend: Backend, tmp_path: Path
) -> None:
    # max_deliver 2: one delivery spent by a stop, plus one real failure, used to be enough
    # to dead-letter a message that would have succeeded on its next try.
    path = write_topology(tmp_path, max_deliver=2, backoff=None, fetch_batch=10, concurrency=2)
    first = await backend.bus(path, stop_timeout=30)
    started: list[int] = []

    async def slow(topic: str, payload: EventPayload) -> None:
        started.append(payload.data["n"])
        await asyncio.sleep(0.2)  # the work itself: 40 of them take longer than a pull lasts

    async def nothing(topic: str, payload: EventPayload) -> None:
        pass

    await first.subscribe("job.created", slow)
    await first.subscribe("firm.*.synced", nothing)
    await first.start()
    assert all(await first.publish_many("job.created", [job(i) for i in range(40)]))
    await eventually(lambda: len(started) == 2, what="both handler slots busy")
    await first.stop()
    done_by_first = set(started)
    assert len(done_by_first) < 40

    tries: Counter[int] = Counter()

    async def fails_once(topic: str, payload: EventPayload) -> None:
        n = payload.data["n"]
        tries[n] += 1
        if tries[n] == 1:
            raise RuntimeError("first try fails")

    second = await backend.bus(path)
    await second.subscribe("job.created", fails_once)
    await second.subscribe("firm.*.synced", nothing)
    await second.start()
    await backend.settled("JOBS", "a-worker", within=60)
    assert set(tries) | done_by_first == set(range(40))
    assert await backend.messages("DLQ") == []
    assert all(count == 2 for count in tries.values())


async def test_a_consumer_is_read_only_once_every_topic_has_a_handler(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, one_consumer=True)  # a-worker: job.created, firm.*.synced
    early = await backend.bus(path)

    async def handle(topic: str, payload: EventPayload) -> None:
        handled.append(topic)

    handled: list[str] = []
    await early.subscribe("job.created", handle)
    with pytest.raises(SetupError, match=r"also takes topic\(s\) `firm\.\*\.synced`"):
        await early.start()

    bus = await backend.started(path)
    await bus.subscribe("job.created", handle)  # one of two: nothing is fetched yet
    assert await bus.publish("firm.*.synced", job(1), tokens=["iris"])
    assert await bus.publish("job.created", job(2))
    assert await backend.pending("JOBS", "a-worker") == (2, 0)  # undelivered, none in flight
    await bus.subscribe("firm.*.synced", handle)
    await backend.settled("JOBS", "a-worker")
    assert sorted(handled) == ["firm.*.synced", "job.created"]
    assert await backend.messages("DLQ") == []


async def test_a_poison_message_without_dead_letter_stream_is_retried_then_left(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, max_deliver=3)
    text = path.read_text().replace("    dead_letter: DLQ\n", "")
    path.write_text(text[: text.index("  DLQ:")])
    outcomes = Outcomes()
    bus = await backend.bus(path, metrics=outcomes)
    seen: list[EventPayload] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        seen.append(payload)

    await bus.subscribe("job.created", handle)
    await bus.subscribe("firm.*.synced", handle)
    await bus.start()
    await backend.inject("JOBS", "jobs.job.created", b"not json")
    await outcomes.wait_for("left")
    # As the server does: retried up to max_deliver (with the backoff), then left in its
    # stream, never dropped at once.
    assert outcomes.counts == Counter({"retried": 2, "left": 1})
    assert [m["data"] for m in await backend.messages("JOBS")] == [b"not json"]
    assert seen == []


async def test_retries_wait_the_declared_backoff_on_every_delivery(
    backend: Backend, tmp_path: Path
) -> None:
    """backoff [100ms, 2s]: the 2nd and 3rd redeliveries come 2 s after the failure, not
    3.9 s (the server adds its backoff to a NAK's delay: consumer.go dates a NAK'd message
    `now - ack_wait + delay`)."""
    path = write_topology(tmp_path, max_deliver=4, backoff="[100ms, 2s]", ack_wait="30s")
    bus = await backend.bus(path, "svc-a")
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, float]] = []

    async def fail(topic: str, payload: EventPayload, delivery: Any) -> None:
        seen.append((delivery.num_delivered, loop.time()))
        raise RuntimeError("downstream is down")

    async def ignore(topic: str, payload: EventPayload) -> None:
        return None

    await bus.subscribe("job.created", fail)
    await bus.subscribe("firm.*.synced", ignore)
    await bus.start()
    assert await bus.publish("job.created", job(1))
    await backend.wait_for_messages("DLQ", 1, within=20)
    assert [n for n, _ in seen] == [1, 2, 3, 4]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(seen)]
    assert gaps[0] < 1.0, gaps
    # 2 s, with room for a loaded machine; the old NAK waited 3.9 s
    assert all(1.9 <= g < 3.0 for g in gaps[1:]), gaps

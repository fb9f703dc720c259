"""The runtime's decisions (docs/runtime.md), each shown on both buses where it concerns
them: schema versions during a rolling deploy, replay to the consumer that failed,
`natstopo dlq` filters, dry run, rate and purge, the handler timeout, the Delivery."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import NatsServer
from test_runtime_support import (
    JOB_SCHEMA,
    Backend,
    backend,
    eventually,
    provision_url,
    stream_messages,
    write_topology,
)

from bus_runtime import Delivery, EventPayload, NATSEventBus, load_topology
from bus_runtime.bus.dead_letters import DeadLetter, parse_when, replay_dead_letters
from bus_runtime.bus.envelope import encode_envelope, schema_field
from bus_runtime.cli.main import main as natstopo

__all__ = ["backend"]  # the fixture, imported for pytest


def job(n: int, **extra: Any) -> EventPayload:
    return EventPayload(data={"n": n, **extra}, actor="svc-a", tenant_id="t-1")


async def nothing(topic: str, payload: EventPayload) -> None:
    pass


# -- schema versions during a rolling deploy -----------------------------------------------
def two_versions(tmp_path: Path) -> tuple[Path, Path]:
    """The same topology twice: v1's schema of job.created refuses what v2 adds (priority)."""
    v1 = write_topology(tmp_path / "v1")
    strict = {**JOB_SCHEMA, "additionalProperties": False}
    (tmp_path / "v1" / "job.json").write_text(json.dumps(strict))
    v2 = write_topology(tmp_path / "v2")
    newer = {
        **strict,
        "properties": {**JOB_SCHEMA["properties"], "priority": {"enum": ["low", "high"]}},
    }
    (tmp_path / "v2" / "job.json").write_text(json.dumps(newer))
    return v1, v2


async def test_a_payload_one_schema_version_ahead_reaches_the_handler(
    backend: Backend, tmp_path: Path
) -> None:
    v1, v2 = two_versions(tmp_path)
    consumer = await backend.bus(v1)  # not upgraded yet
    publisher = await backend.bus(v2, "svc-a")  # upgraded: publishes `priority`
    got: list[tuple[EventPayload, Delivery]] = []

    async def handle(topic: str, payload: EventPayload, delivery: Delivery) -> None:
        got.append((payload, delivery))

    await consumer.subscribe("job.created", handle)
    await consumer.subscribe("firm.*.synced", nothing)
    await consumer.start()
    await publisher.start()
    assert await publisher.publish("job.created", job(1, priority="high"))
    assert await publisher.publish("job.created", job(2))
    await backend.settled("JOBS", "a-worker")
    assert sorted(p.data["n"] for p, _d in got) == [1, 2]
    errors = {p.data["n"]: d.schema_error for p, d in got}
    assert errors[2] is None
    assert errors[1] is not None and "'priority' was unexpected" in errors[1]
    assert await backend.messages("DLQ") == []


async def test_a_payload_that_fails_its_own_publishers_schema_is_dead_lettered_at_once(
    backend: Backend, tmp_path: Path
) -> None:
    v1, _v2 = two_versions(tmp_path)
    consumer = await backend.bus(v1)
    calls: list[EventPayload] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        calls.append(payload)

    await consumer.subscribe("job.created", handle)
    await consumer.subscribe("firm.*.synced", nothing)
    await consumer.start()
    digest = load_topology(v1).topic("job.created").schema_digest
    claims_v1 = encode_envelope("job.created", job(-5), schema_field(digest))
    await backend.inject("JOBS", "jobs.job.created", claims_v1)
    [letter] = await backend.wait_for_messages("DLQ", 1)
    await backend.settled("JOBS", "a-worker")
    assert letter["headers"]["Natstopo-Reason"] == "schema"
    assert letter["headers"]["Natstopo-Deliveries"] == "1"
    assert calls == []


# -- replay reaches the consumer that failed, only ----------------------------------------
async def test_a_replay_is_handled_only_by_the_consumer_it_is_for(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, fanout=True)
    a = await backend.bus(path, "svc-a")
    b = await backend.bus(path, "svc-b")
    seen: Counter[str] = Counter()

    async def on_a(topic: str, payload: EventPayload, delivery: Delivery) -> None:
        seen[f"a:{delivery.replayed_from}"] += 1

    async def on_b(topic: str, payload: EventPayload) -> None:
        seen["b"] += 1

    await a.subscribe("job.created", on_a)
    await a.subscribe("firm.*.synced", nothing)
    await b.subscribe("job.created", on_b)
    await a.start()
    await b.start()
    headers = {
        "Nats-Msg-Id": "replay-1",
        "Natstopo-Replay-For": "a-worker",
        "Natstopo-Replayed-From": "DLQ:7",
    }
    body = encode_envelope("job.created", job(1), schema_field(None))
    await backend.inject("JOBS", "jobs.job.created", body, headers)
    await backend.settled("JOBS", "a-worker")
    await backend.settled("JOBS", "b-worker")
    assert seen == Counter({"a:DLQ:7": 1})


def cli(url: str, path: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = natstopo([*argv, "-s", url, str(path)])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.nats
async def test_dlq_replay_goes_to_the_consumer_that_failed(
    nats_server_each: NatsServer, tmp_path: Path
) -> None:
    url = nats_server_each.url
    path = write_topology(tmp_path, fanout=True)
    await provision_url(url, path)
    a = NATSEventBus(url, topology=str(path), service="svc-a")
    b = NATSEventBus(url, topology=str(path), service="svc-b")
    broken = True
    handled: Counter[str] = Counter()

    async def on_a(topic: str, payload: EventPayload) -> None:
        if broken:
            raise RuntimeError("a's downstream is down")
        handled["a"] += 1

    async def on_b(topic: str, payload: EventPayload) -> None:
        handled["b"] += 1

    await a.subscribe("job.created", on_a)
    await a.subscribe("firm.*.synced", nothing)
    await b.subscribe("job.created", on_b)
    await a.start()
    await b.start()
    try:
        assert await a.publish("job.created", job(1))
        backend = Backend("nats", nats_server_each)
        await backend.wait_for_messages("DLQ", 1)
        await backend.settled("JOBS", "a-worker")
        await backend.settled("JOBS", "b-worker")
        assert handled == Counter({"b": 1})

        code, text, _ = await asyncio.to_thread(cli, url, path, "dlq", "list", "--format", "json")
        [letter] = json.loads(text)
        assert letter["consumer"] == "a-worker"
        code, text, err = await asyncio.to_thread(
            cli, url, path, "dlq", "replay", "--all", "--consumer", "b-worker"
        )
        assert (code, text.splitlines()[-1]) == (0, "0 dead letters replayed"), err

        broken = False
        code, text, err = await asyncio.to_thread(cli, url, path, "dlq", "replay", "--all")
        assert code == 0, err
        assert "for consumer a-worker" in text and "1 dead letter replayed" in text
        await backend.settled("JOBS", "a-worker")
        await backend.settled("JOBS", "b-worker")
        assert handled == Counter({"a": 1, "b": 1})  # b did not handle it a second time
        assert await backend.messages("DLQ") == []
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.nats
async def test_dlq_filters_dry_run_and_purge(nats_server_each: NatsServer, tmp_path: Path) -> None:
    url = nats_server_each.url
    path = write_topology(tmp_path, max_deliver=1, backoff=None)
    await provision_url(url, path)
    bus = NATSEventBus(url, topology=str(path), service="svc-a")

    async def fail(topic: str, payload: EventPayload) -> None:
        raise RuntimeError("no")

    await bus.subscribe("job.created", fail)
    await bus.subscribe("firm.*.synced", nothing)
    await bus.start()
    backend = Backend("nats", nats_server_each)
    try:
        assert await bus.publish("job.created", job(1))
        await backend.inject("JOBS", "jobs.job.created", b"not json")
        await backend.inject("JOBS", "jobs.job.created", b"[1]")
        await backend.wait_for_messages("DLQ", 3)
        await backend.settled("JOBS", "a-worker")
        before = await stream_messages(bus.nc, "JOBS")

        def listed(*filters: str) -> list[str]:
            code, text, err = cli(url, path, "dlq", "list", "--format", "json", *filters)
            assert code == 0, err
            return sorted(d["reason"] for d in json.loads(text))

        assert await asyncio.to_thread(listed) == ["handler-failed", "not-an-object", "not-json"]
        assert await asyncio.to_thread(listed, "--reason", "not-json") == ["not-json"]
        assert await asyncio.to_thread(
            listed, "--reason", "not-json", "--reason", "handler-failed"
        ) == ["handler-failed", "not-json"]
        assert await asyncio.to_thread(listed, "--since", "1h") == [
            "handler-failed",
            "not-an-object",
            "not-json",
        ]
        assert await asyncio.to_thread(listed, "--until", "1h") == []
        assert await asyncio.to_thread(listed, "--since", "2099-01-01T00:00:00Z") == []

        code, text, err = await asyncio.to_thread(
            cli, url, path, "dlq", "replay", "--all", "--reason", "handler-failed", "--dry-run"
        )
        assert code == 0, err
        assert text.splitlines()[-1] == "1 dead letter would be replayed (dry run: nothing sent)"
        assert "would replay DLQ #" in text
        assert await stream_messages(bus.nc, "JOBS") == before  # nothing sent
        assert len(await backend.messages("DLQ")) == 3

        code, text, err = await asyncio.to_thread(
            cli, url, path, "dlq", "purge", "--all", "--reason", "not-json", "--dry-run"
        )
        assert (code, text.strip()) == (
            0,
            "1 dead letter would be deleted (dry run: nothing deleted)",
        )
        assert len(await backend.messages("DLQ")) == 3
        code, text, err = await asyncio.to_thread(
            cli, url, path, "dlq", "purge", "--all", "--reason", "not-json"
        )
        assert (code, text.strip()) == (0, "1 dead letter deleted"), err
        assert await asyncio.to_thread(listed) == ["handler-failed", "not-an-object"]
        code, text, err = await asyncio.to_thread(cli, url, path, "dlq", "purge")
        assert code == 1 and "give --seq N (repeatable) or --all" in err
        code, text, err = await asyncio.to_thread(
            cli, url, path, "dlq", "purge", "--all", "--origin", "JOBS"
        )
        assert (code, text.strip()) == (0, "2 dead letters deleted"), err
        assert await backend.messages("DLQ") == []
        code, text, err = await asyncio.to_thread(
            cli, url, path, "dlq", "list", "--consumer", "nobody"
        )
        assert code == 1 and "consumer `nobody` is not declared" in err
    finally:
        await bus.stop()


async def test_replay_rate_spaces_the_replays(tmp_path: Path) -> None:
    topology = load_topology(write_topology(tmp_path))
    letters = [
        DeadLetter("DLQ", i, "JOBS", "jobs.job.created", i, "a-worker", 3, "x", "e", None, None)
        for i in range(1, 6)
    ]
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    sent = await replay_dead_letters(
        None,  # type: ignore[arg-type]  # a dry run sends nothing
        topology,
        letters,
        rate=4,
        dry_run=True,
        sleep=record,
    )
    assert sent == 5 and pauses == [0.25] * 4


def test_time_filters_take_rfc3339_and_durations_ago() -> None:
    import datetime

    now = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
    assert parse_when("2h", now) == datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC)
    assert parse_when("2026-11-29T08:15:00Z") == datetime.datetime(
        2026, 11, 29, 8, 15, tzinfo=datetime.UTC
    )


# -- the handler timeout -----------------------------------------------------------------------
async def test_a_hung_handler_is_cancelled_at_its_timeout_then_dead_lettered(
    backend: Backend, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, max_deliver=2, backoff="[100ms]")
    path.write_text(
        path.read_text().replace(
            "        concurrency: 4\n", "        concurrency: 4\n        handler_timeout: 300ms\n"
        )
    )
    assert load_topology(path).stream("JOBS").consumer("a-worker").handler_timeout == 300_000_000
    bus = await backend.bus(path)
    cancelled: list[int] = []

    async def hangs(topic: str, payload: EventPayload, delivery: Delivery) -> None:
        try:
            await asyncio.Event().wait()  # forever
        except asyncio.CancelledError:
            cancelled.append(delivery.num_delivered)
            raise

    await bus.subscribe("job.created", hangs)
    await bus.subscribe("firm.*.synced", nothing)
    await bus.start()
    assert await bus.publish("job.created", job(1))
    [letter] = await backend.wait_for_messages("DLQ", 1)
    await backend.settled("JOBS", "a-worker")
    assert cancelled == [1, 2]
    assert letter["headers"]["Natstopo-Reason"] == "handler-failed"
    assert letter["headers"]["Natstopo-Error"].startswith(
        "HandlerTimeout: handler ran longer than handler_timeout 0.3s of consumer `a-worker`"
    )


# -- the Delivery ------------------------------------------------------------------------------
async def test_a_handler_may_take_the_delivery(backend: Backend, tmp_path: Path) -> None:
    path = write_topology(tmp_path, max_deliver=3)
    bus = await backend.bus(path)
    deliveries: list[Delivery] = []

    async def handle(topic: str, payload: EventPayload, delivery: Delivery) -> None:
        deliveries.append(delivery)
        if not delivery.is_last:
            raise RuntimeError("until the last delivery")

    await bus.subscribe("job.created", nothing)
    await bus.subscribe("firm.*.synced", handle)
    await bus.start()
    sent = job(4)
    assert await bus.publish("firm.*.synced", sent, tokens=["iris"])
    await eventually(lambda: len(deliveries) == 3, what="three deliveries")
    await backend.settled("JOBS", "a-firms")
    assert [d.num_delivered for d in deliveries] == [1, 2, 3]
    assert [d.is_last for d in deliveries] == [False, False, True]
    last = deliveries[-1]
    assert (last.topic, last.subject, last.stream, last.consumer) == (
        "firm.*.synced",
        "jobs.firm.iris.synced",
        "JOBS",
        "a-firms",
    )
    assert last.headers["Nats-Msg-Id"] == sent.event_id
    assert last.stream_seq == 1 and last.max_deliver == 3
    assert last.replayed_from is None and last.schema_error is None
    assert await backend.messages("DLQ") == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["dlq", "list", "--limit", "0"], "expected at least 1"),
        (["dlq", "list", "--limit", "-1"], "expected at least 1"),
        (["dlq", "list", "--since", "99999999d"], "before year 1"),
        (["dlq", "replay", "--seq", "1", "--all"], "exclude each other"),
        (["dlq", "purge", "--seq", "1", "--all"], "exclude each other"),
    ],
)
def test_dlq_arguments_that_cannot_mean_anything_are_refused_before_connecting(
    tmp_path: Path, argv: list[str], words: str
) -> None:
    path = write_topology(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = natstopo([*argv, "-s", "nats://127.0.0.1:1", str(path)])
        except SystemExit as exc:  # argparse's own exit
            code = int(exc.code or 0)
    assert code != 0
    assert words in err.getvalue(), err.getvalue()
    assert "Traceback" not in err.getvalue()

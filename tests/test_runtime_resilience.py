"""The NATS bus under failure: a consumer killed mid-batch, a server restart while publishing,
a cluster node lost during publish and consume, graceful stop, long handlers, the
start-up check, and `natstopo dlq`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
import textwrap
from collections import Counter
from pathlib import Path

import nats
import pytest
from harness import NatsCluster, NatsServer
from test_runtime_support import eventually, provision_url, stream_messages, write_topology

from bus_runtime import (
    BusMetrics,
    EventPayload,
    NATSEventBus,
    StartupCheckError,
    load_topology,
)
from bus_runtime.cli.main import main as natstopo

pytestmark = pytest.mark.nats

REPO = Path(__file__).resolve().parent.parent


def job(n: int, **extra: object) -> EventPayload:
    return EventPayload(data={"n": n, **extra}, actor="svc-a", tenant_id="t-1")


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from bus_runtime import create_event_bus

    async def main(url, topology, out):
        bus = create_event_bus("nats", servers=url, topology=topology, service="svc-a")
        await bus.start()
        log = open(out, "a", buffering=1)

        async def handle(topic, payload):
            log.write(payload.event_id + "\\n")  # started, not yet acked
            await asyncio.sleep(0.2)

        await bus.subscribe("job.created", handle)
        await asyncio.sleep(3600)

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_consumer_killed_mid_batch_its_messages_go_to_the_next(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, ack_wait="2s", backoff=None, fetch_batch=10, concurrency=4)
    await provision_url(nats_server.url, path)
    bus = NATSEventBus(nats_server.url, topology=str(path), service="svc-a")
    await bus.start()
    sent = [job(i) for i in range(60)]
    assert all(await bus.publish_many("job.created", sent))

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    started_log = tmp_path / "started.txt"
    started_log.touch()
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), nats_server.url, str(path), str(started_log), cwd=REPO
    )
    try:
        await eventually(
            lambda: len(started_log.read_text().split()) >= 12, within=30, what="child at work"
        )
    finally:
        child.kill()  # SIGKILL: no stop(), no acks, a crash
        await child.wait()
    started_by_child = set(started_log.read_text().split())

    handled: Counter[str] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        handled[payload.event_id] += 1

    await bus.subscribe("job.created", handle)
    everything = {p.event_id for p in sent}
    await eventually(
        lambda: (set(handled) | started_by_child) == everything, within=30, what="every event"
    )
    js = bus.nc.jetstream()
    # The child's unacked messages (its handlers were sleeping when it died) come back after
    # ack_wait: the server has nothing pending or unacknowledged only once they did.
    for _ in range(300):
        info = await js.consumer_info("JOBS", "a-worker")
        if info.num_ack_pending == 0 and info.num_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert set(handled) & started_by_child
    assert set(handled.values()) == {1}
    await bus.stop()


async def test_server_restart_while_publishing_each_true_publish_stored_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = write_topology(tmp_path)
    await provision_url(nats_server.url, path)
    bus = NATSEventBus(
        nats_server.url,
        topology=str(path),
        service="svc-a",
        publish_timeout=1.0,
        publish_retry_for=30.0,
    )
    await bus.start()
    outcomes: dict[str, bool] = {}
    progress = asyncio.Event()

    async def publish_all() -> None:
        for chunk in range(40):
            payloads = [job(chunk * 10 + i) for i in range(10)]
            results = await asyncio.gather(*(bus.publish("job.created", p) for p in payloads))
            outcomes.update({p.event_id: ok for p, ok in zip(payloads, results, strict=True)})
            if chunk == 8:
                progress.set()
            await asyncio.sleep(0.01)

    publisher = asyncio.create_task(publish_all())
    await progress.wait()
    await asyncio.to_thread(nats_server.restart)
    await asyncio.wait_for(publisher, 90)
    ok_ids = {e for e, ok in outcomes.items() if ok}
    assert len(ok_ids) >= 390  # the retries rode out the restart
    stored = Counter(
        json.loads(m["data"])["event_id"] for m in await stream_messages(bus.nc, "JOBS")
    )
    assert ok_ids <= set(stored)
    assert max(stored.values()) == 1  # stored once, retries deduplicated
    await bus.stop()


async def test_graceful_stop_hands_over_without_loss_or_double(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # No backoff: with one, the server's ack wait is backoff[0] (100 ms here), and on a
    # loaded machine a fetched message can legitimately come back before its ack: that is
    # at-least-once delivery, not the hand-over this test is about.
    path = write_topology(tmp_path, fetch_batch=20, concurrency=4, backoff=None)
    await provision_url(nats_server.url, path)
    handled: Counter[str] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        await asyncio.sleep(0.005)
        handled[payload.event_id] += 1

    first = NATSEventBus(nats_server.url, topology=str(path), service="svc-a", pull_expires=0.5)
    await first.start()
    sent = [job(i) for i in range(300)]
    assert all(await first.publish_many("job.created", sent))
    await first.subscribe("job.created", handle)
    await eventually(lambda: len(handled) >= 60, what="first consumer at work")
    await first.stop()
    by_first = sum(handled.values())
    assert by_first < 300
    second = NATSEventBus(nats_server.url, topology=str(path), service="svc-a")
    await second.start()
    await second.subscribe("job.created", handle)
    await eventually(lambda: len(handled) == 300, what="all 300 handled")
    await asyncio.sleep(2.5)  # past ack_wait (2s): a message lost in the hand-over would be back
    assert set(handled.values()) == {1}
    await second.stop()


async def test_long_handler_kept_alive_with_in_progress(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, ack_wait="2s", backoff=None, fetch_batch=5, concurrency=1)
    await provision_url(nats_server.url, path)
    bus = NATSEventBus(nats_server.url, topology=str(path), service="svc-a")
    await bus.start()
    calls: Counter[int] = Counter()

    async def slow(topic: str, payload: EventPayload) -> None:
        calls[payload.data["n"]] += 1
        await asyncio.sleep(3.0)  # past ack_wait; the second message waits behind it too

    await bus.subscribe("job.created", slow)
    assert all(await bus.publish_many("job.created", [job(1), job(2)]))
    await eventually(lambda: sum(calls.values()) >= 2, within=20)
    await asyncio.sleep(2.5)
    assert calls == Counter({1: 1, 2: 1})
    info = await bus.nc.jetstream().consumer_info("JOBS", "a-worker")
    assert info.num_redelivered == 0
    await bus.stop()


def _impatient_bus(url: str, path: Path) -> NATSEventBus:
    """A bus of svc-a that gives a publish up after 1.5 s (each send waits 0.3 s)."""
    return NATSEventBus(
        url,
        topology=str(path),
        service="svc-a",
        startup_check="off",
        publish_timeout=0.3,
        publish_retry_for=1.5,
    )


async def test_publish_gives_up_with_false_when_nothing_stores_it(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_topology(tmp_path)  # not provisioned: no stream answers
    bus = _impatient_bus(nats_server.url, path)
    await bus.start()
    with caplog.at_level(logging.ERROR, logger="bus_runtime.bus"):
        p = job(1)
        assert await bus.publish("job.created", p) is False
    assert any(p.event_id in r.getMessage() and "gave up" in r.getMessage() for r in caplog.records)
    await bus.stop()


@pytest.mark.parametrize("answer", [b"ok", b"not json at all", b'{"error": "nope"}', b"[1]"])
async def test_an_answer_that_is_not_a_streams_is_not_taken_as_stored(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: bytes
) -> None:
    path = write_topology(tmp_path)
    nc = await nats.connect(nats_server.url)

    async def respond(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(answer)

    await nc.subscribe("jobs.job.created", cb=respond)  # a core NATS service, no stream
    await nc.flush()
    bus = _impatient_bus(nats_server.url, path)
    await bus.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bus_runtime.bus"):
            assert await asyncio.wait_for(bus.publish("job.created", job(1)), 30) is False
        warned = [r for r in caplog.records if "not a JetStream stream" in r.getMessage()]
        assert len(warned) == 1  # once per subject, however many sends
        # with the stream provisioned beside the responder, the stream's PubAck decides
        await provision_url(nats_server.url, path)
        assert await asyncio.wait_for(bus.publish("job.created", job(2)), 30) is True
        stored = await stream_messages(nc, "JOBS")
        assert [json.loads(m["data"])["data"]["n"] for m in stored] == [2]
    finally:
        await bus.stop()
        await nc.close()


async def test_startup_check_refuses_differences_and_auto_provision_applies(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    declared = write_topology(tmp_path / "a", max_deliver=3)
    changed = write_topology(tmp_path / "b", max_deliver=5)

    missing = NATSEventBus(nats_server.url, topology=str(declared), service="svc-a")
    with pytest.raises(StartupCheckError) as ei:
        await missing.start()
    assert "a-worker" in str(ei.value) and "JOBS" in str(ei.value)

    await provision_url(nats_server.url, declared)
    drifted = NATSEventBus(nats_server.url, topology=str(changed), service="svc-a")
    with pytest.raises(StartupCheckError, match="max_deliver"):
        await drifted.start()
    assert drifted.nc is None  # the connection was closed

    with caplog.at_level(logging.WARNING, logger="bus_runtime.bus"):
        warned = NATSEventBus(
            nats_server.url, topology=str(changed), service="svc-a", startup_check="warn"
        )
        await warned.start()
        await warned.stop()
    assert any("differs from the topology" in r.getMessage() for r in caplog.records)

    provisioned = NATSEventBus(
        nats_server.url, topology=str(changed), service="svc-a", auto_provision=True
    )
    await provisioned.start()
    info = await provisioned.nc.jetstream().consumer_info("JOBS", "a-worker")
    assert info.config.max_deliver == 5
    await provisioned.stop()
    clean = NATSEventBus(nats_server.url, topology=load_topology(changed), service="svc-a")
    await clean.start()
    await clean.stop()


async def test_dlq_list_and_replay(nats_server: NatsServer, tmp_path: Path) -> None:
    path = write_topology(tmp_path)
    await provision_url(nats_server.url, path)
    bus = NATSEventBus(nats_server.url, topology=str(path), service="svc-a")
    await bus.start()
    broken = True
    handled: list[int] = []

    async def handle(topic: str, payload: EventPayload) -> None:
        if broken:
            raise RuntimeError("downstream is down")
        handled.append(payload.data["n"])

    await bus.subscribe("job.created", handle)
    assert all(await bus.publish_many("job.created", [job(1), job(2)]))

    async def dead() -> list[dict[str, object]]:
        return await stream_messages(bus.nc, "DLQ")

    for _ in range(300):
        if len(await dead()) == 2:
            break
        await asyncio.sleep(0.05)

    def cli(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = natstopo([*argv, "-s", nats_server.url, str(path)])
        return code, out.getvalue()

    code, text = await asyncio.to_thread(cli, "dlq", "list", "--format", "json")
    assert code == 0
    letters = json.loads(text)
    assert [d["data"]["data"]["n"] for d in letters] == [1, 2]
    assert letters[0]["stream"] == "JOBS" and letters[0]["consumer"] == "a-worker"
    assert letters[0]["deliveries"] == 3 and letters[0]["reason"] == "handler-failed"
    assert letters[0]["error"] == "RuntimeError: downstream is down"
    code, text = await asyncio.to_thread(cli, "dlq", "list")
    assert "2 dead letters" in text and "downstream is down" in text

    broken = False
    code, text = await asyncio.to_thread(cli, "dlq", "replay", "--seq", str(letters[0]["dlq_seq"]))
    assert code == 0 and "1 dead letter replayed" in text
    await eventually(lambda: handled == [1])
    assert len(await dead()) == 1
    code, text = await asyncio.to_thread(cli, "dlq", "replay", "--all")
    assert code == 0
    await eventually(lambda: sorted(handled) == [1, 2])
    assert await dead() == []
    await bus.stop()


class Recorder(BusMetrics):
    def __init__(self) -> None:
        self.published_ok: Counter[bool] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.dead: list[str] = []

    def published(self, topic: str, ok: bool, seconds: float, attempts: int) -> None:
        self.published_ok[ok] += 1

    def handled(self, topic: str, consumer: str, outcome: str, seconds: float) -> None:
        self.outcomes[outcome] += 1

    def dead_lettered(self, stream: str, consumer: str, reason: str) -> None:
        self.dead.append(reason)


async def test_metrics_hook_sees_every_outcome(nats_server: NatsServer, tmp_path: Path) -> None:
    path = write_topology(tmp_path)
    await provision_url(nats_server.url, path)
    metrics = Recorder()
    bus = NATSEventBus(nats_server.url, topology=str(path), service="svc-a", metrics=metrics)
    await bus.start()

    async def handle(topic: str, payload: EventPayload) -> None:
        if payload.data.get("fail"):
            raise RuntimeError("no")

    await bus.subscribe("job.created", handle)
    assert all(await bus.publish_many("job.created", [job(1), job(2, fail="yes")]))
    await eventually(lambda: metrics.dead == ["handler-failed"])
    assert metrics.outcomes == Counter({"acked": 1, "retried": 2, "dead_lettered": 1})
    assert metrics.published_ok == Counter({True: 3})  # two events and one dead letter
    await bus.stop()


@pytest.mark.cluster
@pytest.mark.slow
async def test_cluster_node_killed_and_restarted_during_publish_and_consume(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, replicas=3, ack_wait="3s", backoff=None)
    await provision_url(nats_cluster.urls, path)
    bus = NATSEventBus(
        nats_cluster.urls,
        topology=str(path),
        service="svc-a",
        publish_timeout=1.0,
        publish_retry_for=60.0,
    )
    await bus.start()
    handled: Counter[str] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        handled[payload.event_id] += 1

    await bus.subscribe("job.created", handle)
    outcomes: dict[str, bool] = {}
    halfway = asyncio.Event()

    async def publish_all() -> None:
        for chunk in range(60):
            payloads = [job(chunk * 10 + i) for i in range(10)]
            results = await asyncio.gather(*(bus.publish("job.created", p) for p in payloads))
            outcomes.update({p.event_id: ok for p, ok in zip(payloads, results, strict=True)})
            if chunk == 15:
                halfway.set()
            await asyncio.sleep(0.02)

    publisher = asyncio.create_task(publish_all())
    await halfway.wait()
    assert bus.nc is not None and bus.nc.connected_url is not None
    port = bus.nc.connected_url.port
    victim = next(n for n in nats_cluster.nodes if n.port == port)
    await asyncio.to_thread(victim.kill)
    await asyncio.sleep(2.0)
    await asyncio.to_thread(victim.start)
    await asyncio.wait_for(publisher, 120)
    ok_ids = {e for e, ok in outcomes.items() if ok}
    assert len(ok_ids) == 600
    await eventually(lambda: ok_ids <= set(handled), within=60, what="every event handled")
    await bus.stop()
    nc = await nats.connect(servers=nats_cluster.urls)
    info = await nc.jetstream().stream_info("JOBS")
    assert info.state.last_seq == 600  # no retry stored twice
    await nc.close()


async def test_consuming_continues_after_a_server_restart(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = write_topology(tmp_path, ack_wait="2s", backoff=None)
    await provision_url(nats_server.url, path)
    bus = NATSEventBus(nats_server.url, topology=str(path), service="svc-a", publish_timeout=1.0)
    await bus.start()
    handled: Counter[int] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        handled[payload.data["n"]] += 1

    await bus.subscribe("job.created", handle)
    assert all(await bus.publish_many("job.created", [job(i) for i in range(50)]))
    await eventually(lambda: len(handled) == 50)
    await asyncio.to_thread(nats_server.restart)
    assert all(await bus.publish_many("job.created", [job(i) for i in range(50, 100)]))
    await eventually(lambda: len(handled) == 100, within=30, what="handled after the restart")
    # (an ack in flight at the restart may bring one message back: at least once)
    assert all(handled[i] == 1 for i in range(50, 100))
    await bus.stop()


async def test_cancelled_publishes_give_their_window_place_back(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = write_topology(tmp_path)  # not provisioned yet: every send meets no responders
    bus = NATSEventBus(
        nats_server.url,
        topology=str(path),
        service="svc-a",
        startup_check="off",
        max_in_flight=2,
        publish_retry_for=0.5,
    )
    await bus.start()
    tasks = [asyncio.create_task(bus.publish("job.created", job(i))) for i in range(4)]
    await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await provision_url(nats_server.url, path)
    await asyncio.sleep(0.8)  # the cancelled ones run out of retries
    assert await asyncio.wait_for(bus.publish("job.created", job(9)), 5) is True
    await bus.stop()


async def test_structured_log_fields(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_topology(tmp_path, max_deliver=2)
    await provision_url(nats_server.url, path)
    caplog.set_level(logging.DEBUG, logger="bus_runtime.bus")
    bus = NATSEventBus(nats_server.url, topology=str(path), service="svc-a")
    await bus.start()

    async def fail(topic: str, payload: EventPayload) -> None:
        raise KeyError("missing thing")

    await bus.subscribe("job.created", fail)
    sent = EventPayload({"n": 1}, actor="svc-a", tenant_id="t-1", trace_id="trace-1")
    assert await bus.publish("job.created", sent)
    await eventually(lambda: any("dead-lettered" in r.getMessage() for r in caplog.records))
    await bus.stop()
    published = next(r for r in caplog.records if r.getMessage().startswith("published"))
    assert published.event_id == sent.event_id  # type: ignore[attr-defined]
    assert published.stream_seq == 1  # type: ignore[attr-defined]
    retried = next(r for r in caplog.records if "redelivery in" in r.getMessage())
    assert retried.levelno == logging.WARNING
    fields = {k: getattr(retried, k) for k in ("event_id", "topic", "stream", "consumer")}
    assert fields == {
        "event_id": sent.event_id,
        "topic": "job.created",
        "stream": "JOBS",
        "consumer": "a-worker",
    }
    assert retried.stream_seq == 1 and retried.num_delivered == 1  # type: ignore[attr-defined]
    assert retried.trace_id == "trace-1"  # type: ignore[attr-defined]


async def test_a_publish_nothing_answers_is_warned_of_once_per_subject(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No stream takes the subject (not provisioned, or an import a reload left dead): the
    retries are at debug, but after 2 s one warning per subject says what to check."""
    path = write_topology(tmp_path)  # not provisioned: every send meets no responders
    caplog.set_level(logging.WARNING, logger="bus_runtime")
    bus = NATSEventBus(
        nats_server.url,
        topology=str(path),
        service="svc-a",
        startup_check="off",
        publish_retry_for=3.0,
    )
    await bus.start()
    try:
        sent = await asyncio.gather(*(bus.publish("job.created", job(i)) for i in range(3)))
    finally:
        await bus.stop()
    assert sent == [False, False, False]
    warned = [r for r in caplog.records if "no stream has answered" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert warned[0].levelno == logging.WARNING and "job.created" in warned[0].getMessage()
    assert "needs a server restart" in warned[0].getMessage()

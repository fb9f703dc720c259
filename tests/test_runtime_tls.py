"""The bus over mutual TLS: its own writes into nats-py's buffer, the pull request handed
to the socket at once and its own reader of deliveries take the same path over a TLS
socket as over plain TCP; every event published is stored once, in order, and handled
once."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from harness import NatsServer, available_servers, make_test_pki
from test_runtime_support import eventually, provision, stream_messages, write_topology

from bus_runtime import EventPayload, NATSEventBus, load_topology
from bus_runtime.jetstream.connect import ConnectOptions

pytestmark = [
    pytest.mark.nats,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


@pytest.fixture(
    params=[available_servers()[0], available_servers()[-1]], ids=lambda b: f"nats-{b.version_str}"
)
def tls_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatsServer]:
    d = tmp_path / "pki"
    make_test_pki(d)
    store = tmp_path / "store"
    store.mkdir()
    conf = (
        f'tls {{ cert_file: "{d}/server.pem", key_file: "{d}/server.key", '
        f'ca_file: "{d}/ca.pem", verify: true }}'
    )
    server = NatsServer(request.param, "tls", store, extra_conf=conf)
    server.start()
    try:
        server.wait_jetstream()
        yield server
    finally:
        server.stop()


async def test_publish_and_consume_over_mutual_tls(tls_server: NatsServer, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    options = ConnectOptions(
        servers=(f"tls://127.0.0.1:{tls_server.port}",),
        tls_ca=str(pki / "ca.pem"),
        tls_cert=str(pki / "client.pem"),
        tls_key=str(pki / "client.key"),
    )
    # No 100 ms backoff (the suite's default topology has one): a delivery not acked in
    # time is sent again, by design, and a busy machine would make duplicates of the first
    # batch while publish_many holds the loop. Every ack must reach the server: checked
    # on the consumer below.
    path = write_topology(
        tmp_path / "t", fetch_batch=50, concurrency=8, ack_wait="30s", backoff=None
    )
    path.write_text(path.read_text().replace("retention: interest", "retention: limits"))
    nc = await nats.connect(servers=list(options.servers), tls=options.tls_context())
    await provision(nc, load_topology(path))
    bus = NATSEventBus(topology=str(path), service="svc-a", connection=options)
    handled: Counter[int] = Counter()

    async def handle(topic: str, payload: EventPayload) -> None:
        handled[payload.data["n"]] += 1

    async def nothing(topic: str, payload: EventPayload) -> None:
        pass

    await bus.subscribe("job.created", handle)
    await bus.subscribe("firm.*.synced", nothing)
    await bus.start()
    try:
        assert type(bus.nc._transport).__name__ == "TcpTransport"  # the outbox's plain case
        assert bus.nc._transport._io_writer.get_extra_info("ssl_object") is not None
        n = 3000
        payloads = [EventPayload({"n": i}, actor="svc-a", tenant_id="t") for i in range(n)]
        assert await asyncio.wait_for(bus.publish_many("job.created", payloads), 60) == [True] * n
        await eventually(lambda: len(handled) == n, within=60, what=f"{n} handled")
        js = nc.jetstream()
        async with asyncio.timeout(30):  # every ack at the server: none lost on the way
            while (info := await js.consumer_info("JOBS", "a-worker")).num_ack_pending:  # noqa: ASYNC110 - the server's count, polled
                await asyncio.sleep(0.05)
        assert info.delivered.consumer_seq == n  # each delivered once
        assert info.num_redelivered == 0
    finally:
        await bus.stop()
    stored = await stream_messages(nc, "JOBS")
    await nc.close()
    assert [json.loads(m["data"])["data"]["n"] for m in stored] == list(range(n))
    assert set(handled.values()) == {1}

"""The model's JetStream configs are what a real server accepts and reads back.

Every stream and consumer of the shipped topology is created from `to_stream_config()` /
`to_consumer_config()` through the raw JetStream API, then read back: every key the model
produced must come back with the same value. Runs on each available server version (2.10
and the newest), on a single server (replicas forced to 1) and a 3-node cluster (3).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import nats
import pytest
from harness import NatsCluster, NatsServer

from bus_runtime import Topology, load_topology

pytestmark = pytest.mark.nats

SHIPPED = Path(__file__).resolve().parent.parent / "topology" / "topology.yaml"


def with_replicas(topology: Topology, replicas: int) -> Topology:
    streams = []
    for s in topology.streams:
        consumers = tuple(
            dataclasses.replace(c, replicas=replicas if c.replicas is not None else None)
            for c in s.consumers
        )
        streams.append(dataclasses.replace(s, replicas=replicas, consumers=consumers))
    return dataclasses.replace(topology, streams=tuple(streams))


async def api(nc: nats.NATS, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = await nc.request(subject, json.dumps(body or {}).encode(), timeout=10)
    reply: dict[str, Any] = json.loads(msg.data)
    assert "error" not in reply, f"{subject}: {reply['error']}"
    return reply


async def create_and_read_back(servers: list[str], topology: Topology) -> int:
    """Create every asset, compare what the server reads back; returns assets checked."""
    nc = await nats.connect(servers=servers)
    checked = 0
    try:
        for stream, consumer in topology.iter_assets():
            if consumer is None:
                want = stream.to_stream_config()
                reply = await api(nc, f"$JS.API.STREAM.CREATE.{stream.name}", want)
                info = await api(nc, f"$JS.API.STREAM.INFO.{stream.name}")
                got = info["config"]
                assert reply["config"]["name"] == stream.name
            else:
                want = consumer.to_consumer_config()
                subject = f"$JS.API.CONSUMER.CREATE.{stream.name}.{consumer.name}"
                await api(nc, subject, {"stream_name": stream.name, "config": want})
                info = await api(nc, f"$JS.API.CONSUMER.INFO.{stream.name}.{consumer.name}")
                got = info["config"]
            differing = {k: (v, got.get(k)) for k, v in want.items() if got.get(k) != v}
            where = stream.name if consumer is None else f"{stream.name}/{consumer.name}"
            assert not differing, f"{where}: model -> server differ: {differing}"
            checked += 1
    finally:
        await nc.close()
    return checked


async def test_shipped_topology_round_trips_on_single_server(nats_server_each: NatsServer) -> None:
    topology = with_replicas(load_topology(SHIPPED), 1)
    n = await create_and_read_back([nats_server_each.url], topology)
    assert n == len(topology.streams) + len(topology.consumers)
    assert n >= 3 + 10


@pytest.mark.cluster
async def test_shipped_topology_round_trips_on_cluster_r3(nats_cluster_each: NatsCluster) -> None:
    topology = with_replicas(load_topology(SHIPPED), 3)
    n = await create_and_read_back(nats_cluster_each.urls, topology)
    assert n == len(topology.streams) + len(topology.consumers)


@pytest.mark.parametrize("env", ["local", "dev", "staging", "prod"])
async def test_every_environment_is_accepted(nats_server: NatsServer, env: str) -> None:
    topology = with_replicas(load_topology(SHIPPED, env), 1)
    n = await create_and_read_back([nats_server.url], topology)
    assert n == len(topology.streams) + len(topology.consumers)

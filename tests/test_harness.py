"""The harness itself: servers start on free ports, a cluster elects a meta leader."""

from __future__ import annotations

import nats
import pytest
from harness import NatsCluster, NatsServer

pytestmark = pytest.mark.nats


async def test_single_server_has_jetstream(nats_server_each: NatsServer) -> None:
    nc = await nats.connect(nats_server_each.url)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
        assert nc.connected_server_version.major == nats_server_each.version[0]
        assert nc.connected_server_version.minor == nats_server_each.version[1]
    finally:
        await nc.close()


@pytest.mark.cluster
async def test_cluster_elects_meta_leader_and_places_r3(nats_cluster_each: NatsCluster) -> None:
    nc = await nats.connect(servers=nats_cluster_each.urls)
    try:
        js = nc.jetstream()
        si = await js.add_stream(name="HARNESS", subjects=["harness.>"], num_replicas=3)
        assert si.config.num_replicas == 3
        assert si.cluster is not None and si.cluster.leader
        assert len(si.cluster.replicas or []) == 2
    finally:
        await nc.close()


async def test_server_restart_keeps_store(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name="KEEP", subjects=["keep.>"])
    await js.publish("keep.a", b"x")
    await nc.close()
    nats_server.restart()
    nc = await nats.connect(nats_server.url)
    try:
        si = await nc.jetstream().stream_info("KEEP")
        assert si.state.messages == 1
    finally:
        await nc.close()

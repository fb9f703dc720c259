"""Helpers shared by the reconciler's tests: small topologies, raw API edits, connections."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from bus_runtime.topology.loader import load_topology, parse_topology
from bus_runtime.topology.model import Topology

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "topology" / "topology.yaml"
sys.path.insert(0, str(REPO / "benchmarks"))  # generate_topology, for scale cases

# A small topology: a limits stream with two consumers, a work-queue stream with one.
SHOP = """\
version: 1
name: shop
services:
  svc-web: {}
  svc-billing: {}
  svc-mail: {}
streams:
  ORDERS:
    subject_prefix: orders
    retention: limits
    storage: file
    max_age: 7d
    max_bytes: 64MiB
    topics:
      created: {publishers: [svc-web]}
      paid: {publishers: [svc-billing]}
    consumers:
      billing:
        service: svc-billing
        topics: [created]
        max_deliver: 5
        backoff: [1s, 5s]
      mail:
        service: svc-mail
        topics: [created, paid]
  JOBS:
    subject_prefix: jobs
    retention: workqueue
    max_bytes: 16MiB
    topics:
      invoice.render: {publishers: [svc-billing]}
    consumers:
      renderer: {service: svc-billing, topics: [invoice.render]}
"""


def topology_from_text(text: str, name: str = "shop.yaml") -> Topology:
    topology, errors = parse_topology(text, name)
    assert not errors, "\n".join(map(str, errors))
    assert topology is not None
    return topology


def shop(**replace: str) -> Topology:
    """The SHOP topology with text replacements (`old=new` pairs given as a dict)."""
    text = SHOP
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return topology_from_text(text)


def shop_edit(*pairs: tuple[str, str]) -> Topology:
    text = SHOP
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return topology_from_text(text)


def shipped(env: str | None = "local") -> Topology:
    return load_topology(SHIPPED, env)


# An environment for the 3-node test cluster: replicas 3 (as the base), sizes that fit
# the harness's 2GB file store per node.
CLUSTER_ENV = """\
  ci-cluster:
    description: The test harness's 3-node cluster.
    defaults:
      stream: {replicas: 3, max_age: 1d}
    streams:
      TAX_AGENT_JOBS: {max_bytes: 256MiB}
      TAX_AGENT_EVENTS: {max_bytes: 256MiB}
      TAX_AGENT_DLQ: {max_bytes: 64MiB}
"""


def shipped_copy(tmp: Path, extra_env: str = CLUSTER_ENV) -> Path:
    """A copy of the shipped topology (with its schemas) plus an extra environment."""
    dest = tmp / "topology"
    shutil.copytree(SHIPPED.parent, dest)
    path = dest / "topology.yaml"
    text = path.read_text()
    assert "\nenvironments:\n" in text
    path.write_text(text.replace("\nenvironments:\n", "\nenvironments:\n" + extra_env, 1))
    return path


async def api(nc: Client, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A raw JetStream API request; fails the test on an API error."""
    msg = await nc.request(
        f"$JS.API.{subject}", json.dumps(body).encode() if body is not None else b"", timeout=10
    )
    data: dict[str, Any] = json.loads(msg.data)
    assert "error" not in data, data["error"]
    return data


async def stream_config(nc: Client, name: str) -> dict[str, Any]:
    return dict((await api(nc, f"STREAM.INFO.{name}"))["config"])


async def consumer_config(nc: Client, stream: str, name: str) -> dict[str, Any]:
    return dict((await api(nc, f"CONSUMER.INFO.{stream}.{name}"))["config"])


async def edit_stream(nc: Client, name: str, **changes: Any) -> None:
    cfg = await stream_config(nc, name)
    cfg.update(changes)
    await api(nc, f"STREAM.UPDATE.{name}", cfg)


async def edit_consumer(nc: Client, stream: str, name: str, **changes: Any) -> None:
    cfg = await consumer_config(nc, stream, name)
    cfg.update(changes)
    await api(nc, f"CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": cfg})


async def connect(url: str) -> Client:
    return await nats.connect(url.split(","), max_reconnect_attempts=2)

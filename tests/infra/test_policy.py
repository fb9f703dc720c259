"""The policy pack's checks, called as the engine calls them (its run under the real engine is
in tests/e2e)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from bus_runtime import load_topology
from data_safety import (
    DIRECT,
    DYNAMIC,
    NACK_STREAM,
    STATEFULSET,
    check_nack_streams,
    check_statefulset_replace,
    check_stream_change,
    check_stream_deletes,
)
from jetstream_assets import JetStreamAssetProvider, asset_inputs
from nats_cluster import cluster_objects
from stack_settings import ClusterSettings

REPO = Path(__file__).resolve().parents[2]


class Violations(list[str]):
    def __call__(self, message: str, urn: str | None = None) -> None:
        self.append(message)


def res(typ: str, props: dict[str, Any], parent: Any = None, provider: Any = None) -> Any:
    return SimpleNamespace(
        resource_type=typ, props=props, urn=f"urn:{typ}", parent=parent, provider=provider
    )


@pytest.mark.nats
def test_a_replace_of_a_stream_on_the_server_is_a_violation(nats_server: Any) -> None:
    topology = load_topology(REPO / "topology" / "topology.yaml", "local")
    stream = topology.stream("TAX_AGENT_DLQ")
    created = JetStreamAssetProvider().create(
        json.loads(json.dumps(asset_inputs(topology, stream, None, [nats_server.url], None, False)))
    )
    assert created.outs["last_action"] == "create"
    memory = dataclasses.replace(stream, storage="memory")
    props = json.loads(
        json.dumps(asset_inputs(topology, memory, None, [nats_server.url], None, False))
    )

    found = Violations()
    check_stream_change(props, found)
    assert len(found) == 1
    assert found[0].startswith("-/+ stream TAX_AGENT_DLQ: replace (delete and recreate)")
    assert "storage: file -> memory" in found[0]

    allowed = Violations()
    check_stream_change({**props, "allow_destructive": True}, allowed)
    assert allowed == []
    same = Violations()
    check_stream_change(
        json.loads(
            json.dumps(asset_inputs(topology, stream, None, [nats_server.url], None, False))
        ),
        same,
    )
    assert same == []


def test_a_server_that_cannot_be_asked_is_a_violation() -> None:
    topology = load_topology(REPO / "topology" / "topology.yaml", "local")
    props = json.loads(
        json.dumps(
            asset_inputs(topology, topology.streams[0], None, ["nats://127.0.0.1:1"], None, False)
        )
    )
    found = Violations()
    check_stream_change(props, found)
    assert len(found) == 1 and "cannot plan it against the server" in found[0]


def test_not_yet_known_inputs_are_left_for_later() -> None:
    found = Violations()
    check_stream_change(
        {
            "kind": "stream",
            "stream": "S",
            "model": "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
            "servers": [],
        },
        found,
    )
    assert found == []


@pytest.mark.nats
def test_streams_and_consumers_no_longer_declared(nats_server: Any) -> None:
    topology = load_topology(REPO / "topology" / "topology.yaml", "local")
    provider = JetStreamAssetProvider()

    def props(stream: str, consumer: str | None = None) -> dict[str, Any]:
        s = topology.stream(stream)
        c = None if consumer is None else s.consumer(consumer)
        return json.loads(json.dumps(asset_inputs(topology, s, c, [nats_server.url], None, False)))

    jobs = topology.stream("TAX_AGENT_JOBS")
    for p in (
        props("TAX_AGENT_DLQ"),
        props("TAX_AGENT_JOBS"),
        *(props("TAX_AGENT_JOBS", c.name) for c in jobs.consumers),
    ):
        provider.create(p)
    component = res(DIRECT, {})
    # Now the stack declares only TAX_AGENT_JOBS and one of its consumers.
    kept = [
        res(DYNAMIC, props("TAX_AGENT_JOBS"), parent=component),
        res(DYNAMIC, props("TAX_AGENT_JOBS", jobs.consumers[0].name), parent=component),
    ]
    found = Violations()
    check_stream_deletes([component, *kept], found)
    deleted = sorted(m.split(":")[0] for m in found)
    assert deleted == sorted(
        ["- stream TAX_AGENT_DLQ"]
        + [f"- consumer TAX_AGENT_JOBS/{c.name}" for c in jobs.consumers[1:]]
    )
    allowed = Violations()
    loose = res(DIRECT, {})
    let = [res(DYNAMIC, {**k.props, "allow_destructive": True}, parent=loose) for k in kept]
    check_stream_deletes([loose, *let], allowed)
    assert allowed == []


def _statefulset(settings: ClusterSettings) -> dict[str, Any]:
    return cluster_objects(settings, part_of="t", nats_conf="").stateful_set


def test_a_statefulset_change_only_a_replace_can_make(tmp_path: Path) -> None:
    before = _statefulset(ClusterSettings(volume_size="10Gi"))
    manifests = tmp_path / "1-manifest"
    manifests.mkdir()
    (manifests / "apps_v1-statefulset-default-nats.yaml").write_text(yaml.safe_dump(before))
    provider = SimpleNamespace(props={"renderYamlToDirectory": str(tmp_path)})
    cluster = res("natstopo:nats_cluster:NatsCluster", {})

    after = _statefulset(ClusterSettings(volume_size="20Gi", image="nats:2.15.2"))
    found = Violations()
    check_statefulset_replace([res(STATEFULSET, after, parent=cluster, provider=provider)], found)
    assert len(found) == 1
    assert f"volumeClaimTemplates differ from the rendered {tmp_path}" in found[0]

    # Routine changes (image, resources, replicas) keep the StatefulSet.
    routine = _statefulset(
        ClusterSettings(volume_size="10Gi", image="nats:2.15.2", replicas=5, cpu="4")
    )
    none = Violations()
    check_statefulset_replace([res(STATEFULSET, routine, parent=cluster, provider=provider)], none)
    assert none == []

    allowed = _statefulset(ClusterSettings(volume_size="20Gi"))
    allowed["metadata"]["annotations"] = {"natstopo.io/allow-replace": "true"}
    let = Violations()
    check_statefulset_replace([res(STATEFULSET, allowed, parent=cluster, provider=provider)], let)
    assert let == []


def test_nack_streams_must_keep_their_data() -> None:
    found = Violations()
    allowed = {"annotations": {"natstopo.io/allow-destructive": "true"}}
    check_nack_streams(
        [
            res(NACK_STREAM, {"spec": {"name": "A", "preventDelete": True}}),
            res(NACK_STREAM, {"spec": {"name": "B", "preventDelete": False}}),
            res(NACK_STREAM, {"metadata": allowed, "spec": {"name": "C", "preventDelete": False}}),
        ],
        found,
    )
    assert len(found) == 1 and found[0].startswith("NACK Stream B: preventDelete is not set")


def test_the_pack_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pack's __main__ serves it; here only its definition is built (no server)."""
    import pulumi_policy

    served: list[Any] = []
    monkeypatch.setattr(pulumi_policy.PolicyPack, "__init__", lambda self, **kw: served.append(kw))
    from data_safety import policy_pack

    policy_pack()
    names = [p.name for p in served[0]["policies"]]
    assert names == [
        "stream-data-loss",
        "stream-delete",
        "statefulset-replace",
        "nack-streams-keep-data",
    ]
    assert served[0]["enforcement_level"] == pulumi_policy.EnforcementLevel.MANDATORY

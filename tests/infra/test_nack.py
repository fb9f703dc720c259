"""NACK resources from the model: Go durations, the ack wait NACK would default to 1ns, names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from schemas import nack_schemas, validate_nack

from bus_runtime import Consumer, Stream, Topology, load_topology, parse_duration
from nack import (
    CONSUMER_FIELDS,
    STREAM_FIELDS,
    NackError,
    NackTarget,
    go_duration,
    nack_consumer,
    nack_resources,
    resource_name,
)

REPO = Path(__file__).resolve().parents[2]
TARGET = NackTarget(
    servers=("nats://nats:4222",), namespace=None, account=None, prevent_delete=True, labels={}
)


@pytest.mark.parametrize(
    ("text", "go"),
    [
        ("7d", "168h"),
        ("90s", "1m30s"),
        ("500ms", "500ms"),
        ("1h30m", "1h30m"),
        ("30d", "720h"),
        ("2m", "2m"),
    ],
)
def test_durations_are_written_as_go_parses_them(text: str, go: str) -> None:
    assert go_duration(parse_duration(text)) == go
    assert parse_duration(go) == parse_duration(text)


def test_zero_is_written_as_0s() -> None:
    assert go_duration(0) == "0s"


def test_every_model_field_has_a_nack_field() -> None:
    topology = load_topology(REPO / "topology" / "topology.yaml", "prod")
    # allow_batched (nats-server 2.14) has no field in the pinned NACK CRD (v0.22.4).
    assert set(topology.streams[0].settings()) - {"allow_batched"} == set(STREAM_FIELDS)
    assert set(topology.consumers[0].settings()) == set(CONSUMER_FIELDS)


def test_the_nack_stream_crd_has_no_batch_publish_field() -> None:
    spec = nack_schemas()["Stream"]["properties"]["spec"]["properties"]
    assert "allowAtomicPublish" in spec  # the CRD knows 2.12's atomic batches ...
    assert not [k for k in spec if "batched" in k.lower()]  # ... but not 2.14's fast batches


def test_a_stream_with_allow_batched_is_refused_not_dropped() -> None:
    stream = Stream(name="S", subject_prefix="s", subjects=("s.>",), allow_batched=True)
    topology = Topology(name="t", environment="prod", services=(), streams=(stream,))
    with pytest.raises(NackError, match=r"`streams\.S\.allow_batched` has no NACK Stream field"):
        nack_resources(topology, TARGET)


def test_a_stream_with_allow_batched_false_goes_through_without_it() -> None:
    # false is what a stream without the key has (2.14, 2.15): nothing is lost leaving it out
    stream = Stream(name="S", subject_prefix="s", subjects=("s.>",), allow_batched=False)
    topology = Topology(name="t", environment="prod", services=(), streams=(stream,))
    (resource,) = [r for r in nack_resources(topology, TARGET) if r["kind"] == "Stream"]
    assert not [k for k in resource["spec"] if "batch" in k.lower()]
    assert resource["spec"]["name"] == "S"


def _topology(consumer: Consumer) -> Topology:
    stream = Stream(name="S", subject_prefix="s", subjects=("s.>",), consumers=(consumer,))
    return Topology(name="t", environment="prod", services=(), streams=(stream,))


def test_a_consumer_without_an_ack_wait_gets_the_servers_30s_not_nacks_1ns() -> None:
    c = Consumer(name="c", stream="S", service="svc")
    res = nack_consumer(c, _topology(c), TARGET)
    validate_nack(res)
    assert res["spec"]["ackWait"] == "30s"


def test_with_a_backoff_the_ack_wait_is_its_first_step() -> None:
    c = Consumer(
        name="c", stream="S", service="svc", backoff=(parse_duration("5s"), parse_duration("1m"))
    )
    res = nack_consumer(c, _topology(c), TARGET)
    validate_nack(res)
    assert res["spec"]["ackWait"] == "5s"
    assert res["spec"]["backoff"] == ["5s", "1m"]


def test_names_that_collide_in_kubernetes_are_refused() -> None:
    a = Stream(name="A_B", subject_prefix="a", subjects=("a.>",))
    b = Stream(name="A-B", subject_prefix="b", subjects=("b.>",))
    topology = Topology(name="t", environment="prod", services=(), streams=(a, b))
    with pytest.raises(NackError, match="A-B and A_B both map to the Stream resource name a-b"):
        nack_resources(topology, TARGET)


def test_resource_names_are_dns_subdomains() -> None:
    assert (
        resource_name("TAX_AGENT_EVENTS", "ui-review.case_status")
        == "tax-agent-events-ui-review-case-status"
    )


def test_allowing_destructive_changes_lets_a_stream_go_with_its_resource() -> None:
    topology = load_topology(REPO / "topology" / "topology.yaml", "prod")
    loose = dataclasses.replace(TARGET, prevent_delete=False)
    streams = [r for r in nack_resources(topology, loose) if r["kind"] == "Stream"]
    assert streams and all(r["spec"]["preventDelete"] is False for r in streams)
    # What the policy pack reads to let it through.
    assert all(
        r["metadata"]["annotations"] == {"natstopo.io/allow-destructive": "true"} for r in streams
    )

"""The checks before deploying: each stops `pulumi preview` with its one message, registering
nothing (so nothing is half-applied)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from program_mocks import REPO, run_stack

import preflight
from stack_settings import read_stack_file

PROD_CLUSTER: dict[str, Any] = read_stack_file(REPO / "Pulumi.prod.yaml")["natstopo:cluster"]


def topology_file(tmp_path: Path, streams: str, prod: str = "{}") -> str:
    path = tmp_path / "topology.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 1
            name: checks
            services:
              svc-a: {}
            streams:
            """
        )
        + textwrap.indent(textwrap.dedent(streams), "  ")
        + f"environments:\n  prod: {prod}\n"
    )
    return str(path)


def refused(overrides: dict[str, Any]) -> str:
    result = run_stack("prod", overrides)
    assert result.error is not None, "the program went ahead"
    assert result.resources == [], "something was registered before the refusal"
    return str(result.error)


def cluster(**changes: Any) -> str:
    return json.dumps({**PROD_CLUSTER, **changes})


EVENTS = """\
EVENTS:
  max_bytes: 10GiB
  replicas: 3
  topics:
    thing.happened: {publishers: [svc-a]}
  consumers:
    reader: {service: svc-a}
"""


def test_stream_replicas_above_the_cluster(fresh_loop: asyncio.AbstractEventLoop) -> None:
    message = refused({"natstopo:cluster": cluster(replicas=1)})
    assert "the topology does not fit the cluster (nothing was changed)" in message
    assert (
        "`streams.TAX_AGENT_JOBS.replicas` is 3, above the cluster's 1 server(s) "
        "(natstopo:cluster.replicas)" in message
    )


def test_file_storage_above_the_volumes(fresh_loop: asyncio.AbstractEventLoop) -> None:
    # prod needs 20 + 50 + 20 GiB per server (three R3 streams on three servers).
    message = refused({"natstopo:cluster": cluster(volume={"size": "64Gi"})})
    assert (
        "the topology's file storage needs 90GiB per server (TAX_AGENT_JOBS 20GiB x R3 + "
        "TAX_AGENT_EVENTS 50GiB x R3 + TAX_AGENT_DLQ 20GiB x R3, over 3 server(s)), above "
        "natstopo:cluster.volume.size 64Gi" in message
    )


def test_one_stream_larger_than_a_server(fresh_loop: asyncio.AbstractEventLoop) -> None:
    message = refused({"natstopo:cluster": cluster(volume={"size": "40Gi"})})
    assert (
        "`streams.TAX_AGENT_EVENTS.max_bytes` 50GiB (file storage) does not fit on one server"
        in message
    )


def test_memory_streams_above_max_memory_store(
    fresh_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    topology = topology_file(
        tmp_path,
        EVENTS
        + "CACHE:\n  storage: memory\n  max_bytes: 2GiB\n  replicas: 3\n  topics:\n    cache.entry: {publishers: [svc-a]}\n",
    )
    message = refused({"natstopo:topology": topology})
    assert (
        "the topology's memory storage needs 2GiB per server (CACHE 2GiB x R3, over 3 server(s)), "
        "above natstopo:cluster.jetstream.maxMemoryStore 1GiB" in message
    )


def test_a_server_image_older_than_the_topologys_features(
    fresh_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    topology = topology_file(
        tmp_path, EVENTS.replace("  replicas: 3\n", "  replicas: 3\n  allow_msg_ttl: true\n")
    )
    message = refused(
        {"natstopo:topology": topology, "natstopo:cluster": cluster(image="nats:2.10.26-alpine")}
    )
    assert (
        "image `nats:2.10.26-alpine` runs nats-server 2.10.26, but `streams.EVENTS.allow_msg_ttl` "
        "(per-message TTL) needs 2.11.0 or newer" in message
    )
    # The same topology on a new enough server goes through.
    ok = run_stack(
        "prod", {"natstopo:topology": topology, "natstopo:cluster": cluster(image="nats:2.11.11")}
    )
    assert ok.error is None


def test_allow_batched_needs_a_2_14_image(
    fresh_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    # 2.12 refuses any stream config with the key (10025), 2.10 and 2.11 drop it silently:
    # tests/conformance/MEASURED.md, allow_batched-*.
    topology = topology_file(
        tmp_path, EVENTS.replace("  replicas: 3\n", "  replicas: 3\n  allow_batched: true\n")
    )
    message = refused(
        {"natstopo:topology": topology, "natstopo:cluster": cluster(image="nats:2.12.8-alpine")}
    )
    assert (
        "image `nats:2.12.8-alpine` runs nats-server 2.12.8, but `streams.EVENTS.allow_batched` "
        "(fast batch publish) needs 2.14.0 or newer" in message
    )
    new_enough = {"natstopo:topology": topology, "natstopo:cluster": cluster(image="nats:2.14.6")}
    ok = run_stack("prod", {**new_enough, "natstopo:provisioner": "none"})
    assert ok.error is None
    # NACK's Stream CRD (v0.22.4) has no field for it: refused, never dropped.
    message = refused(new_enough)
    assert "`streams.EVENTS.allow_batched` has no NACK Stream field" in message
    assert "needs 2.14.0" not in message


def test_an_image_without_a_version(fresh_loop: asyncio.AbstractEventLoop) -> None:
    message = refused({"natstopo:cluster": cluster(image="nats:latest")})
    assert "cannot tell the nats-server version from image `nats:latest`" in message
    assert (
        run_stack(
            "prod", {"natstopo:cluster": cluster(image="nats:latest", serverVersion="2.15.1")}
        ).error
        is None
    )


def test_a_topology_that_does_not_validate(
    fresh_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    topology = topology_file(
        tmp_path, EVENTS.replace("max_bytes: 10GiB", "max_bytes: 10GiB\n  retention: workque")
    )
    message = refused({"natstopo:topology": topology})
    assert "does not validate for environment `prod`" in message
    assert (
        f"{topology}:8:16: error: streams.EVENTS.retention: 'workque' is not one of limits, "
        "interest, workqueue (did you mean `workqueue`?)" in message
    )


def test_a_stack_whose_name_is_no_environment(fresh_loop: asyncio.AbstractEventLoop) -> None:
    message = refused({"natstopo:environment": "prdo"})
    assert "environment `prdo` is not declared" in message
    assert "(did you mean `prod`?)" in message


def test_messages_larger_than_the_server_accepts(fresh_loop: asyncio.AbstractEventLoop) -> None:
    message = refused({"natstopo:cluster": cluster(limits={"maxPayload": "128Ki"})})
    assert (
        "`streams.TAX_AGENT_JOBS.max_msg_size` is 256KiB, above the server's max_payload 128KiB"
        in message
    )


def test_a_lame_duck_shorter_than_the_server_allows(fresh_loop: asyncio.AbstractEventLoop) -> None:
    message = refused({"natstopo:cluster": cluster(lameDuck={"duration": "10s"})})
    assert "natstopo:cluster.lameDuck.duration is 10s; nats-server needs at least 30s" in message


def test_memory_store_above_gomemlimit(fresh_loop: asyncio.AbstractEventLoop) -> None:
    message = refused({"natstopo:cluster": cluster(jetstream={"maxMemoryStore": "7Gi"})})
    assert "maxMemoryStore 7GiB is above GOMEMLIMIT" in message


def test_every_problem_at_once(fresh_loop: asyncio.AbstractEventLoop) -> None:
    message = refused({"natstopo:cluster": cluster(replicas=1, image="nats:latest")})
    assert message.count("\n  - ") >= 4  # three streams' replicas and the image


def test_the_feature_table_is_the_reconcilers() -> None:
    """infra keeps its own copy (the reconciler's is not public): they must not drift apart."""
    from bus_runtime.jetstream import rules

    assert preflight.STREAM_FEATURES == rules.STREAM_FEATURES
    assert preflight.CONSUMER_FEATURES == rules.CONSUMER_FEATURES
    assert preflight.MIN_SERVER == rules.MIN_SERVER


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"natstopo:cluster": json.dumps({"volume": {"sise": "1Gi"}})},
            "natstopo:cluster.volume.sise: unknown key (did you mean `size`?)",
        ),
        ({"natstopo:clustre": "{}"}, "natstopo:clustre: unknown key (did you mean `cluster`?)"),
        (
            {"natstopo:cluster": json.dumps({"replicas": "three"})},
            "natstopo:cluster.replicas: expected an integer >= 1, got 'three'",
        ),
        (
            {"natstopo:provisioner": "helm"},
            "natstopo:provisioner: 'helm' is not one of direct, nack, none",
        ),
        (
            {"natstopo:provisioner": "direct"},
            "natstopo:natsUrl: the direct provisioner needs the server URLs",
        ),
        (
            {"natstopo:cluster": json.dumps({"volume": {"size": "lots"}})},
            "natstopo:cluster.volume.size: 'lots' is not a size",
        ),
    ],
)
def test_stack_config_is_read_strictly(
    overrides: dict[str, Any], expected: str, fresh_loop: asyncio.AbstractEventLoop
) -> None:
    message = refused(overrides)
    assert "stack `prod`: the config (Pulumi.prod.yaml) cannot be used" in message
    assert expected in message


def test_a_stack_with_no_config_names_the_stacks_there_are(
    fresh_loop: asyncio.AbstractEventLoop,
) -> None:
    import pulumi
    from program_mocks import RecordingMocks, StackRun

    import stack_program

    pulumi.runtime.set_mocks(
        RecordingMocks(StackRun(), {}), project="natstopo", stack="prdo", preview=True
    )
    pulumi.runtime.set_all_config({})
    with pytest.raises(pulumi.RunError) as err:
        stack_program.build("prdo", "natstopo")
    message = str(err.value)
    assert "stack `prdo` has no natstopo config (no Pulumi.prdo.yaml" in message
    assert "this project has dev, local, prod, staging (did you mean `prod`?)" in message

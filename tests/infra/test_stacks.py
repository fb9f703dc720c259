"""Every stack under Pulumi's mocks: what the program registers, validated and read field by field.

Each Kubernetes object passes Kubernetes' schemas (strict) for the releases in
`schemas.KUBERNETES_VERSIONS`; each NACK resource passes its CRD's schema (strict); the
fields that make the cluster work are asserted one by one, per stack.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from program_mocks import REPO, StackRun, run_stack
from schemas import CUSTOM_GROUPS, crd_defaults, validate_kubernetes, validate_nack

from bus_runtime import load_topology, parse_duration
from jetstream_assets import model_from_json
from nats_conf import nats_conf_for_cluster, render_nats_conf
from stack_settings import StackSettings, parse_quantity, read_settings, read_stack_file

KUBE_STACKS = ["dev", "staging", "prod"]
ALL_STACKS = ["local", *KUBE_STACKS]
RECOMMENDED = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
}


def settings_of(stack: str) -> StackSettings:
    return read_settings(read_stack_file(REPO / f"Pulumi.{stack}.yaml"), stack, REPO)


@pytest.fixture
def local_overrides(nats_server: Any) -> dict[str, Any]:
    """The local stack against a real server: its direct provisioner plans before it registers.

    The server has no authorization (tests/infra/test_stack_authorization.py has that)."""
    return {"natstopo:natsUrl": nats_server.url, "natstopo:authorization": False}


def run(
    stack: str,
    fresh_loop: asyncio.AbstractEventLoop,
    overrides: dict[str, Any] | None = None,
    **kw: Any,
) -> StackRun:
    result = run_stack(stack, overrides, **kw)
    assert result.error is None, result.error
    return result


def by_kind(result: StackRun) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in result.kube_objects():
        out.setdefault(obj["kind"], []).append(obj)
    return out


def check_cluster_objects(result: StackRun, settings: StackSettings) -> None:
    """The fields that make a JetStream cluster on Kubernetes work, for this stack's settings."""
    kinds = by_kind(result)
    c = settings.cluster
    for obj in result.kube_objects():
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        validate_kubernetes(obj)
        labels = obj["metadata"].get("labels", {})
        assert set(labels) >= RECOMMENDED, (obj["kind"], labels)
        if c.namespace and obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == c.namespace
    [sts] = kinds["StatefulSet"]
    spec = sts["spec"]
    selector = spec["selector"]["matchLabels"]
    template = spec["template"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert spec["replicas"] == c.replicas
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == f"{c.name}-headless"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    [claim] = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == c.volume_size
    assert claim["spec"].get("storageClassName") == c.storage_class
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = template["spec"]
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == c.name
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    # The whole lame duck (grace + duration) fits in the grace Kubernetes gives the pod.
    assert (
        pod["terminationGracePeriodSeconds"] >= c.lame_duck_duration + c.lame_duck_grace_period + 20
    )
    spread = {t["topologyKey"]: t for t in pod["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["maxSkew"] == 1
    assert spread["kubernetes.io/hostname"]["labelSelector"]["matchLabels"] == selector
    assert ("topology.kubernetes.io/zone" in spread) == c.spread_zones
    for t in spread.values():
        assert t["whenUnsatisfiable"] == c.when_unsatisfiable
    containers = {x["name"]: x for x in pod["containers"]}
    nats = containers["nats"]
    assert nats["image"] == c.image
    for x in pod["containers"]:
        assert x["securityContext"]["readOnlyRootFilesystem"] is True
        assert x["securityContext"]["allowPrivilegeEscalation"] is False
        assert x["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert x["resources"]["requests"] == x["resources"]["limits"]
    assert nats["resources"]["limits"] == {"cpu": c.cpu, "memory": c.memory}
    env = {e["name"]: e for e in nats["env"]}
    assert env["SERVER_NAME"]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    gomemlimit = parse_quantity(env["GOMEMLIMIT"]["value"].removesuffix("B"))
    assert 0.79 * c.memory_bytes <= gomemlimit <= 0.8 * c.memory_bytes
    # One broken or catching-up stream must not keep a node from ever becoming ready.
    assert nats["startupProbe"]["httpGet"] == {
        "path": "/healthz?js-server-only=true",
        "port": "monitor",
    }
    assert nats["readinessProbe"]["httpGet"]["path"] == "/healthz?js-server-only=true"
    assert nats["livenessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert nats[probe]["timeoutSeconds"] == 5
    assert nats["lifecycle"]["preStop"]["exec"]["command"] == [
        "nats-server",
        "-sl=ldm=/var/run/nats/nats.pid",
    ]
    mounts = {m["mountPath"]: m["name"] for m in nats["volumeMounts"]}
    assert mounts["/data"] == claim["metadata"]["name"]
    assert mounts["/etc/nats-config"] == "config"
    volumes = {v["name"]: v for v in pod["volumes"]}
    watched = ["-config", "/etc/nats-config/nats.conf"]
    if settings.authorization:
        # auth.conf from its Secret, beside the config folder (nats.conf includes it).
        assert mounts["/etc/nats-auth"] == "auth"
        # one Secret per set of accounts (a new account rolls the servers)
        assert volumes["auth"]["secret"]["secretName"].startswith(f"{c.name}-auth-")
        watched += ["-config", "/etc/nats-auth/auth.conf"]
    else:
        assert "auth" not in volumes
    assert pod["shareProcessNamespace"] is c.reloader
    assert ("reloader" in containers) is c.reloader
    if c.reloader:
        assert containers["reloader"]["args"] == ["-pid", "/var/run/nats/nats.pid", *watched]
        reloader_mounts = {m["mountPath"] for m in containers["reloader"]["volumeMounts"]}
        assert ("/etc/nats-auth" in reloader_mounts) is settings.authorization
    assert ("exporter" in containers) is c.exporter
    # A config change reaches the pods through the reloader, not through a rollout.
    assert "annotations" not in template["metadata"]

    config_maps = {m["metadata"]["name"]: m for m in kinds["ConfigMap"]}
    includes = ("../nats-auth/auth.conf",) if settings.authorization else ()
    assert config_maps[f"{c.name}-config"]["data"]["nats.conf"] == render_nats_conf(
        nats_conf_for_cluster(c, includes)
    )
    services = {s["metadata"]["name"]: s["spec"] for s in kinds["Service"]}
    headless = services[f"{c.name}-headless"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["ports"]} == {4222, 6222, 8222}
    client = services[c.name]
    assert [p["port"] for p in client["ports"]] == [4222]
    assert headless["selector"] == client["selector"] == selector
    [pdb] = kinds["PodDisruptionBudget"]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    [sa] = kinds["ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False
    assert ("Namespace" in kinds) is (c.create_namespace and c.namespace is not None)
    assert ("PodMonitor" in kinds) is c.pod_monitor


def check_outputs(result: StackRun, settings: StackSettings) -> None:
    topology = load_topology(settings.topology, settings.environment)
    out = result.outputs
    assert out["topologyFingerprint"] == topology.fingerprint
    assert out["streams"] == [s.name for s in topology.streams]
    assert out["consumers"] == [f"{c.stream}/{c.name}" for c in topology.consumers]
    assert out["clientUrl"] == settings.client_url
    bundle = next(
        m
        for m in by_kind(result)["ConfigMap"]
        if m["metadata"]["name"] == f"{topology.name}-topology"
    )
    assert bundle["data"]["fingerprint"] == topology.fingerprint
    assert (
        bundle["metadata"]["annotations"]["natstopo.io/topology-fingerprint"]
        == topology.fingerprint
    )


@pytest.mark.parametrize("stack", KUBE_STACKS)
def test_kubernetes_stacks(stack: str, fresh_loop: asyncio.AbstractEventLoop) -> None:
    settings = settings_of(stack)
    result = run(stack, fresh_loop)
    check_cluster_objects(result, settings)
    check_outputs(result, settings)
    assert settings.provisioner == "nack"
    # The only dynamic resources are the credentials (no JetStream asset: NACK has them).
    assert all("identity" in r.inputs for r in result.of_type("pulumi-python:dynamic:Resource"))
    [provider] = result.of_type("pulumi:providers:kubernetes")
    assert provider.inputs.get("context") == stack
    assert "renderYamlToDirectory" not in provider.inputs
    assert provider.inputs["enableConfigMapMutable"] == "true"
    assert provider.inputs["enableSecretMutable"] == "true"  # a rotation updates, never deletes


def test_prod_is_spread_sized_and_monitored(fresh_loop: asyncio.AbstractEventLoop) -> None:
    result = run("prod", fresh_loop)
    [sts] = by_kind(result)["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 3
    assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    assert all(t["whenUnsatisfiable"] == "DoNotSchedule" for t in pod["topologySpreadConstraints"])
    nats = next(c for c in pod["containers"] if c["name"] == "nats")
    assert nats["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    [monitor] = by_kind(result)["PodMonitor"]
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "prom-metrics"}]


@pytest.mark.parametrize("stack", KUBE_STACKS)
def test_nack_resources_validate_and_spell_out_what_nack_would_default(
    stack: str, fresh_loop: asyncio.AbstractEventLoop
) -> None:
    settings = settings_of(stack)
    topology = load_topology(settings.topology, settings.environment)
    result = run(stack, fresh_loop)
    kinds = by_kind(result)
    streams = {s["spec"]["name"]: s for s in kinds["Stream"]}
    consumers = {(c["spec"]["streamName"], c["spec"]["durableName"]): c for c in kinds["Consumer"]}
    assert set(streams) == {s.name for s in topology.streams}
    assert set(consumers) == {(c.stream, c.name) for c in topology.consumers}
    go = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
    for res in [*streams.values(), *consumers.values()]:
        validate_nack(res)
        assert res["spec"]["servers"] == [settings.client_url]
        assert res["metadata"]["namespace"] == settings.cluster.namespace
    for s in topology.streams:
        spec = streams[s.name]["spec"]
        # NACK's own default would be a memory stream.
        assert spec["storage"] == s.storage == "file"
        assert spec["retention"] == s.retention
        assert spec["replicas"] == s.replicas
        assert spec["subjects"] == list(s.subjects)
        assert spec["maxBytes"] == s.max_bytes
        assert spec["preventDelete"] is True
        assert spec["metadata"]["natstopo.topology"] == topology.name
        for key in ("maxAge", "duplicateWindow"):
            if key in spec:
                assert go.match(spec[key]) and spec[key] != "", (key, spec[key])
        assert s.max_age is not None
        assert parse_duration(spec["maxAge"]) == s.max_age
    for c in topology.consumers:
        spec = consumers[(c.stream, c.name)]["spec"]
        assert spec["ackPolicy"] == c.ack_policy
        assert spec["deliverPolicy"] == c.deliver_policy
        # NACK's own default ack wait is 1ns.
        expected = c.ack_wait or (c.backoff[0] if c.backoff else 30_000_000_000)
        assert parse_duration(spec["ackWait"]) == expected
        assert go.match(spec["ackWait"])
        assert [parse_duration(b) for b in spec.get("backoff", [])] == list(c.backoff or [])
        filters = (
            [spec["filterSubject"]] if "filterSubject" in spec else spec.get("filterSubjects", [])
        )
        assert filters == list(c.filter_subjects)
        assert spec["metadata"]["natstopo.service"] == c.service
        assert spec["preventDelete"] is False


@pytest.mark.parametrize("kind", ["Stream", "Consumer"])
def test_every_nack_default_is_the_servers_or_spelled_out(
    kind: str, fresh_loop: asyncio.AbstractEventLoop
) -> None:
    """A CRD default that differs from the server's never applies: the field is always set."""
    from bus_runtime.jetstream import rules  # the server's defaults (test-only: not public)

    server = rules.STREAM_DEFAULTS if kind == "Stream" else rules.CONSUMER_DEFAULTS
    import nack

    to_api = (
        {**{v: k for k, v in nack.STREAM_FIELDS.items()}}
        if kind == "Stream"
        else {v: k for k, v in nack.CONSUMER_FIELDS.items()}
    )
    api_key = {"replicas": "num_replicas"}
    result = run("prod", fresh_loop)
    resources = by_kind(result)[kind]
    for field, default in crd_defaults(kind).items():
        if field not in to_api:
            continue  # not a field the topology format has
        topo_field = to_api[field]
        server_default = server.get(api_key.get(topo_field, topo_field))
        if topo_field in nack.DURATIONS:
            same = default == "" and server_default == 0
        elif field == "maxMsgsPerSubject":
            same = default in (0, -1) and server_default == -1
        elif field == "compression":
            same = default == "" and server_default == "none"
        else:
            same = default == server_default
        if not same:
            for res in resources:
                assert field in res["spec"], (kind, field, default, server_default)


def test_local_stack_renders_and_provisions_directly(
    fresh_loop: asyncio.AbstractEventLoop, local_overrides: dict[str, Any]
) -> None:
    settings = dataclasses.replace(settings_of("local"), authorization=False)
    topology = load_topology(settings.topology, settings.environment)
    result = run("local", fresh_loop, local_overrides)
    check_cluster_objects(result, settings)
    check_outputs(result, settings)
    [provider] = result.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["renderYamlToDirectory"] == str(REPO / "out" / "local" / "manifests")
    assets = result.of_type("pulumi-python:dynamic:Resource")
    # The mocks record registrations as the engine's tasks reach them: order is not meaningful.
    assert sorted(a.name for a in assets if a.inputs["kind"] == "stream") == sorted(
        s.name for s in topology.streams
    )
    consumers = {
        (a.inputs["stream"], a.inputs["consumer"]): a
        for a in assets
        if a.inputs["kind"] == "consumer"
    }
    assert set(consumers) == {(c.stream, c.name) for c in topology.consumers}
    for asset in assets:
        assert asset.inputs["servers"] == [local_overrides["natstopo:natsUrl"]]
        assert asset.inputs["allow_destructive"] is False
        assert asset.inputs["__provider"]  # the pickled provider travels with the resource
        _, stream, consumer = model_from_json(asset.inputs["model"])
        declared = topology.stream(stream.name)
        if consumer is None:
            assert (
                asset.inputs["config"] == declared.to_stream_config() == stream.to_stream_config()
            )
        else:
            assert consumer == declared.consumer(consumer.name)
            assert asset.inputs["config"] == consumer.to_consumer_config()
    assert result.outputs["natsUrls"] == [local_overrides["natstopo:natsUrl"]]
    assert result.outputs["manifests"] == str(REPO / "out" / "local" / "manifests")


def test_a_routine_change_keeps_the_statefulset_and_an_immutable_one_is_refused(
    fresh_loop: asyncio.AbstractEventLoop,
) -> None:
    first = run("prod", fresh_loop)
    record = first.outputs["deployed"]
    cluster = json.loads(json.dumps(read_stack_file(REPO / "Pulumi.prod.yaml")["natstopo:cluster"]))
    routine = {
        **cluster,
        "image": "nats:2.15.2-alpine",
        "replicas": 5,
        "resources": {"cpu": "4", "memory": "16Gi"},
    }
    again = run_stack("prod", {"natstopo:cluster": routine}, previous={"deployed": record})
    assert again.error is None
    bigger = {**cluster, "volume": {"size": "256Gi"}}
    refused = run_stack("prod", {"natstopo:cluster": bigger}, previous={"deployed": record})
    assert refused.error is not None
    message = str(refused.error)
    assert "StatefulSet `nats` would be replaced" in message
    assert "volume size 128Gi -> 256Gi" in message
    assert "pulumi config set natstopo:allowReplace true" in message
    assert refused.resources == []  # nothing was registered, so nothing is half-applied
    allowed = run_stack(
        "prod",
        {"natstopo:cluster": bigger, "natstopo:allowReplace": "true"},
        previous={"deployed": record},
    )
    assert allowed.error is None
    [sts] = by_kind(allowed)["StatefulSet"]
    assert sts["metadata"]["annotations"]["natstopo.io/allow-replace"] == "true"


def test_the_topology_bundle_mounts_as_the_repository_lays_it_out(
    fresh_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    result = run("prod", fresh_loop)
    volume = result.outputs["topologyVolume"]
    [bundle] = [
        m
        for m in by_kind(result)["ConfigMap"]
        if m["metadata"]["name"] == volume["configMap"]["name"]
    ]
    validate_kubernetes(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app"},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "app",
                        "volumeMounts": [{"name": volume["name"], "mountPath": "/etc/natstopo"}],
                    }
                ],
                "volumes": [volume],
            },
        }
    )
    for item in volume["configMap"]["items"]:  # what the kubelet does with the volume
        path = tmp_path / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(bundle["data"][item["key"]])
    mounted = load_topology(tmp_path / "topology.yaml", "prod")
    assert (
        mounted.fingerprint
        == result.outputs["topologyFingerprint"]
        == (tmp_path / "fingerprint").read_text()
    )

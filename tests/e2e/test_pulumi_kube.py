"""`pulumi up` of the dev and prod stacks against a real kube-apiserver (tests/kube_harness.py).

tests/e2e/test_pulumi_stacks.py runs the stacks in render mode (YAML files checked by
`kubernetes-validate`); here the same program, under the real engine (tools/pulumi-engine/),
sends its objects to the API server the `kube_api` fixture starts, through the stack
settings a user would set: `natstopo:kubernetes.kubeconfig` (the harness kubeconfig),
`natstopo:kubernetes.context` and `natstopo:kubernetes.skipAwait` (no kubelet here: pods
never run, a StatefulSet never becomes ready). Both stacks use the `nack` provisioner, so
streams and consumers are NACK custom resources and nothing tries to reach NATS.

What is proved: every object of the stack is accepted (the NACK CRDs installed first, so the
Stream and Consumer resources pass the API server's CRD schema validation); a second preview
has no changes; routine changes (image tag, resources, replicas, a nats.conf value) are an
update of the StatefulSet, never a replace; a volume-size change is refused at preview by the
project's own check; a stored Stream with one wrong value is refused by the schema; `destroy`
leaves nothing in the namespace.

Not here: the prod stack's PodMonitor (prometheus-operator's CRD is not available here, so it
is turned off); kube-controller-manager (not run): the provider deletes with foreground
propagation, which leaves each object with the `foregroundDeletion` finalizer for the garbage
collector, and a deleted namespace stays Terminating for the namespace controller. During
`destroy` the test does both controllers' part (`namespace_finalizer`), then lists the
namespace's objects through the API.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_harness import KubeAPI
from test_kube_apiserver import NACK_API, nack_crds  # noqa: F401  (a fixture)
from test_pulumi_stacks import REPO, Pulumi, copy_project, engine_bin  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.kube, pytest.mark.pulumi, pytest.mark.slow]

STATEFULSET = "kubernetes:apps/v1:StatefulSet"
REPLACE_OPS = {"replace", "create-replacement", "delete-replaced"}
# What a stack puts in its namespace: (API path prefix, plural).
NAMESPACED = [
    ("/api/v1", "configmaps"),
    ("/api/v1", "services"),
    ("/api/v1", "serviceaccounts"),
    ("/api/v1", "secrets"),
    ("/api/v1", "persistentvolumeclaims"),
    ("/apis/apps/v1", "statefulsets"),
    ("/apis/policy/v1", "poddisruptionbudgets"),
    (NACK_API, "streams"),
    (NACK_API, "consumers"),
    (NACK_API, "accounts"),
]
STACK_NAMESPACE = {"dev": "tax-agent-dev", "prod": "tax-agent"}


def stack_project(engine: Path, kube: KubeAPI, tmp_path: Path, stack: str) -> Pulumi:
    """The project copied, `stack` initialised and pointed at the harness API server."""
    project = copy_project(tmp_path / "project")
    text = (REPO / f"Pulumi.{stack}.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("encryptionsalt:")]
    (project / f"Pulumi.{stack}.yaml").write_text("\n".join(lines) + "\n")
    pulumi = Pulumi(engine, project, tmp_path)
    pulumi.run("stack", "init", stack)
    context = yaml.safe_load(kube.kubeconfig.read_text())["current-context"]
    for key, value in (
        ("kubernetes.kubeconfig", str(kube.kubeconfig)),
        ("kubernetes.context", context),
        ("kubernetes.skipAwait", "true"),
    ):
        pulumi.run("config", "set", "--path", f"natstopo:{key}", value)
    if stack == "prod":
        # prometheus-operator's PodMonitor CRD is not available here.
        pulumi.run("config", "set", "--path", "natstopo:cluster.monitoring.podMonitor", "false")
    return pulumi


def namespace_objects(kube: KubeAPI, namespace: str) -> dict[str, list[str]]:
    """plural -> names of the objects in `namespace`, as the API server lists them."""
    found: dict[str, list[str]] = {}
    for prefix, plural in NAMESPACED:
        listed = kube.request("GET", f"{prefix}/namespaces/{namespace}/{plural}")
        assert listed.status == 200, listed.text
        names = sorted(i["metadata"]["name"] for i in listed.body["items"])
        # The API server makes these itself in every namespace.
        names = [n for n in names if (plural, n) not in {("configmaps", "kube-root-ca.crt")}]
        names = [n for n in names if (plural, n) not in {("serviceaccounts", "default")}]
        if names:
            found[plural] = names
    return found


@contextmanager
def namespace_finalizer(kube: KubeAPI, namespace: str) -> Iterator[None]:
    """While the block runs, do what kube-controller-manager would on a delete.

    The provider deletes with foreground propagation: an object keeps the
    `foregroundDeletion` finalizer until the garbage collector removes it, and a deleted
    namespace stays Terminating until the namespace controller finalizes it. Neither runs
    here, so this removes the finalizer of deleted objects (none has dependents) and
    finalizes the namespace once it is empty.
    """
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            for prefix, plural in NAMESPACED:
                listed = kube.request("GET", f"{prefix}/namespaces/{namespace}/{plural}")
                for item in (listed.body or {}).get("items", []) if listed.status == 200 else []:
                    meta = item["metadata"]
                    held = meta.get("finalizers") or []
                    if meta.get("deletionTimestamp") and "foregroundDeletion" in held:
                        # The garbage collector's part: no dependents, so the object goes.
                        kube.request(
                            "PATCH",
                            f"{prefix}/namespaces/{namespace}/{plural}/{meta['name']}",
                            {
                                "metadata": {
                                    "finalizers": [f for f in held if f != "foregroundDeletion"]
                                }
                            },
                            content_type="application/merge-patch+json",
                        )
            got = kube.request("GET", f"/api/v1/namespaces/{namespace}")
            if got.status != 200 or not got.body["metadata"].get("deletionTimestamp"):
                continue
            if namespace_objects(kube, namespace):
                continue  # the controller deletes the content first; here the stack did
            held = got.body["metadata"].get("finalizers") or []
            if "foregroundDeletion" in held:
                kube.request(
                    "PATCH",
                    f"/api/v1/namespaces/{namespace}",
                    {"metadata": {"finalizers": [f for f in held if f != "foregroundDeletion"]}},
                    content_type="application/merge-patch+json",
                )
            if got.body["spec"].get("finalizers"):
                body = copy.deepcopy(got.body)
                body["spec"]["finalizers"] = []
                kube.request("PUT", f"/api/v1/namespaces/{namespace}/finalize", body)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
        # The provider does not wait for a skipAwait namespace to go; the test does.
        deadline = time.monotonic() + 20
        while kube.request("GET", f"/api/v1/namespaces/{namespace}").status != 404:
            assert time.monotonic() < deadline, "the namespace is still there"
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=10)


def steps(pulumi: Pulumi) -> list[dict[str, Any]]:
    return list(json.loads(pulumi.run("preview", "--json").stdout).get("steps", []))


def load_topology_services(env: str) -> list[str]:
    from bus_runtime import load_topology

    return [s.name for s in load_topology(REPO / "topology" / "topology.yaml", env).services]


def up_then_no_changes(pulumi: Pulumi, kube: KubeAPI, stack: str) -> dict[str, list[str]]:
    pulumi.run("up", "--yes", "--skip-preview", label="up")
    pulumi.run("preview", "--expect-no-changes", label="preview")
    stored = namespace_objects(kube, STACK_NAMESPACE[stack])
    resources = pulumi.stack_resources()
    kube_types = [
        r["type"]
        for r in resources
        if r["type"].startswith("kubernetes:") and r["type"] != "pulumi:providers:kubernetes"
    ]
    kube_types = [t for t in kube_types if not t.startswith("kubernetes:core/v1:Namespace")]
    # Every Kubernetes resource of the stack is an object the API server stored.
    assert sum(len(v) for v in stored.values()) == len(kube_types), (stored, kube_types)
    return stored


def destroy_leaves_nothing(pulumi: Pulumi, kube: KubeAPI, stack: str) -> None:
    namespace = STACK_NAMESPACE[stack]
    pulumi.run("state", "unprotect", "--all", "--yes")  # the StatefulSet is protected
    with namespace_finalizer(kube, namespace):
        pulumi.run("destroy", "--yes", "--skip-preview", label="destroy")
    assert namespace_objects(kube, namespace) == {}
    assert kube.request("GET", f"/api/v1/namespaces/{namespace}").status == 404
    assert pulumi.stack_resources() == []


def test_dev_stack_up_no_changes_destroy(
    engine_bin: Path,  # noqa: F811
    kube_api: KubeAPI,
    nack_crds: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    pulumi = stack_project(engine_bin, kube_api, tmp_path, "dev")
    stored = up_then_no_changes(pulumi, kube_api, "dev")
    assert stored["statefulsets"] == ["nats"]
    assert stored["streams"] and stored["consumers"], stored
    # Authorization: the servers' auth.conf and a Secret per identity; NACK connects as admin.
    assert [s for s in stored["secrets"] if s.startswith("nats-auth-")]
    assert "nats-creds-admin" in stored["secrets"]
    # auth.conf, one per service, admin, dlq-operator, monitor
    assert len(stored["secrets"]) == 1 + len(load_topology_services("dev")) + 3
    assert stored["accounts"] == ["nats-admin"]
    destroy_leaves_nothing(pulumi, kube_api, "dev")
    print(f"dev timings: {pulumi.timings}")


def test_prod_stack_on_the_api_server(
    engine_bin: Path,  # noqa: F811
    kube_api: KubeAPI,
    nack_crds: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    pulumi = stack_project(engine_bin, kube_api, tmp_path, "prod")
    namespace = STACK_NAMESPACE["prod"]
    stored = up_then_no_changes(pulumi, kube_api, "prod")
    assert stored["statefulsets"] == ["nats"]
    assert stored["streams"] and stored["consumers"], stored
    sts_path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/nats"
    sts = kube_api.request("GET", sts_path).body
    assert sts["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    assert claim["storage"] == "128Gi"

    # The stack's own NACK Stream, one value wrong: the CRD schema refuses it (dry run).
    name = stored["streams"][0]
    stream_path = f"{NACK_API}/namespaces/{namespace}/streams/{name}"
    stream = kube_api.request("GET", stream_path).body
    wrong = copy.deepcopy(stream)
    wrong["spec"]["storage"] = "disk"
    refused = kube_api.request("PUT", f"{stream_path}?dryRun=All", wrong)
    assert refused.status == 422, refused.text
    assert "spec.storage" in refused.message and "Unsupported value" in refused.message, (
        refused.message
    )
    # The same object, unchanged, is accepted (the refusal is that one value).
    assert kube_api.request("PUT", f"{stream_path}?dryRun=All", stream).status == 200

    # Routine changes: an update of the StatefulSet in place, never a replace.
    for key, value in (
        ("cluster.image", "nats:2.15.2-alpine"),
        ("cluster.resources.cpu", "3"),
        ("cluster.resources.memory", "12Gi"),
        ("cluster.replicas", "5"),
        ("cluster.limits.maxConnections", "20000"),
    ):
        pulumi.run("config", "set", "--path", f"natstopo:{key}", value)
    changed = [s for s in steps(pulumi) if s.get("op") != "same"]
    ops = {(s["op"], s.get("newState", s.get("oldState", {})).get("type")) for s in changed}
    assert ("update", STATEFULSET) in ops, changed
    assert not [s for s in changed if s["op"] in REPLACE_OPS], changed
    pulumi.run("up", "--yes", "--skip-preview", label="up (routine change)")
    sts = kube_api.request("GET", sts_path).body
    assert sts["spec"]["replicas"] == 5
    nats = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "nats")
    assert nats["image"] == "nats:2.15.2-alpine"
    assert nats["resources"]["limits"] == {"cpu": "3", "memory": "12Gi"}
    pulumi.run("preview", "--expect-no-changes")

    # A volume size only a replace could change: refused by the program before any request.
    pulumi.run("config", "set", "--path", "natstopo:cluster.volume.size", "256Gi")
    started = time.monotonic()
    refused_preview = pulumi.run("preview", check=False)
    assert refused_preview.returncode != 0
    assert "StatefulSet `nats` would be replaced" in refused_preview.stdout
    assert "volume size 128Gi -> 256Gi" in refused_preview.stdout
    pulumi.timings["preview (volume refused)"] = time.monotonic() - started
    claim = kube_api.request("GET", sts_path).body["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "128Gi"
    pulumi.run("config", "set", "--path", "natstopo:cluster.volume.size", "128Gi")

    destroy_leaves_nothing(pulumi, kube_api, "prod")
    print(f"prod timings: {pulumi.timings}")

"""A real kube-apiserver (tests/kube_harness.py) refuses what schema checks let through.

`kubernetes-validate` checks rendered manifests against the OpenAPI schema; an API server
also checks a StatefulSet's selector against its template labels, refuses updates of its
immutable fields (volumeClaimTemplates among them), and validates custom resources against
their CRD's schema. These tests prove the harness with plain HTTPS requests (urllib and the
harness CA): a Namespace and a StatefulSet are stored, the two StatefulSet mistakes are
refused with 422, and the NACK CRDs (`../shared/reference/nack-crds.v0.22.4.yml`) accept a
valid Stream and Consumer and refuse invalid ones.

Skips when kube-apiserver and etcd are not built (`make kube-test-cluster`), unless
NATSTOPO_REQUIRE_KUBE=1, which turns that skip into a failure.
"""

from __future__ import annotations

import copy
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
import pytest
import yaml
from kube_harness import KubeAPI

pytestmark = pytest.mark.kube

KUBE_VERSION = "v1.36.3"
# kubernetes-validate's schemas of the same minor release.
SCHEMA_VERSION = "1.36"
NACK_CRDS = "nack-crds.v0.22.4.yml"
NACK_API = "/apis/jetstream.nats.io/v1beta2"
IMMUTABLE_STS_FIELDS = (
    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
    "'minReadySeconds' are forbidden"
)
SELECTOR_MISMATCH = "`selector` does not match template `labels`"


def statefulset(
    name: str, *, storage: str = "1Gi", selector: dict[str, str] | None = None
) -> dict[str, Any]:
    """A NATS-like StatefulSet with one volume claim template."""
    labels = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceName": name,
            "replicas": 3,
            "selector": {"matchLabels": selector if selector is not None else labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "nats",
                            "image": "nats:2.12.1-alpine",
                            "ports": [{"name": "client", "containerPort": 4222}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": storage}},
                    },
                }
            ],
        },
    }


def sts_path(namespace: str, name: str = "") -> str:
    base = f"/apis/apps/v1/namespaces/{namespace}/statefulsets"
    return f"{base}/{name}" if name else base


# --- the harness itself ---------------------------------------------------------------------


def test_ready_with_admin_token_and_kubeconfig(kube_api: KubeAPI) -> None:
    ready = kube_api.request("GET", "/readyz")
    assert (ready.status, ready.text) == (200, "ok")
    assert kube_api.version == KUBE_VERSION
    assert kube_api.url.startswith("https://127.0.0.1:")

    config = yaml.safe_load(kube_api.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == kube_api.url
    assert Path(cluster["certificate-authority"]) == kube_api.ca_file
    assert "BEGIN CERTIFICATE" in kube_api.ca_file.read_text()
    assert config["users"][0]["user"]["token"] == kube_api.token
    assert config["current-context"] == config["contexts"][0]["name"]

    review = kube_api.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review.status == 201, review.text
    assert "system:masters" in review.body["status"]["userInfo"]["groups"]

    # Authentication is real: another token is refused.
    stranger = KubeAPI(
        url=kube_api.url,
        token="not-the-token",
        ca_file=kube_api.ca_file,
        kubeconfig=kube_api.kubeconfig,
        workdir=kube_api.workdir,
        tls=kube_api.tls,
    )
    assert stranger.request("GET", "/api/v1/namespaces").status == 401


# --- StatefulSets ---------------------------------------------------------------------------


def test_namespace_and_statefulset_are_stored(kube_api: KubeAPI) -> None:
    namespace = f"nats-{uuid.uuid4().hex[:8]}"
    created = kube_api.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    assert created.status == 201, created.text
    try:
        made = kube_api.request("POST", sts_path(namespace), statefulset("nats"))
        assert made.status == 201, made.text

        stored = kube_api.request("GET", sts_path(namespace, "nats"))
        assert stored.status == 200, stored.text
        spec = stored.body["spec"]
        assert spec["replicas"] == 3
        assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
        # Defaults filled in by the API server, not by the manifest.
        assert spec["podManagementPolicy"] == "OrderedReady"
        assert spec["updateStrategy"]["type"] == "RollingUpdate"
    finally:
        kube_api.request("DELETE", f"/api/v1/namespaces/{namespace}")


def test_volume_claim_template_resize_is_refused(kube_api: KubeAPI, kube_namespace: str) -> None:
    made = kube_api.request("POST", sts_path(kube_namespace), statefulset("nats"))
    assert made.status == 201, made.text
    current = kube_api.request("GET", sts_path(kube_namespace, "nats")).body

    resized = copy.deepcopy(current)
    resized["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "2Gi"
    refused = kube_api.request("PUT", sts_path(kube_namespace, "nats"), resized)
    assert refused.status == 422, refused.text
    assert refused.body["reason"] == "Invalid"
    assert IMMUTABLE_STS_FIELDS in refused.message
    assert [c["field"] for c in refused.body["details"]["causes"]] == ["spec"]
    still = kube_api.request("GET", sts_path(kube_namespace, "nats")).body
    assert still["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "1Gi"
    }

    # A routine change of the same object is an update, accepted.
    routine = copy.deepcopy(current)
    routine["spec"]["replicas"] = 5
    routine["spec"]["template"]["spec"]["containers"][0]["image"] = "nats:2.12.2-alpine"
    updated = kube_api.request("PUT", sts_path(kube_namespace, "nats"), routine)
    assert updated.status == 200, updated.text
    assert updated.body["spec"]["replicas"] == 5


@pytest.mark.parametrize("dry_run", [False, True], ids=["create", "dry-run"])
def test_selector_not_matching_template_labels_is_refused(
    kube_api: KubeAPI, kube_namespace: str, dry_run: bool
) -> None:
    manifest = statefulset("nats", selector={"app.kubernetes.io/name": "not-nats"})
    query = "?dryRun=All" if dry_run else ""
    refused = kube_api.request("POST", sts_path(kube_namespace) + query, manifest)
    assert refused.status == 422, refused.text
    assert refused.body["reason"] == "Invalid"
    assert SELECTOR_MISMATCH in refused.message
    causes = {c["field"]: c["message"] for c in refused.body["details"]["causes"]}
    assert "spec.template.metadata.labels" in causes
    assert kube_api.request("GET", sts_path(kube_namespace, "nats")).status == 404


# --- NACK CRDs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nack_crds(kube_api: KubeAPI, shared_reference: Path) -> list[str]:
    """The NACK CRDs installed and Established; their names."""
    docs = [d for d in yaml.safe_load_all((shared_reference / NACK_CRDS).read_text()) if d]
    names = []
    for crd in docs:
        assert crd["kind"] == "CustomResourceDefinition"
        name = crd["metadata"]["name"]
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        if kube_api.request("GET", path).status == 404:
            made = kube_api.request(
                "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
            )
            assert made.status == 201, made.text
        names.append(name)
    deadline = time.monotonic() + 30
    for name in names:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        while True:
            conditions = kube_api.request("GET", path).body.get("status", {}).get("conditions", [])
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                break
            assert time.monotonic() < deadline, f"{name} not Established: {conditions}"
            time.sleep(0.1)
    return names


def stream(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "jetstream.nats.io/v1beta2",
        "kind": "Stream",
        "metadata": {"name": name},
        "spec": {
            "name": name.upper(),
            "subjects": [f"{name}.>"],
            "storage": "file",
            "replicas": 3,
            "maxAge": "24h",
            **spec,
        },
    }


def consumer(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "jetstream.nats.io/v1beta2",
        "kind": "Consumer",
        "metadata": {"name": name},
        "spec": {"streamName": "ORDERS", "durableName": name, "ackPolicy": "explicit", **spec},
    }


def test_nack_crds_are_established(nack_crds: list[str]) -> None:
    assert "streams.jetstream.nats.io" in nack_crds
    assert "consumers.jetstream.nats.io" in nack_crds


def test_valid_stream_and_consumer_are_accepted(
    kube_api: KubeAPI, kube_namespace: str, nack_crds: list[str]
) -> None:
    made = kube_api.request(
        "POST", f"{NACK_API}/namespaces/{kube_namespace}/streams", stream("orders")
    )
    assert made.status == 201, made.text
    # The CRD's structural schema fills in its defaults.
    assert made.body["spec"]["retention"] == "limits"
    assert made.body["spec"]["discard"] == "old"

    made = kube_api.request(
        "POST", f"{NACK_API}/namespaces/{kube_namespace}/consumers", consumer("orders-worker")
    )
    assert made.status == 201, made.text
    assert made.body["spec"]["deliverPolicy"] == "all"


@pytest.mark.parametrize(
    ("plural", "resource", "fragment"),
    [
        pytest.param(
            "streams",
            stream("wrongtype", replicas="three"),
            'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"',
            id="stream-replicas-string",
        ),
        pytest.param(
            "streams",
            stream("subjectsstring", subjects="orders.>"),
            'spec.subjects: Invalid value: "string": spec.subjects in body must be of type array: "string"',
            id="stream-subjects-string",
        ),
        pytest.param(
            "streams",
            stream("badenum", storage="disk"),
            'spec.storage: Unsupported value: "disk": supported values: "file", "memory"',
            id="stream-storage-enum",
        ),
        pytest.param(
            "streams",
            stream("noreplicas", replicas=0),
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
            id="stream-replicas-minimum",
        ),
        pytest.param(
            "consumers",
            consumer("dotted", durableName="orders.worker"),
            'spec.durableName: Invalid value: "orders.worker": spec.durableName in body should match',
            id="consumer-durable-pattern",
        ),
    ],
)
def test_invalid_nack_resource_is_refused_by_the_crd_schema(
    kube_api: KubeAPI,
    kube_namespace: str,
    nack_crds: list[str],
    plural: str,
    resource: dict[str, Any],
    fragment: str,
) -> None:
    path = f"{NACK_API}/namespaces/{kube_namespace}/{plural}"
    refused = kube_api.request("POST", path, resource)
    assert refused.status == 422, refused.text
    assert refused.body["reason"] == "Invalid"
    assert fragment in refused.message, refused.message
    name = resource["metadata"]["name"]
    assert kube_api.request("GET", f"{path}/{name}").status == 404


def test_unknown_stream_field_is_dropped_unless_validation_is_strict(
    kube_api: KubeAPI, kube_namespace: str, nack_crds: list[str]
) -> None:
    path = f"{NACK_API}/namespaces/{kube_namespace}/streams"
    typo = stream("typo", maxAgee="1h")

    # Strict field validation refuses it while decoding, before the schema: 400, not 422.
    strict = kube_api.request("POST", path + "?fieldValidation=Strict", typo)
    assert strict.status == 400, strict.text
    assert strict.body["reason"] == "BadRequest"
    assert 'strict decoding error: unknown field "spec.maxAgee"' in strict.message

    # By default the field is pruned and the object stored, with only a Warning header: a
    # typo in a custom resource is lost without an error.
    made = kube_api.request("POST", path, typo)
    assert made.status == 201, made.text
    assert "maxAgee" not in made.body["spec"]
    assert made.body["spec"]["maxAge"] == "24h"
    assert any('unknown field "spec.maxAgee"' in w for w in made.warnings), made.warnings


# --- the contrast -----------------------------------------------------------------------------


def test_kubernetes_validate_passes_what_the_api_server_refuses() -> None:
    """The contrast: the schema check accepts the manifests the tests above see refused."""
    kubernetes_validate.validate(
        statefulset("nats", selector={"app.kubernetes.io/name": "not-nats"}),
        SCHEMA_VERSION,
        strict=True,
    )
    # A manifest is checked alone: a resize is an update, which no schema check can see.
    kubernetes_validate.validate(statefulset("nats", storage="2Gi"), SCHEMA_VERSION, strict=True)
    # Custom resources are not checked at all: there is no schema for them.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(stream("bad", replicas="three"), SCHEMA_VERSION, strict=True)

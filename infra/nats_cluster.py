"""`NatsCluster`: a JetStream cluster on Kubernetes (StatefulSet, Services, config, budget).

`cluster_objects` builds every Kubernetes object as plain data (what the tests validate
against the Kubernetes schemas); the component only hands them to the Kubernetes provider.
A routine change (image tag, resources, replicas, config) is an in-place update of the
StatefulSet; the fields Kubernetes never changes in place (`IMMUTABLE_FIELDS`) are
recorded as a stack output, so that the next run can refuse a change of them before
anything happens (`replace_problems`) unless the stack allows a replace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from nats_conf import (
    AUTH_DIR,
    AUTH_FILE,
    CLIENT_PORT,
    CLIENT_TLS_DIR,
    CLUSTER_PORT,
    CONFIG_DIR,
    MONITOR_PORT,
    PID_FILE,
    ROUTE_TLS_DIR,
    STORE_DIR,
    TLS_FILES,
    nats_conf_for_cluster,
    render_nats_conf,
)
from stack_settings import ClusterSettings

TYPE = "natstopo:nats_cluster:NatsCluster"
EXPORTER_PORT = 7777
RUN_AS = 1000
# StatefulSet fields the API server refuses to change (pulumi-kubernetes replaces the object).
IMMUTABLE_FIELDS = (
    "serviceName",
    "podManagementPolicy",
    "selector",
    "volumeClaimTemplates",
    "revisionHistoryLimit",
)
SIDECAR_RESOURCES = {"cpu": "50m", "memory": "64Mi"}


def selector_labels(settings: ClusterSettings) -> dict[str, str]:
    """The labels that select the cluster's pods; never change them (the selector is immutable)."""
    return {
        "app.kubernetes.io/name": "nats",
        "app.kubernetes.io/instance": settings.name,
        "app.kubernetes.io/component": "nats",
    }


def common_labels(settings: ClusterSettings, part_of: str) -> dict[str, str]:
    """Kubernetes' recommended labels, on every object."""
    version = settings.version
    labels = {
        **selector_labels(settings),
        "app.kubernetes.io/managed-by": "pulumi",
        "app.kubernetes.io/part-of": part_of,
    }
    if version is not None:
        labels["app.kubernetes.io/version"] = ".".join(map(str, version))
    return labels


@dataclass(frozen=True)
class ClusterObjects:
    """Every Kubernetes object of a cluster, as the API takes it (camelCase dicts)."""

    config_map: dict[str, Any]
    service_account: dict[str, Any]
    headless_service: dict[str, Any]
    client_service: dict[str, Any]
    stateful_set: dict[str, Any]
    disruption_budget: dict[str, Any]
    namespace: dict[str, Any] | None = None
    pod_monitor: dict[str, Any] | None = None
    certificates: tuple[dict[str, Any], ...] = ()
    """cert-manager Issuers and Certificates that make the TLS Secrets (in order)."""

    def all(self) -> list[dict[str, Any]]:
        objects = [
            self.namespace,
            self.service_account,
            self.config_map,
            self.headless_service,
            self.client_service,
            self.stateful_set,
            self.disruption_budget,
            self.pod_monitor,
            *self.certificates,
        ]
        return [o for o in objects if o is not None]


def _meta(settings: ClusterSettings, name: str, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if settings.namespace is not None:
        meta["namespace"] = settings.namespace
    return meta


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "monitor"},
        "initialDelaySeconds": 10,
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def go_mem_limit(settings: ClusterSettings) -> str:
    """GOMEMLIMIT at 80 % of the container's memory limit: the Go runtime collects harder
    before the kernel's OOM killer steps in."""
    return f"{settings.memory_bytes * 8 // 10 // 2**20}MiB"


def cluster_objects(
    settings: ClusterSettings,
    *,
    part_of: str,
    nats_conf: str,
    allow_replace: bool = False,
    skip_await: bool = False,
    auth_secret: str | None = None,
) -> ClusterObjects:
    """The Kubernetes objects of the cluster described by `settings`.

    Args:
        settings: The stack's cluster settings.
        part_of: The topology's name (`app.kubernetes.io/part-of`).
        nats_conf: The text of `nats.conf` (from `render_nats_conf`).
        allow_replace: Mark the StatefulSet as allowed to be replaced (read by the policy pack).
        skip_await: Tell the Kubernetes provider not to wait for the rollout.
        auth_secret: A Secret holding `auth.conf`, mounted at `AUTH_DIR` (nats.conf then
            includes it); None when the stack has no authorization.
    """
    name = settings.name
    labels = common_labels(settings, part_of)
    selector = selector_labels(settings)
    headless = f"{name}-headless"
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(settings, f"{name}-config", labels),
        "data": {"nats.conf": nats_conf},
    }
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(settings, name, labels),
        # The servers never call the Kubernetes API.
        "automountServiceAccountToken": False,
    }
    ports = [
        {"name": "nats", "port": CLIENT_PORT, "targetPort": "nats", "appProtocol": "tcp"},
        {"name": "cluster", "port": CLUSTER_PORT, "targetPort": "cluster", "appProtocol": "tcp"},
        {"name": "monitor", "port": MONITOR_PORT, "targetPort": "monitor", "appProtocol": "http"},
    ]
    headless_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings, headless, labels),
        "spec": {
            "clusterIP": "None",
            # Routes must resolve before the pods are ready: a new cluster forms through them.
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": ports,
        },
    }
    client_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings, name, labels),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": [ports[0]]},
    }
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{name}-config"}},
        {"name": "pid", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "pid", "mountPath": PID_FILE.rsplit("/", 1)[0]},
        {"name": f"{name}-js", "mountPath": STORE_DIR},
    ]
    reloader_mounts = mounts[:2]
    reloader_configs = ["-config", f"{CONFIG_DIR}/nats.conf"]
    if auth_secret is not None:
        # Readable by the servers' user and group (fsGroup) only.
        volumes.append(
            {"name": "auth", "secret": {"secretName": auth_secret, "defaultMode": 0o440}}
        )
        auth_mount = {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True}
        mounts.append(auth_mount)
        reloader_mounts = [*reloader_mounts, auth_mount]
        # A changed Secret (a rotation) reloads the servers as a nats.conf change does.
        reloader_configs += ["-config", f"{AUTH_DIR}/{AUTH_FILE}"]
    if settings.tls.enabled:
        tls_mounts = [("client-tls", settings.client_tls_secret, CLIENT_TLS_DIR)]
        if settings.replicas > 1:
            tls_mounts.append(("route-tls", settings.route_tls_secret, ROUTE_TLS_DIR))
        for volume, secret, folder in tls_mounts:
            volumes.append({"name": volume, "secret": {"secretName": secret, "defaultMode": 0o440}})
            mount = {"name": volume, "mountPath": folder, "readOnly": True}
            mounts.append(mount)
            reloader_mounts = [*reloader_mounts, mount]
            # A renewed certificate reloads the servers (cert-manager rewrites the Secret).
            for file in TLS_FILES:
                reloader_configs += ["-config", f"{folder}/{file}"]
    resources = {"cpu": settings.cpu, "memory": settings.memory}
    nats_container: dict[str, Any] = {
        "name": "nats",
        "image": settings.image,
        "args": ["--config", f"{CONFIG_DIR}/nats.conf"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            # nats.conf says `server_name: $SERVER_NAME`: unique and stable per pod.
            {"name": "SERVER_NAME", "value": "$(POD_NAME)"},
            {"name": "GOMEMLIMIT", "value": go_mem_limit(settings)},
        ],
        "ports": [
            {"name": "nats", "containerPort": CLIENT_PORT},
            {"name": "cluster", "containerPort": CLUSTER_PORT},
            {"name": "monitor", "containerPort": MONITOR_PORT},
        ],
        "volumeMounts": mounts,
        # Startup and readiness ask only whether the server is up: one stream or consumer
        # that is catching up (or broken) must not keep a node from ever becoming ready.
        "startupProbe": _probe("/healthz?js-server-only=true", 10, 90),
        "readinessProbe": _probe("/healthz?js-server-only=true", 10, 3),
        "livenessProbe": _probe("/healthz?js-enabled-only=true", 30, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["nats-server", f"-sl=ldm={PID_FILE}"]}}},
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": _security_context(),
    }
    containers = [nats_container]
    if settings.reloader:
        containers.append(
            {
                "name": "reloader",
                "image": settings.reloader_image,
                "args": ["-pid", PID_FILE, *reloader_configs],
                "volumeMounts": reloader_mounts,
                "resources": {
                    "requests": dict(SIDECAR_RESOURCES),
                    "limits": dict(SIDECAR_RESOURCES),
                },
                "securityContext": _security_context(),
            }
        )
    if settings.exporter:
        containers.append(
            {
                "name": "exporter",
                "image": settings.exporter_image,
                "args": [
                    f"-port={EXPORTER_PORT}",
                    "-connz",
                    "-routez",
                    "-subz",
                    "-varz",
                    "-jsz=all",
                    "-prefix=nats",
                    "-use_internal_server_id",
                    f"http://localhost:{MONITOR_PORT}/",
                ],
                "ports": [{"name": "prom-metrics", "containerPort": EXPORTER_PORT}],
                "resources": {
                    "requests": dict(SIDECAR_RESOURCES),
                    "limits": dict(SIDECAR_RESOURCES),
                },
                "securityContext": _security_context(),
            }
        )
    spread = [("kubernetes.io/hostname", settings.when_unsatisfiable)]
    if settings.spread_zones:
        spread.append(("topology.kubernetes.io/zone", settings.when_unsatisfiable))
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The reloader signals the server's process to reload nats.conf.
        "shareProcessNamespace": settings.reloader,
        "terminationGracePeriodSeconds": settings.termination_grace_period,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": dict(selector)},
            }
            for key, when in spread
        ],
        "containers": containers,
        "volumes": volumes,
    }
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.priority_class_name:
        pod_spec["priorityClassName"] = settings.priority_class_name
    template_meta: dict[str, Any] = {"labels": dict(labels)}
    if settings.restart_on_config_change:
        digest = hashlib.sha256(nats_conf.encode()).hexdigest()[:16]
        template_meta["annotations"] = {"natstopo.io/nats-conf-sha256": digest}
    claim: dict[str, Any] = {
        "metadata": {"name": f"{name}-js", "labels": dict(selector)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": settings.volume_size}},
        },
    }
    if settings.storage_class is not None:
        claim["spec"]["storageClassName"] = settings.storage_class
    sts_meta = _meta(settings, name, labels)
    annotations: dict[str, str] = {}
    if skip_await:
        annotations["pulumi.com/skipAwait"] = "true"
    if allow_replace:
        annotations["natstopo.io/allow-replace"] = "true"
    if annotations:
        sts_meta["annotations"] = annotations
    stateful_set = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": sts_meta,
        "spec": {
            "serviceName": headless,
            "replicas": settings.replicas,
            # With OrderedReady the first pod waits for a meta leader that needs the others.
            "podManagementPolicy": "Parallel",
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": dict(selector)},
            "updateStrategy": {"type": "RollingUpdate"},
            # The volumes hold the streams: keep them when the StatefulSet is deleted or scaled.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {"metadata": template_meta, "spec": pod_spec},
            "volumeClaimTemplates": [claim],
        },
    }
    disruption_budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(settings, name, labels),
        # One server at a time: an R3 stream keeps its quorum through a node drain.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }
    namespace = None
    if settings.create_namespace and settings.namespace is not None:
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": settings.namespace, "labels": dict(labels)},
        }
    pod_monitor = None
    if settings.pod_monitor:
        pod_monitor = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": _meta(settings, name, labels),
            "spec": {
                "selector": {"matchLabels": dict(selector)},
                "podMetricsEndpoints": [{"port": "prom-metrics"}],
            },
        }
    certificates = (
        tls_certificates(settings, labels)
        if settings.tls.enabled and settings.tls.cert_manager
        else ()
    )
    return ClusterObjects(
        certificates=certificates,
        config_map=config_map,
        service_account=service_account,
        headless_service=headless_service,
        client_service=client_service,
        stateful_set=stateful_set,
        disruption_budget=disruption_budget,
        namespace=namespace,
        pod_monitor=pod_monitor,
    )


CERT_MANAGER = "cert-manager.io/v1"


def tls_certificates(
    settings: ClusterSettings, labels: dict[str, str]
) -> tuple[dict[str, Any], ...]:
    """cert-manager objects that make the client and route TLS Secrets.

    Without `issuer_name`, a CA of the stack's own: a self-signed Issuer signs a CA
    Certificate, whose Secret backs the Issuer of the servers' certificates (so `ca.crt` of
    each Secret is that CA, which clients and routes verify against)."""
    tls = settings.tls
    name = settings.name
    out: list[dict[str, Any]] = []
    issuer = {"kind": tls.issuer_kind, "name": tls.issuer_name, "group": "cert-manager.io"}
    if tls.issuer_name is None:
        selfsigned, ca = f"{name}-selfsigned", f"{name}-ca"
        out += [
            {
                "apiVersion": CERT_MANAGER,
                "kind": "Issuer",
                "metadata": _meta(settings, selfsigned, labels),
                "spec": {"selfSigned": {}},
            },
            {
                "apiVersion": CERT_MANAGER,
                "kind": "Certificate",
                "metadata": _meta(settings, ca, labels),
                "spec": {
                    "isCA": True,
                    "commonName": f"{name} CA",
                    "secretName": ca,
                    "duration": "87600h",
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                    "issuerRef": {"kind": "Issuer", "name": selfsigned, "group": "cert-manager.io"},
                },
            },
            {
                "apiVersion": CERT_MANAGER,
                "kind": "Issuer",
                "metadata": _meta(settings, ca, labels),
                "spec": {"ca": {"secretName": ca}},
            },
        ]
        issuer = {"kind": "Issuer", "name": ca, "group": "cert-manager.io"}
    headless = f"{name}-headless"
    fqdn = (
        "" if settings.namespace is None else f".{settings.namespace}.svc.{settings.cluster_domain}"
    )
    client_names = [name]
    if settings.namespace is not None:
        ns = settings.namespace
        client_names += [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}{fqdn}"]
    route_names = [f"*.{headless}"] + ([f"*.{headless}{fqdn}"] if fqdn else [])
    wanted = [("client-tls", settings.client_tls_secret, client_names, ["server auth"])]
    if settings.replicas > 1:
        # Each route is a server to the routes that dial it and a client to those it dials.
        wanted.append(
            ("route-tls", settings.route_tls_secret, route_names, ["server auth", "client auth"])
        )
    for suffix, secret, dns_names, usages in wanted:
        out.append(
            {
                "apiVersion": CERT_MANAGER,
                "kind": "Certificate",
                "metadata": _meta(settings, f"{name}-{suffix}", labels),
                "spec": {
                    "secretName": secret,
                    "dnsNames": dns_names,
                    "usages": ["digital signature", "key encipherment", *usages],
                    "duration": tls.duration,
                    "renewBefore": tls.renew_before,
                    "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                    "issuerRef": issuer,
                },
            }
        )
    return tuple(out)


def immutable_record(stateful_set: dict[str, Any]) -> dict[str, Any]:
    """The StatefulSet's fields that only a replace can change, as a stack output records them."""
    spec = stateful_set["spec"]
    return {k: spec[k] for k in IMMUTABLE_FIELDS}


def _describe(field: str, before: Any, after: Any) -> str:
    if field == "volumeClaimTemplates":
        try:
            b, a = before[0]["spec"], after[0]["spec"]
            parts = []
            for key, label in (("resources", "size"), ("storageClassName", "storage class")):
                bv = (
                    b.get(key, {}).get("requests", {}).get("storage")
                    if key == "resources"
                    else b.get(key)
                )
                av = (
                    a.get(key, {}).get("requests", {}).get("storage")
                    if key == "resources"
                    else a.get(key)
                )
                if bv != av:
                    parts.append(f"volume {label} {bv or 'default'} -> {av or 'default'}")
            if parts:
                return ", ".join(parts)
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        return "volumeClaimTemplates"
    return f"{field} {before!r} -> {after!r}"


def replace_problems(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The changes of immutable StatefulSet fields since the last run (empty when none)."""
    if not previous:
        return []
    return [
        _describe(f, previous.get(f), current.get(f))
        for f in IMMUTABLE_FIELDS
        if f in previous and _normal(previous.get(f)) != _normal(current.get(f))
    ]


def _normal(value: Any) -> Any:
    """Outputs come back through JSON (3 -> 3.0): compare numbers as numbers."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class NatsClusterArgs(TypedDict):
    """Arguments of `NatsCluster`."""

    settings: ClusterSettings
    """The stack's cluster settings (`natstopo:cluster`)."""
    part_of: str
    """The topology's name, for the `app.kubernetes.io/part-of` label."""
    protect: bool
    """Mark the StatefulSet `protect`: Pulumi then refuses to delete or replace it."""
    allow_replace: bool
    """The stack allows the StatefulSet to be replaced (a change of an immutable field)."""
    skip_await: bool
    """Do not wait for the StatefulSet's rollout (`pulumi.com/skipAwait`)."""
    auth_secret: str | None
    """A Secret holding `auth.conf` (the servers' authorization), or None."""
    auth_includes: tuple[str, ...]
    """Files of that Secret that `nats.conf` includes (relative to `nats.conf`)."""


class NatsCluster(pulumi.ComponentResource):
    """A JetStream cluster: ConfigMap, Services, StatefulSet, PodDisruptionBudget, ServiceAccount.

    Outputs:
        client_url: What applications in the cluster connect to.
        nats_conf: The generated configuration.
        immutable: The StatefulSet's fields that only a replace can change.
    """

    client_url: pulumi.Output[str]
    nats_conf: pulumi.Output[str]
    immutable: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: NatsClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        settings = args["settings"]
        conf_text = render_nats_conf(nats_conf_for_cluster(settings, args["auth_includes"]))
        objects = cluster_objects(
            settings,
            part_of=args["part_of"],
            nats_conf=conf_text,
            allow_replace=args["allow_replace"],
            skip_await=args["skip_await"],
            auth_secret=args["auth_secret"],
        )
        child = pulumi.ResourceOptions(parent=self)
        depends: list[pulumi.Resource] = []
        if objects.namespace is not None:
            ns = k8s.core.v1.Namespace(
                f"{name}-namespace", metadata=objects.namespace["metadata"], opts=child
            )
            depends.append(ns)
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=depends)
        sa = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=objects.service_account["metadata"],
            automount_service_account_token=False,
            opts=in_ns,
        )
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=objects.config_map["metadata"],
            data=objects.config_map["data"],
            opts=in_ns,
        )
        headless = k8s.core.v1.Service(
            f"{name}-headless",
            metadata=objects.headless_service["metadata"],
            spec=objects.headless_service["spec"],
            opts=in_ns,
        )
        k8s.core.v1.Service(
            f"{name}-client",
            metadata=objects.client_service["metadata"],
            spec=objects.client_service["spec"],
            opts=in_ns,
        )
        sts = objects.stateful_set
        # What holds the data is protected unless the stack allows a replace; a replace must
        # delete first, since the StatefulSet keeps its name.
        k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=sts["metadata"],
            spec=sts["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*depends, sa, config, headless],
                protect=args["protect"] and not args["allow_replace"],
                delete_before_replace=True,
            ),
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=objects.disruption_budget["metadata"],
            spec=objects.disruption_budget["spec"],
            opts=in_ns,
        )
        for cert in objects.certificates:
            k8s.apiextensions.CustomResource(
                f"{name}-{cert['kind'].lower()}-{cert['metadata']['name']}",
                api_version=cert["apiVersion"],
                kind=cert["kind"],
                metadata=cert["metadata"],
                spec=cert["spec"],
                opts=in_ns,
            )
        if objects.pod_monitor is not None:
            k8s.apiextensions.CustomResource(
                f"{name}-pod-monitor",
                api_version=objects.pod_monitor["apiVersion"],
                kind=objects.pod_monitor["kind"],
                metadata=objects.pod_monitor["metadata"],
                spec=objects.pod_monitor["spec"],
                opts=in_ns,
            )
        c = settings
        host = c.name if c.namespace is None else f"{c.name}.{c.namespace}.svc.{c.cluster_domain}"
        self.client_url = pulumi.Output.from_input(f"nats://{host}:{CLIENT_PORT}")
        self.nats_conf = pulumi.Output.from_input(conf_text)
        self.immutable = pulumi.Output.from_input(immutable_record(sts))
        self.register_outputs(
            {
                "client_url": self.client_url,
                "nats_conf": self.nats_conf,
                "immutable": self.immutable,
            }
        )

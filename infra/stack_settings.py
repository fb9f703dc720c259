"""A stack's settings, read from its Pulumi config (`Pulumi.<stack>.yaml`), checked strictly.

Pure: no Pulumi import, so that the local job (tools/local_up.py) reads the same settings
from the same file as the program does. Every key lives under the `natstopo:` namespace;
an unknown key, a wrong type or an impossible value is a `SettingsError` that names the key
(`natstopo:cluster.volume.sise: unknown key (did you mean `size`?)`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

from bus_runtime import parse_duration

NAMESPACE = "natstopo"
NANOS = 1_000_000_000
Provisioner = Literal["direct", "nack", "none"]
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FACTORS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
_IMAGE_VERSION = re.compile(r":v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-@].*)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SettingsError(ValueError):
    """Stack config that cannot be used; `problems` holds one line per key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(problems))


def parse_quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity (`10Gi`, `512Mi`, `1G`, `1048576`).

    Raises:
        ValueError: Not a quantity of bytes.
    """
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (use Kubernetes units: 512Mi, 10Gi, 1Ti)")
    return int(float(m.group(1)) * _FACTORS[m.group(2)])


def human_size(size: int) -> str:
    """A size for people: `115.2GiB`, `256MiB`, `0B`."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f}".rstrip("0").rstrip(".") + unit
    return f"{size}B"


def image_version(image: str) -> tuple[int, int, int] | None:
    """The nats-server version an image tag names (`nats:2.10.26-alpine` -> 2.10.26), or None."""
    m = _IMAGE_VERSION.search(image)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


@dataclass(frozen=True)
class TlsSettings:
    """TLS of the clients' and the routes' listeners (`natstopo:cluster.tls`).

    Attributes:
        enabled: Clients and routes must use TLS; the certificates come from two Secrets
            (`tls.crt`, `tls.key`, `ca.crt`, as cert-manager writes them).
        client_secret: The Secret of the client listener's certificate (default
            `<cluster>-client-tls`).
        route_secret: The Secret of the routes' certificate, presented both ways (the routes
            verify each other against its `ca.crt`; default `<cluster>-route-tls`).
        cert_manager: The stack makes both Secrets with cert-manager `Certificate`s.
        issuer_kind: `Issuer` or `ClusterIssuer` of the certificates.
        issuer_name: The issuer; None makes a CA for the stack (a self-signed `Issuer`, a CA
            `Certificate` and an `Issuer` of that CA, in the cluster's namespace).
        duration: How long a certificate is valid (Go duration, cert-manager's field).
        renew_before: How long before the end cert-manager renews it.
    """

    enabled: bool = False
    client_secret: str | None = None
    route_secret: str | None = None
    cert_manager: bool = False
    issuer_kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"
    issuer_name: str | None = None
    duration: str = "2160h"
    renew_before: str = "360h"


@dataclass(frozen=True)
class ClusterSettings:
    """The NATS cluster of a stack (`natstopo:cluster`).

    Attributes:
        name: Base name of every object (StatefulSet, Services, ConfigMap) and the NATS
            cluster name.
        namespace: Kubernetes namespace, or None for the provider's default.
        create_namespace: Create the namespace as part of the stack.
        replicas: Servers in the cluster (and pods of the StatefulSet).
        image: The nats-server image; its tag gives the server version unless
            `server_version` is set.
        server_version: The server version, when the tag does not tell it.
        volume_size: Size of each server's JetStream volume, as written (`10Gi`).
        storage_class: StorageClass of the volumes, or None for the cluster's default.
        max_file_store: JetStream file storage per server in bytes; default 90 % of the
            volume (the rest is the filesystem's and the store's own overhead).
        max_memory_store: JetStream memory storage per server in bytes.
        cpu: CPU of the nats container (requests = limits).
        memory: Memory of the nats container (requests = limits); GOMEMLIMIT is 80 % of it.
        spread_zones: Spread the pods across zones too, not only nodes.
        when_unsatisfiable: `DoNotSchedule` (strict spread) or `ScheduleAnyway`.
        lame_duck_duration: Seconds over which a stopping server closes its clients.
        lame_duck_grace_period: Seconds a stopping server waits before closing clients.
        max_payload: Largest message the server accepts, in bytes.
        max_connections: Client connections per server, or None for the server's default.
        reloader: Run the config reloader sidecar (a config change reloads, no restart).
        reloader_image: Image of the reloader.
        exporter: Run the Prometheus exporter sidecar (port 7777).
        exporter_image: Image of the exporter.
        pod_monitor: Create a PodMonitor (prometheus-operator) for the exporter.
        node_selector: Node labels the pods must match.
        tolerations: Tolerations of the pods (Kubernetes objects, as written).
        priority_class_name: PriorityClass of the pods, or None.
        cluster_domain: The cluster's DNS domain (routes use FQDNs when a namespace is set).
        restart_on_config_change: Roll the pods on a nats.conf change (for settings the
            server cannot reload) instead of reloading them.
        tls: TLS of the client and route listeners.
    """

    name: str = "nats"
    namespace: str | None = None
    create_namespace: bool = False
    replicas: int = 3
    image: str = "nats:2.15.1-alpine"
    server_version: tuple[int, int, int] | None = None
    volume_size: str = "10Gi"
    storage_class: str | None = None
    max_file_store: int | None = None
    max_memory_store: int = 0
    cpu: str = "2"
    memory: str = "8Gi"
    spread_zones: bool = False
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = "DoNotSchedule"
    lame_duck_duration: int = 30
    lame_duck_grace_period: int = 10
    max_payload: int = 1024 * 1024
    max_connections: int | None = None
    reloader: bool = True
    reloader_image: str = "natsio/nats-server-config-reloader:0.18.2"
    exporter: bool = False
    exporter_image: str = "natsio/prometheus-nats-exporter:0.17.3"
    pod_monitor: bool = False
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    priority_class_name: str | None = None
    cluster_domain: str = "cluster.local"
    restart_on_config_change: bool = False
    tls: TlsSettings = field(default_factory=TlsSettings)

    @property
    def client_tls_secret(self) -> str:
        return self.tls.client_secret or f"{self.name}-client-tls"

    @property
    def route_tls_secret(self) -> str:
        return self.tls.route_secret or f"{self.name}-route-tls"

    @property
    def volume_bytes(self) -> int:
        return parse_quantity(self.volume_size)

    @property
    def file_store_bytes(self) -> int:
        """JetStream's max_file_store per server."""
        if self.max_file_store is not None:
            return self.max_file_store
        return self.volume_bytes * 9 // 10

    @property
    def memory_bytes(self) -> int:
        return parse_quantity(self.memory)

    @property
    def version(self) -> tuple[int, int, int] | None:
        """The server version: `server_version`, else the image tag's."""
        return self.server_version or image_version(self.image)

    @property
    def termination_grace_period(self) -> int:
        """Seconds Kubernetes waits for a pod: the whole lame duck, plus 20 s to spare."""
        return self.lame_duck_duration + self.lame_duck_grace_period + 20


@dataclass(frozen=True)
class KubernetesSettings:
    """Where the Kubernetes objects go (`natstopo:kubernetes`).

    Attributes:
        render_dir: Write the objects as YAML files here instead of applying them (absolute,
            resolved against the project folder); None applies them to a cluster.
        kubeconfig: Path or content of a kubeconfig; None uses the ambient one.
        context: The kubeconfig context to use.
        skip_await: Do not wait for objects to become ready (`pulumi.com/skipAwait`).
    """

    render_dir: Path | None = None
    kubeconfig: str | None = None
    context: str | None = None
    skip_await: bool = False


@dataclass(frozen=True)
class StackSettings:
    """Everything the program reads from one stack's config.

    Attributes:
        stack: The stack's name.
        environment: The topology environment (default: the stack's name).
        topology: The topology file (absolute).
        cluster: The NATS cluster.
        kubernetes: Where the Kubernetes objects go.
        provisioner: How streams and consumers reach the server: `direct` (the reconciler,
            over `nats_url`), `nack` (NACK custom resources) or `none`.
        nats_url: Server URLs the direct provisioner connects to.
        nack_servers: Server URLs written into NACK resources (default: the cluster's client
            Service).
        nack_account: NACK account resource to bind the NACK resources to, or None.
        allow_destructive: Let streams and consumers be replaced or deleted, and limits be
            lowered (stored messages are lost).
        allow_replace: Let the StatefulSet be replaced (a change only a recreate can make).
        protect: Mark the StatefulSet `protect` (Pulumi refuses to delete or replace it).
        authorization: The servers refuse every client without credentials: the program
            makes one credential per identity (each service, `admin`, `monitor`) and
            generation, a Secret per identity, and the servers' `auth.conf` (a Secret).
        credential_generations: Identity -> its valid generations, oldest first (default
            `(1,)` for every identity): two during a rotation's overlap. The newest is the
            one its Secret holds.
    """

    stack: str
    environment: str
    topology: Path
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    provisioner: Provisioner = "direct"
    nats_url: tuple[str, ...] = ()
    nack_servers: tuple[str, ...] = ()
    nack_account: str | None = None
    allow_destructive: bool = False
    allow_replace: bool = False
    protect: bool = True
    authorization: bool = True
    credential_generations: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def generations(self, identity: str) -> tuple[int, ...]:
        """The valid generations of `identity`, oldest first."""
        return dict(self.credential_generations).get(identity, (1,))

    @property
    def client_url(self) -> str:
        """The URL applications in the cluster connect to (the client Service)."""
        c = self.cluster
        host = c.name if c.namespace is None else f"{c.name}.{c.namespace}.svc.{c.cluster_domain}"
        return f"nats://{host}:4222"


# --------------------------------------------------------------------------- reading


class _Reader:
    """Walks a config object, taking known keys and reporting everything else."""

    def __init__(self, problems: list[str], where: str, value: Any, sep: str = ".") -> None:
        self.problems = problems
        self.where = where
        self.sep = sep
        self.value: dict[str, Any] = {}
        if value is None:
            return
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {_kind(value)}")
            return
        self.value = dict(value)

    def at(self, key: str) -> str:
        return f"{self.where}{self.sep}{key}"

    def done(self, known: list[str]) -> None:
        for key in self.value:
            if key not in known:
                close = get_close_matches(key, known, n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                self.problems.append(
                    f"{self.at(key)}: unknown key{hint}; known: {', '.join(known)}"
                )

    def sub(self, key: str) -> _Reader:
        return _Reader(self.problems, self.at(key), self.value.get(key))

    def raw(self, key: str) -> Any:
        return self.value.get(key)

    def string(self, key: str, default: str | None) -> str | None:
        v = self.value.get(key, default)
        if v is None or isinstance(v, str):
            return v
        self.problems.append(f"{self.at(key)}: expected a string, got {_kind(v)}")
        return default

    def boolean(self, key: str, default: bool) -> bool:
        v = self.value.get(key, default)
        if isinstance(v, str) and v in ("true", "false"):
            return v == "true"
        if isinstance(v, bool):
            return v
        self.problems.append(f"{self.at(key)}: expected true or false, got {v!r}")
        return default

    def integer(self, key: str, default: int | None, minimum: int) -> int | None:
        v = self.value.get(key, default)
        if v is None:
            return None
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, int) and not isinstance(v, bool) and v >= minimum:
            return v
        self.problems.append(f"{self.at(key)}: expected an integer >= {minimum}, got {v!r}")
        return default

    def quantity(self, key: str, default: str | None) -> str | None:
        v = self.value.get(key, default)
        if v is None:
            return None
        text = str(v)
        try:
            if parse_quantity(text) <= 0 and key != "maxMemoryStore":
                raise ValueError(f"{text!r} must be above zero")
        except ValueError as exc:
            self.problems.append(f"{self.at(key)}: {exc}")
            return default
        return text

    def seconds(self, key: str, default: int) -> int:
        v = self.value.get(key)
        if v is None:
            return default
        try:
            ns = parse_duration(v if isinstance(v, str) else f"{v}s")
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{self.at(key)}: {exc}")
            return default
        return int(ns // NANOS)

    def urls(self, key: str) -> tuple[str, ...]:
        v = self.value.get(key)
        if v is None:
            return ()
        items = v.split(",") if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            self.problems.append(f"{self.at(key)}: expected URLs (a list or comma-separated)")
            return ()
        out = tuple(u.strip() for u in items if u.strip())
        for u in out:
            if "://" not in u:
                self.problems.append(f"{self.at(key)}: {u!r} is not a URL (nats://host:port)")
        return out


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _decode(value: Any) -> Any:
    """Structured config reaches a program as JSON text; a YAML file gives objects."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


TOP_KEYS = [
    "topology",
    "environment",
    "cluster",
    "kubernetes",
    "provisioner",
    "natsUrl",
    "natsCredentials",
    "nack",
    "allowDestructive",
    "allowReplace",
    "protect",
    "authorization",
    "credentialGenerations",
]


def read_settings(config: Mapping[str, Any], stack: str, project_root: Path) -> StackSettings:
    """The settings of `stack` from its config (keys `natstopo:...`; other namespaces ignored).

    Raises:
        SettingsError: Every unknown key, wrong type or impossible value, one line each.
    """
    problems: list[str] = []
    ours = {
        k.split(":", 1)[1]: _decode(v) for k, v in config.items() if k.startswith(f"{NAMESPACE}:")
    }
    top = _Reader(problems, NAMESPACE, ours, sep=":")
    top.done(TOP_KEYS)
    where = top.sub
    topology = top.string("topology", "topology/topology.yaml") or "topology/topology.yaml"
    environment = top.string("environment", stack) or stack
    cluster = _cluster(where("cluster"))
    kubernetes = _kubernetes(where("kubernetes"), project_root)
    provisioner = top.string("provisioner", "direct") or "direct"
    if provisioner not in ("direct", "nack", "none"):
        problems.append(
            f"{NAMESPACE}:provisioner: {provisioner!r} is not one of direct, nack, none"
        )
        provisioner = "none"
    nats_url = tuple(u for u in top.urls("natsUrl") if "://" in u)
    if provisioner == "direct" and not nats_url:
        problems.append(
            f"{NAMESPACE}:natsUrl: the direct provisioner needs the server URLs it connects to "
            f"(pulumi config set {NAMESPACE}:natsUrl nats://host:4222)"
        )
    nack = where("nack")
    nack_servers = nack.urls("servers")
    nack_account = nack.string("account", None)
    nack.done(["servers", "account"])
    settings = StackSettings(
        stack=stack,
        environment=environment,
        topology=(project_root / topology).resolve(),
        cluster=cluster,
        kubernetes=kubernetes,
        provisioner=provisioner,  # type: ignore[arg-type]
        nats_url=nats_url,
        nack_servers=nack_servers,
        nack_account=nack_account,
        allow_destructive=top.boolean("allowDestructive", False),
        allow_replace=top.boolean("allowReplace", False),
        protect=top.boolean("protect", True),
        authorization=top.boolean("authorization", True),
        credential_generations=_generations(top),
    )
    if settings.credential_generations and not settings.authorization:
        problems.append(
            f"{NAMESPACE}:credentialGenerations: needs `{NAMESPACE}:authorization: true` "
            "(without authorization there are no credentials to rotate)"
        )
    if problems:
        raise SettingsError(problems)
    return settings


def _generations(top: _Reader) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """`credentialGenerations: {svc-ocr: [1, 2]}`: each identity's valid generations."""
    where = top.at("credentialGenerations")
    raw = top.raw("credentialGenerations")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        top.problems.append(f"{where}: expected an object of identity: [generations]")
        return ()
    out = []
    for identity, gens in sorted(raw.items()):
        if isinstance(gens, int) and not isinstance(gens, bool):
            gens = [gens]
        ok = (
            isinstance(gens, list)
            and 1 <= len(gens) <= 2
            and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in gens)
            and list(gens) == sorted(set(gens))
        )
        if not ok:
            top.problems.append(
                f"{where}.{identity}: expected one or two generations, increasing integers >= 1 "
                f"(`[1, 2]` during a rotation, then `[2]`), got {gens!r}"
            )
            continue
        out.append((str(identity), tuple(gens)))
    return tuple(out)


def _cluster(r: _Reader) -> ClusterSettings:
    d = ClusterSettings()
    name = r.string("name", d.name) or d.name
    if not _DNS_LABEL.match(name) or len(name) > 40:
        r.problems.append(f"{r.where}.name: {name!r} is not a DNS label of at most 40 characters")
    namespace = r.string("namespace", None)
    if namespace is not None and not _DNS_LABEL.match(namespace):
        r.problems.append(f"{r.where}.namespace: {namespace!r} is not a DNS label")
    volume = r.sub("volume")
    volume_size = volume.quantity("size", d.volume_size) or d.volume_size
    storage_class = volume.string("storageClass", None)
    volume.done(["size", "storageClass"])
    js = r.sub("jetstream")
    max_file = js.quantity("maxFileStore", None)
    max_mem = js.quantity("maxMemoryStore", "0") or "0"
    js.done(["maxFileStore", "maxMemoryStore"])
    res = r.sub("resources")
    cpu = res.string("cpu", d.cpu) or d.cpu
    if not _CPU.match(cpu):
        r.problems.append(f"{res.where}.cpu: {cpu!r} is not a CPU quantity (2, 500m)")
    memory = res.quantity("memory", d.memory) or d.memory
    res.done(["cpu", "memory"])
    spread = r.sub("spread")
    zones = spread.boolean("zones", False)
    when = spread.string("whenUnsatisfiable", d.when_unsatisfiable) or d.when_unsatisfiable
    if when not in ("DoNotSchedule", "ScheduleAnyway"):
        r.problems.append(
            f"{spread.where}.whenUnsatisfiable: {when!r} is not DoNotSchedule or ScheduleAnyway"
        )
    spread.done(["zones", "whenUnsatisfiable"])
    lame = r.sub("lameDuck")
    duration = lame.seconds("duration", d.lame_duck_duration)
    grace = lame.seconds("gracePeriod", d.lame_duck_grace_period)
    lame.done(["duration", "gracePeriod"])
    limits = r.sub("limits")
    max_payload = limits.quantity("maxPayload", None)
    max_connections = limits.integer("maxConnections", None, 1)
    limits.done(["maxPayload", "maxConnections"])
    reloader = r.sub("reloader")
    reloader_on = reloader.boolean("enabled", d.reloader)
    reloader_image = reloader.string("image", d.reloader_image) or d.reloader_image
    reloader.done(["enabled", "image"])
    mon = r.sub("monitoring")
    exporter = mon.boolean("exporter", d.exporter)
    exporter_image = mon.string("exporterImage", d.exporter_image) or d.exporter_image
    pod_monitor = mon.boolean("podMonitor", d.pod_monitor)
    mon.done(["exporter", "exporterImage", "podMonitor"])
    if pod_monitor and not exporter:
        r.problems.append(
            f"{mon.where}.podMonitor: needs `exporter: true` (it scrapes the exporter)"
        )
    sched = r.sub("scheduling")
    node_selector = sched.raw("nodeSelector") or {}
    if not isinstance(node_selector, dict) or not all(
        isinstance(v, str) for v in node_selector.values()
    ):
        r.problems.append(f"{sched.where}.nodeSelector: expected an object of label: value")
        node_selector = {}
    tolerations = sched.raw("tolerations") or []
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        r.problems.append(f"{sched.where}.tolerations: expected a list of tolerations")
        tolerations = []
    priority = sched.string("priorityClassName", None)
    sched.done(["nodeSelector", "tolerations", "priorityClassName"])
    version_text = r.string("serverVersion", None)
    server_version = None
    if version_text is not None:
        server_version = image_version(f":{version_text}")
        if server_version is None:
            r.problems.append(
                f"{r.where}.serverVersion: {version_text!r} is not a version (2.10.26)"
            )
    image = r.string("image", d.image) or d.image
    replicas = r.integer("replicas", d.replicas, 1) or d.replicas
    tls = _tls(r.sub("tls"))
    r.done(
        [
            "name",
            "namespace",
            "createNamespace",
            "replicas",
            "image",
            "serverVersion",
            "volume",
            "jetstream",
            "resources",
            "spread",
            "lameDuck",
            "limits",
            "reloader",
            "monitoring",
            "scheduling",
            "clusterDomain",
            "restartOnConfigChange",
            "tls",
        ]
    )
    return ClusterSettings(
        name=name,
        namespace=namespace,
        create_namespace=r.boolean("createNamespace", False),
        replicas=replicas,
        image=image,
        server_version=server_version,
        volume_size=volume_size,
        storage_class=storage_class,
        max_file_store=parse_quantity(max_file) if max_file else None,
        max_memory_store=parse_quantity(max_mem),
        cpu=cpu,
        memory=memory,
        spread_zones=zones,
        when_unsatisfiable=when,  # type: ignore[arg-type]
        lame_duck_duration=duration,
        lame_duck_grace_period=grace,
        max_payload=parse_quantity(max_payload) if max_payload else d.max_payload,
        max_connections=max_connections,
        reloader=reloader_on,
        reloader_image=reloader_image,
        exporter=exporter,
        exporter_image=exporter_image,
        pod_monitor=pod_monitor,
        node_selector=tuple(sorted(node_selector.items())),
        tolerations=tuple(tolerations),
        priority_class_name=priority,
        cluster_domain=r.string("clusterDomain", d.cluster_domain) or d.cluster_domain,
        restart_on_config_change=r.boolean("restartOnConfigChange", False),
        tls=tls,
    )


_GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$")


def _tls(r: _Reader) -> TlsSettings:
    d = TlsSettings()
    enabled = r.boolean("enabled", False)
    secrets = {}
    for key in ("clientSecret", "routeSecret"):
        value = r.string(key, None)
        if value is not None and not _DNS_LABEL.match(value):
            r.problems.append(f"{r.at(key)}: {value!r} is not a Secret name (a DNS label)")
        secrets[key] = value
    cm = r.sub("certManager")
    cert_manager = cm.boolean("enabled", False)
    issuer = cm.sub("issuer")
    kind = issuer.string("kind", d.issuer_kind) or d.issuer_kind
    if kind not in ("Issuer", "ClusterIssuer"):
        issuer.problems.append(f"{issuer.at('kind')}: {kind!r} is not Issuer or ClusterIssuer")
        kind = d.issuer_kind
    name = issuer.string("name", None)
    issuer.done(["kind", "name"])
    durations = {}
    for key, default in (("duration", d.duration), ("renewBefore", d.renew_before)):
        value = cm.string(key, default) or default
        if not _GO_DURATION.match(value):
            cm.problems.append(f"{cm.at(key)}: {value!r} is not a Go duration (2160h, 90m)")
            value = default
        durations[key] = value
    cm.done(["enabled", "issuer", "duration", "renewBefore"])
    r.done(["enabled", "clientSecret", "routeSecret", "certManager"])
    if cert_manager and not enabled:
        r.problems.append(f"{cm.at('enabled')}: needs `{r.at('enabled')}: true`")
    return TlsSettings(
        enabled=enabled,
        client_secret=secrets["clientSecret"],
        route_secret=secrets["routeSecret"],
        cert_manager=cert_manager,
        issuer_kind=kind,  # type: ignore[arg-type]
        issuer_name=name,
        duration=durations["duration"],
        renew_before=durations["renewBefore"],
    )


def _kubernetes(r: _Reader, project_root: Path) -> KubernetesSettings:
    render = r.string("renderDir", None)
    settings = KubernetesSettings(
        render_dir=(project_root / render).resolve() if render else None,
        kubeconfig=r.string("kubeconfig", None),
        context=r.string("context", None),
        skip_await=r.boolean("skipAwait", False),
    )
    r.done(["renderDir", "kubeconfig", "context", "skipAwait"])
    if settings.render_dir is not None and (settings.kubeconfig or settings.context):
        r.problems.append(
            f"{r.where}: renderDir writes files and talks to no cluster; drop kubeconfig/context "
            "or renderDir"
        )
    return settings


def read_stack_file(path: Path) -> dict[str, Any]:
    """The `config:` mapping of a `Pulumi.<stack>.yaml` file (for tools that run no program)."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise SettingsError([f"{path}: `config` is not a mapping"])
    return config

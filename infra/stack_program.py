"""`build`: what `__main__.py` runs for a stack, kept importable for the tests.

Everything that can refuse the deployment runs first and raises `pulumi.RunError` before
any resource is registered, so nothing is half-applied:
1. the stack's config (`natstopo:*`) is read strictly;
2. the topology is loaded for the stack's environment (validate's `file:line:col` errors);
3. the cluster checks of `preflight.check_cluster`;
4. a change of a StatefulSet field only a replace can make (compared with what the last run
   recorded in the stack's outputs), unless `natstopo:allowReplace`;
5. for the direct provisioner, the reconciler's plan against the server: deletes of assets
   this stack created, and (in `up`; a preview shows them per asset) replace and
   destructive steps, unless `natstopo:allowDestructive`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

import preflight
from bus_runtime import BusError, Topology, TopologyValidationError, load_topology
from direct_provisioner import DirectProvisioner, preflight_plan
from nack import NackError, NackProvisioner, NackTarget, nack_resources
from nats_cluster import NatsCluster, common_labels, immutable_record, replace_problems
from nats_cluster import cluster_objects as _cluster_objects
from nats_conf import AUTH_INCLUDE, nats_conf_for_cluster, render_nats_conf
from stack_credentials import StackCredentials, identities
from stack_settings import SettingsError, StackSettings, read_settings
from topology_bundle import TopologyBundle

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Outputs that the next run reads back (through the engine) to see what this one deployed.
RECORD_OUTPUT = "deployed"


def _refuse(title: str, problems: list[str]) -> None:
    lines = "\n".join(f"  - {p}" for p in problems)
    raise pulumi.RunError(f"{title}:\n{lines}")


def _nack_target(
    settings: StackSettings, account: str | None, labels: dict[str, str]
) -> NackTarget:
    return NackTarget(
        servers=settings.nack_servers or (settings.client_url,),
        namespace=settings.cluster.namespace,
        account=account,
        prevent_delete=not settings.allow_destructive,
        labels=labels,
    )


def _check_nack(stack: str, settings: StackSettings, topology: Topology) -> None:
    """What NACK's resources cannot express, found before anything is registered (the
    NackProvisioner would otherwise stop half-way, after the cluster's objects)."""
    try:
        nack_resources(topology, _nack_target(settings, settings.nack_account, {}))
    except NackError as exc:
        _refuse(
            f"stack `{stack}`: NACK cannot provision the topology (nothing was changed; "
            "natstopo:provisioner direct can)",
            [str(exc)],
        )


def _config() -> dict[str, Any]:
    return dict(pulumi.runtime.config.CONFIG.get())


def load_settings(stack: str) -> StackSettings:
    config = _config()
    if not any(k.startswith("natstopo:") for k in config):
        from difflib import get_close_matches

        stacks = sorted(p.name.split(".")[1] for p in PROJECT_ROOT.glob("Pulumi.*.yaml"))
        close = get_close_matches(stack, stacks, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise pulumi.RunError(
            f"stack `{stack}` has no natstopo config (no Pulumi.{stack}.yaml, or no natstopo:* "
            f"keys in it): a stack is a topology environment, and this project has "
            f"{', '.join(stacks)}{hint}. Select one (pulumi stack select), or write "
            f"Pulumi.{stack}.yaml (docs/infra.md lists the keys)"
        )
    try:
        return read_settings(config, stack, PROJECT_ROOT)
    except SettingsError as exc:
        _refuse(
            f"stack `{stack}`: the config (Pulumi.{stack}.yaml) cannot be used", list(exc.problems)
        )
        raise  # unreachable: _refuse raises


def load_stack_topology(settings: StackSettings) -> Topology:
    try:
        return load_topology(settings.topology, settings.environment)
    except TopologyValidationError as exc:
        _refuse(
            f"the topology {settings.topology} does not validate for environment "
            f"`{settings.environment}` (natstopo validate --env {settings.environment})",
            [str(e) for e in exc.errors],
        )
        raise


def previous_record(project: str, stack: str) -> dict[str, Any]:
    """What the last successful run of this stack recorded (empty on the first run)."""
    name = f"{pulumi.get_organization()}/{project}/{stack}"
    try:
        result = pulumi.runtime.invoke("pulumi:pulumi:readStackOutputs", {"name": name})
    except Exception as exc:  # the engine reports a stack with no update yet in several ways
        pulumi.log.debug(f"no previous outputs of {name}: {exc}")
        return {}
    outputs = (result.value or {}).get("outputs") or {}
    record = outputs.get(RECORD_OUTPUT) or {}
    return record if isinstance(record, dict) else {}


def build(stack: str, project: str) -> None:
    """Check everything, then register the stack's resources and outputs."""
    settings = load_settings(stack)
    topology = load_stack_topology(settings)
    for topology_warning in topology.warnings:
        pulumi.log.warn(str(topology_warning))
    found = preflight.check_cluster(settings.cluster, topology)
    for warning in found.warnings:
        pulumi.log.warn(warning)
    if found.errors:
        _refuse(
            f"stack `{stack}`: the topology does not fit the cluster (nothing was changed)",
            found.errors,
        )
    previous = previous_record(project, stack)
    conf_text = render_nats_conf(nats_conf_for_cluster(settings.cluster))
    sts = _cluster_objects(
        settings.cluster, part_of=topology.name, nats_conf=conf_text
    ).stateful_set
    immutable = immutable_record(sts)
    replaced = replace_problems(previous.get("statefulSet"), immutable)
    if replaced and not settings.allow_replace:
        _refuse(
            f"stack `{stack}`: StatefulSet `{settings.cluster.name}` would be replaced (deleted and "
            "created again: every server restarts at once; the volumes are kept). Kubernetes "
            "cannot change these in place",
            [*replaced, "to go ahead: pulumi config set natstopo:allowReplace true"],
        )
    _check_authorization(settings, topology)
    credentials = pulumi.Config("natstopo").get_secret_object("natsCredentials")
    managed = [*previous.get("streams", []), *previous.get("consumers", [])]
    if settings.provisioner == "direct":
        _check_direct(settings, topology, managed)
    elif settings.provisioner == "nack":
        _check_nack(stack, settings, topology)

    provider = _kubernetes_provider(settings)
    in_kube = pulumi.ResourceOptions(provider=provider)
    auth: StackCredentials | None = None
    if settings.authorization:
        auth = StackCredentials(
            "credentials",
            {
                "topology": topology,
                "generations": dict(settings.credential_generations),
                "cluster": settings.cluster.name,
                "namespace": settings.cluster.namespace,
                "client_url": settings.client_url,
                "labels": common_labels(settings.cluster, topology.name),
            },
            opts=in_kube,
        )
    cluster = NatsCluster(
        settings.cluster.name,
        {
            "settings": settings.cluster,
            "part_of": topology.name,
            "protect": settings.protect,
            "allow_replace": settings.allow_replace,
            "skip_await": settings.kubernetes.skip_await,
            # The servers' authorization: a Secret with auth.conf, included by nats.conf.
            "auth_secret": auth.auth_secret if auth else None,
            "auth_includes": (AUTH_INCLUDE,) if auth else (),
        },
        opts=in_kube,
    )
    bundle = TopologyBundle(
        topology.name,
        {
            "topology": topology,
            "namespace": settings.cluster.namespace,
            "labels": common_labels(settings.cluster, topology.name),
        },
        opts=in_kube,
    )
    if settings.provisioner == "direct":
        DirectProvisioner(
            "direct",
            {
                "topology": topology,
                "servers": list(settings.nats_url),
                "credentials": credentials,
                "allow_destructive": settings.allow_destructive,
                # The servers are already running (local, or a cluster reached from here); in a
                # stack that creates them, a first `up` must wait for the StatefulSet.
                "depends_on": [],
            },
        )
    elif settings.provisioner == "nack":
        account = settings.nack_account
        if auth is not None and account is None:
            account = _nack_admin_account(settings, topology, auth, in_kube)
        NackProvisioner(
            "nack",
            {
                "topology": topology,
                "target": _nack_target(
                    settings, account, common_labels(settings.cluster, topology.name)
                ),
            },
            opts=in_kube,
        )
    urls = list(settings.nats_url) if settings.provisioner == "direct" else [settings.client_url]
    pulumi.export("clientUrl", settings.client_url)
    pulumi.export("natsUrls", urls)
    pulumi.export("topologyFingerprint", bundle.fingerprint)
    pulumi.export("topologyConfigMap", bundle.config_map)
    pulumi.export("topologyVolume", bundle.volume)
    pulumi.export("streams", [s.name for s in topology.streams])
    pulumi.export("consumers", [f"{c.stream}/{c.name}" for c in topology.consumers])
    pulumi.export("natsConf", cluster.nats_conf)
    if auth is not None:
        pulumi.export("authSecret", auth.auth_secret)
        pulumi.export("credentialSecrets", auth.secrets)
        pulumi.export("adminCredentials", auth.admin)
    if settings.kubernetes.render_dir is not None:
        pulumi.export("manifests", str(settings.kubernetes.render_dir))
    pulumi.export(
        RECORD_OUTPUT,
        {
            "statefulSet": immutable,
            "streams": [s.name for s in topology.streams]
            if settings.provisioner == "direct"
            else [],
            "consumers": [f"{c.stream}/{c.name}" for c in topology.consumers]
            if settings.provisioner == "direct"
            else [],
        },
    )


def _check_authorization(settings: StackSettings, topology: Topology) -> None:
    """Rotation settings name identities of this topology; direct provisioning has an admin."""
    if not settings.authorization:
        return
    try:
        known = identities(topology)
    except BusError as exc:  # a service named like a reserved identity
        _refuse(f"stack `{settings.stack}`: no authorization for this topology", [str(exc)])
        raise
    unknown = [i for i, _ in settings.credential_generations if i not in known]
    if unknown:
        _refuse(
            f"stack `{settings.stack}`: natstopo:credentialGenerations names identities that "
            f"topology `{topology.name}` does not have",
            [f"`{u}`: the identities are {', '.join(known)}" for u in unknown],
        )
    if settings.provisioner == "direct" and not _config().get("natstopo:natsCredentials"):
        _refuse(
            f"stack `{settings.stack}`: the direct provisioner needs the admin identity's "
            "credential, as the servers refuse clients without one",
            [
                "give it the stack's own admin credential (a Pulumi secret; make local does "
                "this itself): pulumi stack output --show-secrets --json adminCredentials | "
                "pulumi config set --secret natstopo:natsCredentials",
                "or turn authorization off: pulumi config set natstopo:authorization false",
            ],
        )


def _nack_admin_account(
    settings: StackSettings,
    topology: Topology,
    auth: StackCredentials,
    opts: pulumi.ResourceOptions,
) -> str:
    """A NACK Account connecting as the admin identity, from the admin's Secret."""
    name = f"{settings.cluster.name}-admin"
    meta: dict[str, Any] = {"name": name, "labels": common_labels(settings.cluster, topology.name)}
    if settings.cluster.namespace is not None:
        meta["namespace"] = settings.cluster.namespace
    k8s.apiextensions.CustomResource(
        "nack-admin-account",
        api_version="jetstream.nats.io/v1beta2",
        kind="Account",
        metadata=meta,
        spec={
            "servers": list(settings.nack_servers or (settings.client_url,)),
            "user": {
                "secret": {"name": auth.secrets["admin"]},
                "user": "NATS_USER",
                "password": "NATS_PASSWORD",
            },
        },
        opts=opts,
    )
    return name


def _check_direct(settings: StackSettings, topology: Topology, managed: list[str]) -> None:
    import json

    from jetstream_assets import connect_options

    raw = _config().get("natstopo:natsCredentials")  # plaintext here; never logged
    creds = (json.loads(raw) if isinstance(raw, str) else raw) if raw else None
    try:
        with connect_options({"servers": list(settings.nats_url), "credentials": creds}) as options:
            plan, problems = preflight_plan(
                options,
                topology,
                managed,
                allow_destructive=settings.allow_destructive,
                # In a preview each asset's diff (and the policy pack) reports its own refusal.
                changes_too=not pulumi.runtime.is_dry_run(),
            )
    except BusError as exc:
        raise pulumi.RunError(
            f"the direct provisioner plans against the live server and cannot: {exc}\n"
            "  (is the cluster up? `make local` starts the local one; natstopo:natsUrl says where; "
            "a stack that creates its cluster should use natstopo:provisioner nack)"
        ) from None
    if problems:
        _refuse(
            f"the reconciler's plan for {topology.name} (env {topology.environment}) on "
            f"nats-server {plan.server_version} has steps that lose data; nothing was changed",
            [*problems, "to let them happen: pulumi config set natstopo:allowDestructive true"],
        )
    if plan.has_changes:
        pulumi.log.info(f"the reconciler's plan: {plan.summary()}")


def _kubernetes_provider(settings: StackSettings) -> k8s.Provider:
    kube = settings.kubernetes
    # ConfigMaps and Secrets are updated in place (the provider's default replaces them on any
    # change, deleting the old first when they keep their name): nats.conf and auth.conf
    # changes reach the pods through the reloader, without a restart or a moment without them.
    if kube.render_dir is not None:
        # Nothing is sent to a cluster: the objects are written as YAML under render_dir.
        return k8s.Provider(
            "render",
            render_yaml_to_directory=str(kube.render_dir),
            enable_config_map_mutable=True,
            enable_secret_mutable=True,
        )
    return k8s.Provider(
        "kubernetes",
        kubeconfig=kube.kubeconfig,
        context=kube.context,
        namespace=settings.cluster.namespace,
        enable_config_map_mutable=True,
        enable_secret_mutable=True,
    )

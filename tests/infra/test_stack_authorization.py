"""The stacks' authorization (`natstopo:authorization`, on by default) under Pulumi's mocks,
and what it renders, run by real servers (2.10 and the newest; one server and 3 nodes).

The mocks call the credential's own provider (`CredentialProvider.create`: a real random
password and its bcrypt hash), so the Secrets and `auth.conf` the program registers are the
ones a deployment would hold; the servers are then started with that `auth.conf` and the
Secrets' values are what the clients connect with.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import nats
import pytest
from harness import ServerBinary, available_servers, running_cluster, running_server
from program_mocks import StackRun, run_stack
from schemas import validate_kubernetes, validate_nack

from bus_runtime import ConnectOptions, apply_plan, load_topology, plan_changes
from nats_conf import AUTH_INCLUDE
from stack_credentials import CredentialProvider

DYNAMIC = "pulumi-python:dynamic:Resource"
ALL = available_servers()
SERVERS = sorted({ALL[0], ALL[-1]}) if ALL else []
KEYS = {"NATS_USER", "NATS_PASSWORD", "NATS_INBOX_PREFIX", "NATS_URL"}
# The local stack without its direct provisioner: nothing to plan against a server.
NO_SERVER = {"natstopo:provisioner": "none"}


def _ids(binaries: list[ServerBinary]) -> list[str]:
    return [".".join(map(str, b.version)) for b in binaries]


@dataclass
class Rendered:
    run: StackRun
    secrets: dict[str, dict[str, str]]  # Secret name -> stringData
    credentials: list[dict[str, Any]]  # the credential resources' outputs

    @property
    def auth_secret(self) -> str:
        [name] = [n for n in self.secrets if n.startswith("nats-auth-")]
        return name

    @property
    def auth_conf(self) -> str:
        return self.secrets[self.auth_secret]["auth.conf"]

    def identity(self, identity: str) -> dict[str, str]:
        return self.secrets[f"nats-creds-{identity}"]


def render(stack: str, overrides: dict[str, Any] | None = None) -> Rendered:
    run = run_stack(stack, overrides)
    assert run.error is None, run.error
    secrets = {
        o["metadata"]["name"]: o["stringData"] for o in run.kube_objects() if o["kind"] == "Secret"
    }
    creds = [r.inputs for r in run.of_type(DYNAMIC) if "identity" in r.inputs]
    return Rendered(run, secrets, creds)


def identities_of(stack: str) -> list[str]:
    topology = load_topology("topology/topology.yaml", stack)
    return [*(s.name for s in topology.services), "admin", "dlq-operator", "monitor"]


@pytest.mark.parametrize("stack", ["local", "dev", "staging", "prod"])
def test_every_identity_has_its_secret_and_no_secret_is_anywhere_else(
    stack: str, loop: asyncio.AbstractEventLoop
) -> None:
    rendered = render(stack, NO_SERVER if stack == "local" else None)
    identities = identities_of(stack)
    assert sorted(c["identity"] for c in rendered.credentials) == sorted(identities)
    assert sorted(rendered.secrets) == sorted(
        [rendered.auth_secret, *(f"nats-creds-{i}" for i in identities)]
    )
    objects = rendered.run.kube_objects()
    for obj in objects:
        if obj["kind"] == "Secret":
            validate_kubernetes(obj)
    not_secrets = json.dumps([o for o in objects if o["kind"] != "Secret"])
    auth_conf = rendered.auth_conf
    for cred in rendered.credentials:
        identity, password = cred["identity"], cred["password"]
        secret = rendered.identity(identity)
        # a service's account imports JetStream's API under natstopo's prefix
        service = identity not in ("admin", "monitor")  # and dlq-operator: imports too
        assert set(secret) == (KEYS | {"NATS_JS_API_PREFIX"} if service else KEYS)
        if service:
            assert secret["NATS_JS_API_PREFIX"] == "$NATSTOPO.API"
        assert secret["NATS_USER"] == f"{identity}.1" == cred["user"]
        assert secret["NATS_PASSWORD"] == password
        assert secret["NATS_INBOX_PREFIX"] == f"_INBOX.{identity}"
        # The password is in its identity's Secret only: no ConfigMap, no other Secret, not
        # in auth.conf, which holds its bcrypt hash instead.
        others = [v for name, s in rendered.secrets.items() for v in s.values() if s != secret]
        assert not any(password in v for v in others), identity
        assert password not in not_secrets
        assert f'password: "{cred["password_hash"]}"' in auth_conf
        assert bcrypt.checkpw(password.encode(), cred["password_hash"].encode())
    assert rendered.run.outputs["authSecret"] == rendered.auth_secret
    [config_map] = [o for o in objects if o["metadata"]["name"] == "nats-config"]
    assert f'include "{AUTH_INCLUDE}"' in config_map["data"]["nats.conf"]


def test_the_nack_account_connects_as_the_admin(loop: asyncio.AbstractEventLoop) -> None:
    rendered = render("prod")
    [account] = [o for o in rendered.run.kube_objects() if o["kind"] == "Account"]
    validate_nack(account)
    assert account["spec"]["user"] == {
        "secret": {"name": "nats-creds-admin"},
        "user": "NATS_USER",
        "password": "NATS_PASSWORD",
    }
    assert account["spec"]["servers"] == ["nats://nats.tax-agent.svc.cluster.local:4222"]
    managed = [o for o in rendered.run.kube_objects() if o["kind"] in ("Stream", "Consumer")]
    assert managed and all(o["spec"]["account"] == "nats-admin" for o in managed)


def test_without_authorization_nothing_of_it_is_made(loop: asyncio.AbstractEventLoop) -> None:
    run = run_stack("prod", {"natstopo:authorization": False})
    assert run.error is None, run.error
    kinds = [o["kind"] for o in run.kube_objects()]
    assert "Secret" not in kinds and "Account" not in kinds
    assert not [r for r in run.of_type(DYNAMIC) if "identity" in r.inputs]
    [config_map] = [o for o in run.kube_objects() if o["metadata"]["name"] == "nats-config"]
    assert "include" not in config_map["data"]["nats.conf"]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            {"natstopo:credentialGenerations": {"svc-nope": [1]}},
            "`svc-nope`: the identities are svc-identity, svc-ingestion",
        ),
        (
            {"natstopo:credentialGenerations": {"svc-ocr": [2, 1]}},
            "natstopo:credentialGenerations.svc-ocr: expected one or two generations",
        ),
        (
            {"natstopo:credentialGenerations": {"svc-ocr": [1, 2, 3]}},
            "natstopo:credentialGenerations.svc-ocr: expected one or two generations",
        ),
        (
            {"natstopo:credentialGenerations": ["svc-ocr"]},
            "natstopo:credentialGenerations: expected an object",
        ),
        (
            {"natstopo:authorization": "maybe"},
            "natstopo:authorization: expected true or false, got 'maybe'",
        ),
        (
            {"natstopo:authorization": False, "natstopo:credentialGenerations": {"svc-ocr": 2}},
            "natstopo:credentialGenerations: needs `natstopo:authorization: true`",
        ),
    ],
)
def test_bad_authorization_settings_are_refused_with_the_key(
    overrides: dict[str, Any], says: str, loop: asyncio.AbstractEventLoop
) -> None:
    import pulumi

    run = run_stack("prod", overrides)
    assert isinstance(run.error, pulumi.RunError)
    assert says in str(run.error)
    assert not run.kube_objects()  # refused before anything is registered


def test_the_direct_provisioner_without_the_admin_credential_is_refused(
    loop: asyncio.AbstractEventLoop,
) -> None:
    import pulumi

    run = run_stack("local", {"natstopo:natsUrl": "nats://127.0.0.1:1"})
    assert isinstance(run.error, pulumi.RunError)
    assert "the direct provisioner needs the admin identity's credential" in str(run.error)
    assert "pulumi config set --secret natstopo:natsCredentials" in str(run.error)
    assert not run.kube_objects()


def test_the_credential_is_made_once_and_replaced_only_for_a_new_generation() -> None:
    provider = CredentialProvider()
    props = {"identity": "svc-ocr", "generation": 1, "cost": 4}
    one, two = provider.create(dict(props)), provider.create(dict(props))
    assert one.outs["user"] == "svc-ocr.1" == one.id
    assert one.outs["password"] != two.outs["password"]
    assert len(one.outs["password"]) >= 40
    assert bcrypt.checkpw(one.outs["password"].encode(), one.outs["password_hash"].encode())
    kept = provider.diff(one.id, one.outs, {**props, "cost": 11})
    assert not kept.changes and not kept.replaces  # a later run keeps the credential
    new = provider.diff(one.id, one.outs, {**props, "generation": 2})
    assert new.changes and new.replaces == ["generation"]


# --------------------------------------------------------------------------- real servers


def _auth(secret: dict[str, str]) -> dict[str, Any]:
    return {
        "user": secret["NATS_USER"],
        "password": secret["NATS_PASSWORD"],
        "inbox_prefix": secret["NATS_INBOX_PREFIX"],
    }


async def _provision_as_admin(urls: list[str], admin: dict[str, str], env: str) -> None:
    topology = load_topology("topology/topology.yaml", env)
    options = ConnectOptions(
        servers=tuple(urls),
        user=admin["NATS_USER"],
        password=admin["NATS_PASSWORD"],
        inbox_prefix=admin["NATS_INBOX_PREFIX"],
    )
    nc = await nats.connect(urls, **options.auth_kwargs())  # type: ignore[arg-type]
    try:
        await apply_plan(nc, await plan_changes(nc, topology))
        assert not (await plan_changes(nc, topology)).has_changes
    finally:
        await nc.close()


async def _publish(urls: list[str], secret: dict[str, str], allowed: str, refused: str) -> str:
    """Publish `allowed` (JetStream: its PubAck) and `refused`; the server's error for that."""
    errors: asyncio.Queue[Exception] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        errors.put_nowait(exc)

    nc = await nats.connect(urls, error_cb=on_error, allow_reconnect=False, **_auth(secret))
    try:
        ack = await nc.jetstream().publish(allowed, b"{}")
        assert ack.seq >= 1
        await nc.publish(refused, b"{}")
        await nc.flush()
        return str(await asyncio.wait_for(errors.get(), 5)).lower()
    finally:
        await nc.close()


async def _round_trip_with_the_bus(
    urls: list[str], publisher: dict[str, str], worker: dict[str, str]
) -> str:
    """svc-ingestion's bus publishes a job and svc-ocr's bus takes it, each from nothing but
    its Secret's variables (start-up check, publish, fetch and ack through the imports)."""
    from bus_runtime import EventPayload, create_event_bus
    from bus_runtime.security import service_connect_options

    topology = load_topology("topology/topology.yaml", "dev")
    got: asyncio.Queue[EventPayload] = asyncio.Queue()

    async def handle(topic: str, payload: EventPayload) -> None:
        got.put_nowait(payload)

    def bus(service: str, secret: dict[str, str]):  # type: ignore[no-untyped-def]
        connection = service_connect_options(service, env={**secret, "NATS_URL": urls[0]})
        return create_event_bus("nats", topology=topology, service=service, connection=connection)

    ocr, ingestion = bus("svc-ocr", worker), bus("svc-ingestion", publisher)
    await ocr.subscribe("ocr.requested", handle)
    await ocr.start()
    await ingestion.start()
    ulid = "01J0000000000000000000000A"
    job = {
        "document_id": ulid,
        "client_id": ulid,
        "object_key": "s3://docs/d-1.pdf",
        "content_type": "application/pdf",
    }
    try:
        await ingestion.publish(
            "ocr.requested", EventPayload(data=job, actor="svc-ingestion", tenant_id="t-secret")
        )
        return (await asyncio.wait_for(got.get(), 10)).tenant_id
    finally:
        await ingestion.stop()
        await ocr.stop()


async def _refused(urls: list[str], **auth: Any) -> str:
    try:
        nc = await nats.connect(urls, allow_reconnect=False, max_reconnect_attempts=1, **auth)
    except Exception as exc:
        return str(exc).lower()
    await nc.close()
    return ""


@pytest.mark.nats
@pytest.mark.parametrize("binary", SERVERS, ids=_ids(SERVERS))
def test_a_services_secret_publishes_its_topic_and_is_refused_anothers(
    binary: ServerBinary, loop: asyncio.AbstractEventLoop
) -> None:
    rendered = render("dev")
    include = {"auth.conf": rendered.auth_conf}
    with running_server(binary, includes=include) as server:
        urls = [server.url]
        loop.run_until_complete(_provision_as_admin(urls, rendered.identity("admin"), "dev"))
        ingestion = rendered.identity("svc-ingestion")
        error = loop.run_until_complete(
            _publish(urls, ingestion, "tax.document.uploaded", "tax.document.ocr_completed")
        )
        assert "permissions violation for publish" in error
        assert "tax.document.ocr_completed" in error
        # svc-ocr's own Secret publishes what svc-ingestion may not.
        ocr = rendered.identity("svc-ocr")
        error = loop.run_until_complete(
            _publish(urls, ocr, "tax.document.ocr_completed", "tax.user.created")
        )
        assert "tax.user.created" in error
        done = _round_trip_with_the_bus(urls, ingestion, ocr)
        assert loop.run_until_complete(done) == "t-secret"
        assert "authorization violation" in loop.run_until_complete(_refused(urls))
        wrong = {**_auth(ocr), "password": ingestion["NATS_PASSWORD"]}
        assert "authorization violation" in loop.run_until_complete(_refused(urls, **wrong))


@pytest.mark.nats
@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("binary", SERVERS, ids=_ids(SERVERS))
def test_the_three_node_cluster_forms_and_works_with_the_stacks_authorization(
    binary: ServerBinary, loop: asyncio.AbstractEventLoop
) -> None:
    rendered = render("prod")
    include = {"auth.conf": rendered.auth_conf}
    with running_cluster(binary, includes=include) as cluster:
        urls = list(cluster.urls)
        loop.run_until_complete(_provision_as_admin(urls, rendered.identity("admin"), "prod"))
        # Published on one node, refused on another: the same authorization everywhere.
        ingestion = rendered.identity("svc-ingestion")
        for url in urls:
            error = loop.run_until_complete(
                _publish([url], ingestion, "tax.document.uploaded", "jobs.extract.requested")
            )
            assert "jobs.extract.requested" in error


@pytest.mark.nats
@pytest.mark.parametrize("binary", SERVERS, ids=_ids(SERVERS))
def test_a_rotation_keeps_both_generations_valid_then_only_the_new(
    binary: ServerBinary, loop: asyncio.AbstractEventLoop
) -> None:
    overlap = render("dev", {"natstopo:credentialGenerations": {"svc-ocr": [1, 2]}})
    ocr = sorted(
        (c for c in overlap.credentials if c["identity"] == "svc-ocr"),
        key=lambda c: c["generation"],
    )
    assert [c["user"] for c in ocr] == ["svc-ocr.1", "svc-ocr.2"]
    # The pods get the new one; the servers accept both.
    assert overlap.identity("svc-ocr")["NATS_USER"] == "svc-ocr.2"
    assert overlap.identity("svc-ocr")["NATS_PASSWORD"] == ocr[1]["password"]
    include = {"auth.conf": overlap.auth_conf}
    with running_server(binary, includes=include) as server:
        urls = [server.url]
        loop.run_until_complete(_provision_as_admin(urls, overlap.identity("admin"), "dev"))
        for cred in ocr:
            secret = {
                **overlap.identity("svc-ocr"),
                "NATS_USER": cred["user"],
                "NATS_PASSWORD": cred["password"],
            }
            error = loop.run_until_complete(
                _publish(urls, secret, "tax.document.ocr_completed", "tax.user.created")
            )
            assert "tax.user.created" in error
    retired = render("dev", {"natstopo:credentialGenerations": {"svc-ocr": [2]}})
    assert [c["user"] for c in retired.credentials if c["identity"] == "svc-ocr"] == ["svc-ocr.2"]
    assert '"svc-ocr.1"' not in retired.auth_conf and '"svc-ocr.2"' in retired.auth_conf


def test_a_new_account_rolls_the_servers_and_a_rotation_does_not(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """nats-server takes an account added by a reload without its imports working until a
    restart (2.10 .. 2.15): the Secret with auth.conf is one per set of accounts, so a new
    account changes the pods' volume (a roll) and a rotation updates the same Secret."""
    from stack_credentials import auth_secret_name

    plain = render("dev")
    rotated = render("dev", {"natstopo:credentialGenerations": {"svc-ocr": [1, 2]}})
    assert rotated.auth_conf != plain.auth_conf  # a second user of svc-ocr ...
    assert rotated.auth_secret == plain.auth_secret  # ... in the same accounts, the same Secret
    declared = sorted(re.findall(r'^  "([^"]+)": \{$', plain.auth_conf, flags=re.M))
    assert "tax-agent" in declared and "tax-agent-svc-ocr" in declared and "SYS" in declared
    assert plain.auth_secret == auth_secret_name("nats", declared)
    assert auth_secret_name("nats", list(reversed(declared))) == plain.auth_secret
    assert auth_secret_name("nats", [*declared, "tax-agent-svc-new"]) != plain.auth_secret
    [sts] = [o for o in plain.run.kube_objects() if o["kind"] == "StatefulSet"]
    mounted = [
        v["secret"]["secretName"]
        for v in sts["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    ]
    assert plain.auth_secret in mounted


def test_make_local_restarts_for_new_accounts_and_reloads_for_the_rest(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """`make local`'s reading of auth.conf: the accounts it declares, so that a service
    added (or the upgrade from one account) restarts the local servers."""
    import importlib.util

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("local_up", repo / "tools" / "local_up.py")
    assert spec is not None and spec.loader is not None
    local_up = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("local_up", local_up)  # its dataclasses look their module up
    spec.loader.exec_module(local_up)
    plain = render("dev")
    rotated = render("dev", {"natstopo:credentialGenerations": {"svc-ocr": [1, 2]}})
    topology = load_topology("topology/topology.yaml", "dev")
    accounts = local_up.accounts_of(plain.auth_conf)
    assert accounts == {
        "tax-agent",
        "SYS",
        "tax-agent-dlq-operator",
        *(f"tax-agent-{s.name}" for s in topology.services),
    }
    assert local_up.accounts_of(rotated.auth_conf) == accounts

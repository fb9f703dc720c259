"""`StackCredentials`: the stack's identities, their credentials and the servers' `auth.conf`.

With `natstopo:authorization` (the default) every identity of the topology (each service,
`admin`, `monitor`; `bus_runtime.security.permissions`) gets, per generation of
`natstopo:credentialGenerations` (default `[1]`):

- a `Credential`: a dynamic resource whose provider makes a random password (256 bits) and
  its bcrypt hash once, at create; every later `pulumi up` keeps them (its diff only ever
  replaces when the identity or the generation changes). The password is a secret output,
  so it is encrypted in the state; the hash is not secret (it is what the servers hold).
  This is `random.RandomPassword` with its `bcrypt_hash`, without a provider plugin: the
  engine built here has none for pulumi-random and downloads nothing.
- a Kubernetes Secret `<cluster>-creds-<identity>` (`NATS_USER`, `NATS_PASSWORD`,
  `NATS_INBOX_PREFIX`, `NATS_URL`, and for a service `NATS_JS_API_PREFIX`: its account
  reaches JetStream through imports under that prefix) holding the newest generation,
  for the identity's pods;

and one Secret `<cluster>-auth-<digest of the accounts>` holds the servers' authorization
include (`auth.conf`,
bcrypt hashes only, from `render_authorization`), mounted at `AUTH_DIR` and included by
`nats.conf` as `AUTH_INCLUDE`. Two generations are both valid: a rotation's overlap.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import pulumi
import pulumi_kubernetes as k8s
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider

from bus_runtime import Topology
from bus_runtime.security import (
    PublicCredential,
    all_permissions,
    inbox_prefix,
    render_authorization,
)
from nats_conf import AUTH_FILE

TYPE = "natstopo:stack_credentials:StackCredentials"
BCRYPT_COST = 11
# Inputs whose change makes a new credential (a new password): a replace.
IDENTITY_INPUTS = ("identity", "generation")
SECRET_KEYS = ("NATS_USER", "NATS_PASSWORD", "NATS_INBOX_PREFIX", "NATS_URL")


API_PREFIX_KEY = "NATS_JS_API_PREFIX"


def identities(topology: Topology) -> list[str]:
    """Every identity of the topology: each service in file order, then `admin`, `monitor`."""
    return list(all_permissions(topology))


def user_name(identity: str, generation: int) -> str:
    """The user a credential connects as (`svc-ocr.2`), as `natstopo auth render` names it."""
    return f"{identity}.{generation}"


def secret_name(cluster: str, identity: str) -> str:
    """The Kubernetes Secret of one identity: a DNS subdomain name."""
    return f"{cluster}-creds-{re.sub(r'[^a-z0-9-]+', '-', identity.lower()).strip('-')}"


def accounts_digest(accounts: Sequence[str]) -> str:
    """Eight hex digits naming a set of accounts (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(accounts)).encode()).hexdigest()[:8]


def auth_secret_name(cluster: str, accounts: Sequence[str]) -> str:
    """The Secret with `auth.conf`: one per set of accounts (`<cluster>-auth-<digest>`).

    nats-server leaves the imports of an account added by a config reload dead until a
    restart. With the name changing with the accounts, a new account is a new Secret: the
    StatefulSet rolls, each new pod mounts the new Secret, and a pod not rolled yet keeps
    the old file (no reload into dead imports). A rotation keeps the accounts, so it
    updates the same Secret and the reloader reloads the servers in place."""
    return f"{cluster}-auth-{accounts_digest(accounts)}"


def auth_conf(topology: Topology, hashes: Mapping[str, Sequence[tuple[int, str]]]) -> str:
    """The servers' `auth.conf` from each identity's (generation, bcrypt hash), oldest first."""
    return render_authorization(
        topology,
        {
            identity: [
                PublicCredential(identity, user_name(identity, gen), password_hash=h)
                for gen, h in gens
            ]
            for identity, gens in hashes.items()
        },
    )


def env_values(
    identity: str, user: str, password: str, url: str, api_prefix: str | None = None
) -> dict[str, str]:
    """The `NATS_*` variables of one identity (the keys of its Secret and `.env` file)."""
    out = dict(zip(SECRET_KEYS, (user, password, inbox_prefix(identity), url), strict=True))
    if api_prefix is not None:
        out[API_PREFIX_KEY] = api_prefix
    return out


# --------------------------------------------------------------------------- the credential


class CredentialProvider(ResourceProvider):
    """Makes one password and its bcrypt hash at create, and never changes them after."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        from bus_runtime.security import hash_password, new_password

        identity, generation = str(props["identity"]), int(props["generation"])
        password = new_password()
        user = user_name(identity, generation)
        outs = {
            **props,
            "user": user,
            "password": password,
            "password_hash": hash_password(password, int(props.get("cost") or BCRYPT_COST)),
        }
        return CreateResult(id_=user, outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in IDENTITY_INPUTS if olds.get(k) != news.get(k)]
        # The cost only shapes a new hash: an existing credential stays as it is.
        return DiffResult(
            changes=bool(changed),
            replaces=changed,
            stables=["user", "password", "password_hash"] if not changed else None,
            delete_before_replace=False,
        )


class Credential(pulumi.dynamic.Resource):
    """One generation of one identity's credential (`password` is a secret output)."""

    user: pulumi.Output[str]
    password: pulumi.Output[str]
    password_hash: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        identity: str,
        generation: int,
        opts: pulumi.ResourceOptions | None = None,
        cost: int = BCRYPT_COST,
    ) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["password"])
        super().__init__(
            CredentialProvider(),
            name,
            {
                "identity": identity,
                "generation": generation,
                "cost": cost,
                "user": None,
                "password": None,
                "password_hash": None,
            },
            pulumi.ResourceOptions.merge(opts, secret),
        )


# --------------------------------------------------------------------------- the component


def _secret_values(
    identity: str, cred: Credential, url: str, api_prefix: str | None
) -> pulumi.Output[dict[str, str]]:
    def values(up: list[str]) -> dict[str, str]:
        return env_values(identity, up[0], up[1], url, api_prefix)

    out: pulumi.Output[dict[str, str]] = pulumi.Output.all(cred.user, cred.password).apply(values)
    return pulumi.Output.secret(out)


def _admin_credentials(cred: Credential) -> pulumi.Output[dict[str, str]]:
    """The admin's credential in `natstopo:natsCredentials`' form (what the direct
    provisioner and the reconciler connect with)."""

    def values(up: list[str]) -> dict[str, str]:
        return {"user": up[0], "password": up[1], "inboxPrefix": inbox_prefix("admin")}

    out: pulumi.Output[dict[str, str]] = pulumi.Output.all(cred.user, cred.password).apply(values)
    return pulumi.Output.secret(out)


class StackCredentialsArgs(TypedDict):
    """Arguments of `StackCredentials`."""

    topology: Topology
    """The topology (its services are the identities, with `admin` and `monitor`)."""
    generations: Mapping[str, tuple[int, ...]]
    """Identity -> its valid generations, oldest first (missing: `(1,)`)."""
    cluster: str
    """The cluster's name (the Secrets' names start with it)."""
    namespace: str | None
    """Where the Secrets go (the cluster's namespace)."""
    client_url: str
    """`NATS_URL` of every Secret: the client Service."""
    labels: dict[str, str]
    """Labels of every Secret."""


class StackCredentials(pulumi.ComponentResource):
    """Every identity's credentials, their Secrets, and the Secret with `auth.conf`.

    Outputs:
        auth_secret: The name of the Secret holding `auth.conf`.
        secrets: Identity -> the name of its Secret.
        admin: Secret: the admin's `{user, password, inboxPrefix}` (natsCredentials' form).
        accounts: The accounts of `auth.conf` (the servers roll when they change).
    """

    auth_secret: str
    secrets: dict[str, str]
    admin: pulumi.Output[dict[str, str]]
    accounts: tuple[str, ...]

    def __init__(
        self, name: str, args: StackCredentialsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        topology = args["topology"]
        cluster = args["cluster"]
        child = pulumi.ResourceOptions(parent=self)

        def meta(object_name: str, identity: str | None) -> Any:
            labels = dict(args["labels"])
            if identity is not None:
                labels["natstopo.io/identity"] = identity
            out: dict[str, Any] = {"name": object_name, "labels": labels}
            if args["namespace"] is not None:
                out["namespace"] = args["namespace"]
            return out

        made: dict[str, list[tuple[int, Credential]]] = {}
        self.secrets = {}
        perms = all_permissions(topology)
        self.accounts = tuple(sorted({p.account for p in perms.values()}))
        for identity in perms:
            gens = args["generations"].get(identity, (1,))
            made[identity] = [
                (g, Credential(f"credential-{identity}-{g}", identity, g, opts=child)) for g in gens
            ]
            newest = made[identity][-1][1]
            values = _secret_values(
                identity, newest, args["client_url"], perms[identity].api_prefix
            )
            self.secrets[identity] = secret_name(cluster, identity)
            k8s.core.v1.Secret(
                f"{name}-{identity}",
                metadata=meta(self.secrets[identity], identity),
                type="Opaque",
                string_data=values,
                opts=child,
            )
            if identity == "admin":
                self.admin = _admin_credentials(newest)
        order = list(made)
        hashes = pulumi.Output.all(*[c.password_hash for i in order for _, c in made[i]])

        def text(found: list[str]) -> str:
            it = iter(found)
            return auth_conf(topology, {i: [(g, next(it)) for g, _ in made[i]] for i in order})

        self.auth_secret = auth_secret_name(cluster, self.accounts)
        auth_text: pulumi.Output[str] = hashes.apply(text)
        self.auth_object = k8s.core.v1.Secret(
            f"{name}-auth",
            metadata=meta(self.auth_secret, None),
            type="Opaque",
            string_data={AUTH_FILE: auth_text},
            opts=child,
        )
        self.register_outputs({"auth_secret": self.auth_secret, "secrets": self.secrets})

"""The server's authorization config: a JetStream account, one account per service, a system account.

`render_authorization` turns the model's accounts and permissions (`permissions.py`) and
the public half of each identity's credentials into the text that nats.conf includes:

```
accounts {
  "tax-agent": {                      # JetStream: every stream and consumer, the admin
    jetstream: enabled
    users: [ {user: admin.1, password: <bcrypt>, permissions} ]
    exports: [ {service: "tax.filed", accounts: ["tax-agent-svc-a"]} ... ]
  }
  "tax-agent-svc-a": {                # one service: its users and its imports only
    users: [ {user: svc-a.1, ...} ]
    imports: [ {service: {account: "tax-agent", subject: "tax.filed"}} ... ]
  }
  "SYS": { users: [ {user: monitor, ...} ] }
}
system_account: "SYS"
```

It never sees a secret: a `PublicCredential` holds a bcrypt hash or a public nkey, and a
plaintext password is refused, so the rendered text may sit in a ConfigMap. Who makes the
secrets is the caller's business: `credentials.py` for `natstopo auth render` and tests,
Pulumi (e.g. a RandomPassword's `bcrypt_hash`) in infra/. An identity with two credentials
(a rotation's overlap) gets two users with the same permissions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .._errors import SetupError
from ..topology.model import Topology
from .permissions import (
    ADMIN,
    DLQ_OPERATOR,
    MONITOR,
    SYSTEM_ACCOUNT,
    Permissions,
    all_permissions,
    jetstream_exports,
)

# nats-server takes `$2a$`, `$2b$`, `$2x$`, `$2y$` hashes (cost two digits, 53 characters).
BCRYPT_RE = re.compile(r"^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$")
# A user's public nkey: `U` and 55 more base32 characters (a seed starts with `SU`).
PUBLIC_NKEY_RE = re.compile(r"^U[A-Z2-7]{55}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@~-]+$")


@dataclass(frozen=True)
class PublicCredential:
    """The public half of one credential of one identity: what the server's config holds.

    Exactly one of (`user` with `password_hash`) and `nkey` is set.

    Attributes:
        identity: The service, `admin` or `monitor`.
        user: The user name presented at connect (password credentials).
        password_hash: The bcrypt hash of the password.
        nkey: The public user nkey (`U...`; nkey credentials).
    """

    identity: str
    user: str | None = None
    password_hash: str | None = None
    nkey: str | None = None

    def __post_init__(self) -> None:
        if self.nkey is not None:
            if self.user is not None or self.password_hash is not None:
                raise SetupError(
                    f"credential of `{self.identity}`: an nkey credential has no user or password"
                )
            if not PUBLIC_NKEY_RE.match(self.nkey):
                # Never echo the value: it may be a seed pasted in the wrong place.
                raise SetupError(
                    f"credential of `{self.identity}`: the nkey is not a public user nkey (U...)"
                )
            return
        if not self.user or not _NAME_RE.match(self.user):
            raise SetupError(
                f"credential of `{self.identity}`: a user name of letters, digits and . _ - @ ~ is required"
            )
        if self.password_hash is None or not BCRYPT_RE.match(self.password_hash):
            raise SetupError(
                f"credential of `{self.identity}` (user `{self.user}`): the password must be a "
                "bcrypt hash ($2a$...), never the password itself"
            )

    @property
    def label(self) -> str:
        """How the credential is named in messages and comments (never a secret)."""
        return self.user if self.user is not None else f"nkey {self.nkey}"


def _q(value: str) -> str:
    # JSON strings are NATS config strings; a quoted value is never a $variable reference.
    return json.dumps(value)


def _list(items: Sequence[str], indent: str) -> str:
    if not items:
        return "[]"
    inner = "".join(f"{indent}  {_q(i)}\n" for i in items)
    return f"[\n{inner}{indent}]"


def _user_block(cred: PublicCredential, perms: Permissions, indent: str) -> str:
    lines = [f"{indent}{{"]
    if cred.nkey is not None:
        lines.append(f"{indent}  nkey: {_q(cred.nkey)}")
    else:
        assert cred.user is not None and cred.password_hash is not None
        lines.append(f"{indent}  user: {_q(cred.user)}")
        lines.append(f"{indent}  password: {_q(cred.password_hash)}")
    i2 = indent + "  "
    lines += [
        f"{i2}permissions: {{",
        f"{i2}  publish: {{ allow: {_list(perms.publish, i2 + '  ')} }}",
        f"{i2}  subscribe: {{ allow: {_list(perms.subscribe, i2 + '  ')} }}",
        f"{i2}}}",
        f"{indent}}}",
    ]
    return "\n".join(lines)


# The head line of each account block `render_authorization` writes: `  "<name>": {`.
_ACCOUNT_LINE = re.compile(r'^  "([^"]+)": \{$', re.M)


def declared_accounts(text: str) -> set[str]:
    """The accounts an `auth.conf` made by `render_authorization` declares (e.g. to tell
    whether a change adds one, which needs a server restart rather than a reload)."""
    return set(_ACCOUNT_LINE.findall(text))


def render_authorization(
    topology: Topology,
    credentials: Mapping[str, Sequence[PublicCredential]],
    *,
    account: str | None = None,
    domain: str | None = None,
) -> str:
    """The authorization include of nats.conf for every identity of `topology`.

    Args:
        topology: The model (the permissions come from it).
        credentials: Identity (each service, `admin`, `monitor`) -> its valid credentials,
            newest last; two during a rotation's overlap.
        account: The JetStream account, of the streams, consumers and admin (default:
            the topology's name); each service's account is `<account>-<service>`.
        domain: The JetStream domain of the servers, if any (names the v2 ack subjects).

    Raises:
        SetupError: An identity has no credential, an unknown identity has one, or two
            credentials share a user name or nkey.
    """
    account = account or topology.name
    if account == SYSTEM_ACCOUNT:
        raise SetupError(f"account `{account}` is the system account's name; choose another")
    if not _NAME_RE.match(account):
        raise SetupError(
            f"account {account!r}: letters, digits and . _ - @ ~ only (it names subjects of "
            "the server's monitoring requests)"
        )
    perms = all_permissions(topology, account=account, domain=domain)
    missing = [i for i in perms if not credentials.get(i)]
    if missing:
        raise SetupError(f"no credentials for {', '.join(f'`{m}`' for m in missing)}")
    unknown = sorted(set(credentials) - set(perms))
    if unknown:
        raise SetupError(
            f"credentials for {', '.join(f'`{u}`' for u in unknown)}, which the topology "
            f"`{topology.name}` does not declare"
        )
    seen: dict[str, str] = {}
    for identity in perms:
        for cred in credentials[identity]:
            if cred.identity != identity:
                raise SetupError(f"credential of `{cred.identity}` listed under `{identity}`")
            key = cred.nkey or f"user {cred.user}"
            if key in seen:
                raise SetupError(
                    f"`{identity}` and `{seen[key]}` share the credential {cred.label}"
                )
            seen[key] = identity

    def users(identities: Sequence[str]) -> str:
        blocks = []
        for identity in identities:
            for cred in credentials[identity]:
                blocks.append(
                    f"      # {identity}\n" + _user_block(cred, perms[identity], "      ")
                )
        return "\n".join(blocks)

    def exports() -> str:
        lines = []
        for e in jetstream_exports(perms):
            extra = ", response_type: stream" if e.stream_response else ""
            if e.response_threshold is not None:
                extra += f", response_threshold: {_q(e.response_threshold)}"
            accounts = ", ".join(_q(a) for a in e.accounts)
            lines.append(f"      {{ service: {_q(e.subject)}, accounts: [{accounts}]{extra} }}")
        return "\n".join(lines)

    def service_account(identity: str) -> str:
        p = perms[identity]
        imports = []
        for i in p.imports:
            to = f", to: {_q(i.local)}" if i.local != i.subject else ""
            imports.append(
                f"      {{ service: {{ account: {_q(account)}, subject: {_q(i.subject)} }}{to} }}"
            )
        body = "    imports: [\n" + "\n".join(imports) + "\n    ]\n" if imports else ""
        return f"  {_q(p.account)}: {{\n    users: [\n{users([identity])}\n    ]\n{body}  }}\n"

    services = [s.name for s in topology.services] + [DLQ_OPERATOR]
    env = topology.environment or "base"
    export_text = exports()
    export_block = f"    exports: [\n{export_text}\n    ]\n" if export_text else ""
    return (
        f"# Authorization of topology `{topology.name}` (environment {env}), made by natstopo\n"
        "# from the topology: each service may publish its declared topics and use its own\n"
        "# consumers, nothing else. Bcrypt hashes and public nkeys only; no secret here.\n"
        "# JetStream lives in its own account with the admin; each service's account holds\n"
        "# only what it imports from there, so every reply it names is answered in its own.\n"
        "accounts {\n"
        f"  {_q(account)}: {{\n"
        "    jetstream: enabled\n"
        "    users: [\n"
        f"{users([ADMIN])}\n"
        "    ]\n"
        f"{export_block}"
        "  }\n" + "".join(service_account(i) for i in services) + f"  {_q(SYSTEM_ACCOUNT)}: {{\n"
        "    users: [\n"
        f"{users([MONITOR])}\n"
        "    ]\n"
        "  }\n"
        "}\n"
        f"system_account: {_q(SYSTEM_ACCOUNT)}\n"
    )

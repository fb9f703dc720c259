"""Who may publish and subscribe to what: NATS accounts and permissions from the topology model.

Accounts. JetStream (every stream and consumer) lives in the JetStream account, the
topology's name by default, with the admin; each service has an account of its own,
`<jetstream account>-<service>`, holding only its users and the imports of what it
declares: its topics, the dead letters of its consumers' subjects, and, under the local
API prefix `$NATSTOPO.API` (`SERVICE_API_PREFIX`), the JetStream API subjects of its own
streams and consumers, plus the ack subjects of its consumers' messages. The server maps
every reply of an imported request to a subject of its own, so whatever reply a service
names (say `$JS.API.STREAM.DELETE.<stream>` on an ack) is answered inside the service's
own account, where there is no JetStream API: with one shared account the server's answer
to an ack was published inside it, where no client permission applies, and deleted the
stream (docs/security.md). The local prefix is not `$JS.API`: nats-server answers
`$JS.API.>` of an account without JetStream itself ("JetStream not enabled"), beside the
import.

Permissions. Within its account a service may publish exactly the subjects of the topics it is a declared publisher of,
the dead-letter subjects of its own consumers, and the JetStream API subjects its own
consumers need (fetch, info, acks in both the v1 and the v2 form); it may subscribe only
to its own inbox prefix (`_INBOX.<service>`), so it cannot read another service's replies,
which for a pull consumer are the fetched messages themselves. Nothing else: no stream or
consumer create, update, delete or purge, no message get or delete, no advisories.

The admin identity provisions (the reconciler, Pulumi's direct provisioner, NACK) with the
least privilege terraform-provider-jetstream documents for a JetStream admin: manage
streams and consumers, never read a message. The monitor identity lives in the system
account and may only ask the servers for their monitoring reports.

These lists are what the server enforces; tests/test_auth_server.py proves each one
against real servers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .._errors import SetupError
from ..topology.model import Consumer, Topology

ADMIN = "admin"
MONITOR = "monitor"
DLQ_OPERATOR = "dlq-operator"
RESERVED_IDENTITIES = frozenset({ADMIN, MONITOR, DLQ_OPERATOR})
INBOX_ROOT = "_INBOX"
SYSTEM_ACCOUNT = "SYS"
# The JetStream API prefix in a service's account (its imports' local subjects): what
# the bus and the CLI use when `NATS_JS_API_PREFIX` says so (the service env files do).
SERVICE_API_PREFIX = "$NATSTOPO.API"
JETSTREAM_API_PREFIX = "$JS.API"
# An ack with a reply (a synchronous ack) is answered at once, or never (an ack of a
# message the consumer does not hold): the server's reply mapping of each is kept this long
# instead of 2 minutes, so a flood of such acks cannot pin the server's memory for long.
ACK_RESPONSE_THRESHOLD = "5s"

# The JetStream API of an admin: the list of terraform-provider-jetstream's README, with
# the current consumer create subjects (2.9+: `CREATE.<stream>.<consumer>[.<filter>]`,
# what the reconciler and NACK send) beside the legacy durable one, and `$JS.API.INFO`
# (account limits). Stream templates are left out: servers since 2.10 refuse them.
# Absent on purpose: STREAM.PURGE, STREAM.MSG.GET, STREAM.MSG.DELETE, DIRECT.GET,
# CONSUMER.MSG.NEXT, snapshots and restores, leader step-downs, peer removal,
# account purge: an admin shapes the bus and never reads or removes a message.
ADMIN_API_SUBJECTS = (
    "$JS.API.INFO",
    "$JS.API.STREAM.CREATE.*",
    "$JS.API.STREAM.UPDATE.*",
    "$JS.API.STREAM.DELETE.*",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.NAMES",
    "$JS.API.CONSUMER.CREATE.*.*",
    "$JS.API.CONSUMER.CREATE.*.*.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.*.*",
    "$JS.API.CONSUMER.DELETE.*.*",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.CONSUMER.LIST.*",
    "$JS.API.CONSUMER.NAMES.*",
)

# Monitoring reports a system-account user may request, of every server (`PING`) or of one
# (`<server id>`). Left out: RELOAD, KICK, LDM (lame duck mode), PROFILEZ: they change or
# stop servers, or cost them CPU.
MONITOR_REPORTS = (
    "STATZ",
    "VARZ",
    "CONNZ",
    "ROUTEZ",
    "GATEWAYZ",
    "LEAFZ",
    "SUBSZ",
    "JSZ",
    "ACCOUNTZ",
    "HEALTHZ",
    "IDZ",
)
MONITOR_ACCOUNT_REPORTS = ("CONNZ", "SUBSZ", "JSZ", "INFO", "STATZ", "LEAFZ")

_HASH_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Import:
    """One service import of a service's account from the JetStream account.

    Attributes:
        subject: The subject in the JetStream account (what it exports).
        local: The subject the service publishes in its own account.
        stream_response: The request is answered by many messages (a pull request's
            fetched messages and heartbeats), not one (`response_type: stream`).
        response_threshold: How long the server keeps the reply mapping of a request
            (`response_threshold`; None: the server's default, 2 minutes).
    """

    subject: str
    local: str
    stream_response: bool = False
    response_threshold: str | None = None


@dataclass(frozen=True)
class Permissions:
    """The account of one identity and the subjects it may publish to and subscribe to.

    Attributes:
        publish: Subjects (with `*` and `>` wildcards) the identity may publish to.
        subscribe: Subjects the identity may subscribe to.
        inbox_prefix: The prefix its client must give its reply inboxes (`inbox_prefix` of
            nats-py's connect); its subscribe list is `<inbox_prefix>.>`.
        account: The account its users belong to.
        imports: What its account imports from the JetStream account (services only).
        api_prefix: The JetStream API prefix its clients must use (`NATS_JS_API_PREFIX`),
            or None for the account's own (`$JS.API`, or a domain's).
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    inbox_prefix: str
    account: str = ""
    imports: tuple[Import, ...] = ()
    api_prefix: str | None = None

    def to_dict(self) -> dict[str, list[str]]:
        """The `permissions` block of the server's config, as data."""
        return {"publish": list(self.publish), "subscribe": list(self.subscribe)}


def inbox_prefix(identity: str) -> str:
    """The inbox prefix of `identity`: `_INBOX.<identity>`."""
    return f"{INBOX_ROOT}.{identity}"


def account_hash(account: str) -> str:
    """The 8-character token that names `account` in the server's v2 ack subjects.

    nats-server's `getHash`: the first 8 bytes of SHA-256 of the name, each mapped to a
    base-62 digit (tests/test_auth_server.py compares it with the subjects a server sends).
    """
    digest = hashlib.sha256(account.encode()).digest()
    return "".join(_HASH_DIGITS[b % 62] for b in digest[:8])


def ack_subjects(
    stream: str, consumer: str, *, account: str, domain: str | None = None
) -> tuple[str, str]:
    """The subjects of acks to messages of `consumer`: the v1 form and the v2 form.

    2.10 .. 2.15 send `$JS.ACK.<stream>.<consumer>.<5 numbers>`; with the feature flag
    `js_ack_fc_v2` (2.14+), announced as the later default, they send
    `$JS.ACK.<domain or _>.<account hash>.<stream>.<consumer>.<5 numbers>`. Both are
    granted so that an upgrade of the server or the flag does not stop the acks.
    """
    return (
        f"$JS.ACK.{stream}.{consumer}.>",
        f"$JS.ACK.{domain or '_'}.{account_hash(account)}.{stream}.{consumer}.>",
    )


def service_account(jetstream_account: str, service: str) -> str:
    """The account of `service`: `<jetstream account>-<service>`."""
    return f"{jetstream_account}-{service}"


def _api(name: str) -> Import:
    return Import(
        f"{JETSTREAM_API_PREFIX}.{name}",
        f"{SERVICE_API_PREFIX}.{name}",
        stream_response=name.startswith("CONSUMER.MSG.NEXT."),
    )


def consumer_imports(
    consumer: Consumer, *, account: str, domain: str | None = None
) -> tuple[Import, ...]:
    """What a service's account imports to use its own pull consumer `consumer`: its info,
    its pull requests (answered by many messages) and the acks of its messages (whose
    subjects the server sets, so they keep their name)."""
    s, c = consumer.stream, consumer.name
    return (
        _api(f"CONSUMER.INFO.{s}.{c}"),
        _api(f"CONSUMER.MSG.NEXT.{s}.{c}"),
        *(
            Import(a, a, response_threshold=ACK_RESPONSE_THRESHOLD)
            for a in ack_subjects(s, c, account=account, domain=domain)
        ),
    )


def consumer_subjects(
    consumer: Consumer, *, account: str, domain: str | None = None
) -> tuple[str, ...]:
    """What a service publishes (in its own account) to use its own pull consumer."""
    return tuple(i.local for i in consumer_imports(consumer, account=account, domain=domain))


def _filters(topology: Topology, consumer: Consumer) -> tuple[str, ...]:
    if consumer.filter_subjects:
        return consumer.filter_subjects
    return tuple(t.subject for t in topology.stream(consumer.stream).topics)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _importing(identity: str, jetstream_account: str, imports: Iterable[Import]) -> Permissions:
    """An identity in an account of its own that imports `imports` from the JetStream
    account: it may publish exactly their local subjects and read its own inbox."""
    unique = tuple(dict.fromkeys(imports))
    prefix = inbox_prefix(identity)
    return Permissions(
        _unique(i.local for i in unique),
        (f"{prefix}.>",),
        prefix,
        account=service_account(jetstream_account, identity),
        imports=unique,
        api_prefix=SERVICE_API_PREFIX,
    )


def check_identity_names(topology: Topology) -> None:
    """Refuse a service named like one of natstopo's own identities.

    Raises:
        SetupError: A service is named `admin` or `monitor`.
    """
    for svc in topology.services:
        if svc.name in RESERVED_IDENTITIES:
            raise SetupError(
                f"service `{svc.name}` has the name of natstopo's own `{svc.name}` identity; "
                f"rename the service (reserved: {', '.join(sorted(RESERVED_IDENTITIES))})"
            )


def service_permissions(
    topology: Topology, service: str, *, account: str | None = None, domain: str | None = None
) -> Permissions:
    """The permissions of `service`, derived from what the topology declares for it.

    Imports and publish, in this order: the subjects of its topics; the dead-letter
    subjects of its consumers (`<dlq prefix>.<stream>.<filter>`, where the bus copies an
    exhausted message); `STREAM.INFO.<stream>` of every stream it publishes to, consumes
    from or dead-letters to (the bus's start-up check); and per consumer of its own:
    `CONSUMER.INFO`, `CONSUMER.MSG.NEXT` (these three under `SERVICE_API_PREFIX`) and the
    acks (`ack_subjects`). Subscribe: its inbox prefix only.

    Args:
        topology: The model.
        service: A declared service.
        account: The JetStream account (default: the topology's name); names the v2 ack
            subjects and, with the service, the service's account.
        domain: The JetStream domain of the servers, if one is set.

    Raises:
        SetupError: `service` is not declared.
    """
    try:
        topology.service(service)
    except KeyError:
        raise SetupError(
            f"service `{service}` is not declared in topology `{topology.name}`"
        ) from None
    account = account or topology.name
    topics = topology.topics_published_by(service)
    consumers = topology.consumers_of(service)
    imports: list[Import] = [Import(t.subject, t.subject) for t in topics]
    streams = [t.stream for t in topics] + [c.stream for c in consumers]
    for c in consumers:
        dead_letter = topology.stream(c.stream).dead_letter
        if dead_letter is None:
            continue
        dl = topology.stream(dead_letter)
        streams.append(dl.name)
        for f in _filters(topology, c):
            subject = dl.dead_letter_subject(c.stream, f)
            imports.append(Import(subject, subject))
    imports += [_api(f"STREAM.INFO.{s}") for s in _unique(streams)]
    for c in consumers:
        imports += consumer_imports(c, account=account, domain=domain)
    return _importing(service, account, imports)


def admin_permissions(identity: str = ADMIN, *, account: str = "") -> Permissions:
    """The provisioning identity, in the JetStream account: management, no message access.

    It may subscribe to every inbox of that account (`_INBOX.>`), so that clients which
    cannot set an inbox prefix (NACK's controller, nats.go's default `_INBOX.<random>`)
    get their API answers; the services' inboxes are in their own accounts, out of its
    sight. natstopo's own tools still use `_INBOX.admin`.
    """
    prefix = inbox_prefix(identity)
    return Permissions(ADMIN_API_SUBJECTS, (f"{INBOX_ROOT}.>",), prefix, account=account)


def dlq_operator_permissions(
    topology: Topology, identity: str = DLQ_OPERATOR, *, account: str | None = None
) -> Permissions:
    """Who runs `natstopo dlq list|replay|purge`, in an account of its own like a service
    (`<jetstream account>-dlq-operator`, JetStream's API under `SERVICE_API_PREFIX`): of
    each dead-letter stream its info, message get, message delete and purge; of each
    stream that dead-letters into one, its info and its topics' subjects (a replay
    publishes the body again on its original subject). No stream or consumer management,
    no fetch or ack, nothing of a stream without dead letters; and, in its own account,
    its inbox (the dead letters it reads) is out of the admin's sight."""
    account = account or topology.name
    imports: list[Import] = []
    for s in topology.streams:
        if s.dead_letter_sources:
            imports += [
                _api(f"STREAM.{what}.{s.name}")
                for what in ("INFO", "MSG.GET", "MSG.DELETE", "PURGE")
            ]
    for s in topology.streams:
        if s.dead_letter is not None:
            imports.append(_api(f"STREAM.INFO.{s.name}"))
            imports += [Import(t.subject, t.subject) for t in s.topics]
    return _importing(identity, account, imports)


def monitor_permissions(identity: str = MONITOR) -> Permissions:
    """The monitoring identity of the system account: report requests only."""
    prefix = inbox_prefix(identity)
    publish = [
        "$SYS.REQ.SERVER.PING",
        *(f"$SYS.REQ.SERVER.PING.{r}" for r in MONITOR_REPORTS),
        *(f"$SYS.REQ.SERVER.*.{r}" for r in MONITOR_REPORTS),
        *(f"$SYS.REQ.ACCOUNT.*.{r}" for r in MONITOR_ACCOUNT_REPORTS),
    ]
    return Permissions(tuple(publish), (f"{prefix}.>",), prefix, account=SYSTEM_ACCOUNT)


_DOMAIN = re.compile(r"[A-Za-z0-9_-]+")


def check_domain(domain: str | None) -> None:
    """A JetStream domain is one subject token (`$JS.<domain>.API`, `$JS.ACK.<domain>...`).

    Raises:
        SetupError: It holds a dot, a wildcard, a space or a quote.
    """
    if domain is not None and not _DOMAIN.fullmatch(domain):
        raise SetupError(
            f"JetStream domain {domain!r} must be one subject token (letters, digits, `_`, "
            "`-`): no dots, wildcards, spaces or quotes"
        )


def all_permissions(
    topology: Topology, *, account: str | None = None, domain: str | None = None
) -> dict[str, Permissions]:
    """Every identity's permissions: each service in file order, then `admin`,
    `dlq-operator`, `monitor`.

    Raises:
        SetupError: A service has a reserved name.
    """
    check_identity_names(topology)
    check_domain(domain)
    account = account or topology.name
    out = {
        s.name: service_permissions(topology, s.name, account=account, domain=domain)
        for s in topology.services
    }
    out[ADMIN] = admin_permissions(account=account)
    out[DLQ_OPERATOR] = dlq_operator_permissions(topology, account=account)
    out[MONITOR] = monitor_permissions()
    return out


@dataclass(frozen=True)
class Export:
    """One service export of the JetStream account, to the accounts that import it."""

    subject: str
    accounts: tuple[str, ...]
    stream_response: bool = False
    response_threshold: str | None = None


def jetstream_exports(permissions: dict[str, Permissions]) -> tuple[Export, ...]:
    """What the JetStream account exports: each imported subject once, to exactly the
    service accounts that import it (first use's order)."""
    by_subject: dict[str, tuple[list[str], Import]] = {}
    for perms in permissions.values():
        for imp in perms.imports:
            accounts, _ = by_subject.setdefault(imp.subject, ([], imp))
            if perms.account not in accounts:
                accounts.append(perms.account)
    return tuple(
        Export(s, tuple(a), i.stream_response, i.response_threshold)
        for s, (a, i) in by_subject.items()
    )

"""Who may publish and subscribe to what: NATS permissions derived from the topology model.

A service may publish exactly the subjects of the topics it is a declared publisher of,
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
RESERVED_IDENTITIES = frozenset({ADMIN, MONITOR})
INBOX_ROOT = "_INBOX"
SYSTEM_ACCOUNT = "SYS"

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
class Permissions:
    """The subjects one identity may publish to and subscribe to (allow lists).

    Attributes:
        publish: Subjects (with `*` and `>` wildcards) the identity may publish to.
        subscribe: Subjects the identity may subscribe to.
        inbox_prefix: The prefix its client must give its reply inboxes (`inbox_prefix` of
            nats-py's connect); its subscribe list is `<inbox_prefix>.>`.
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    inbox_prefix: str

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


def consumer_subjects(
    consumer: Consumer, *, account: str, domain: str | None = None
) -> tuple[str, ...]:
    """What a service publishes to use its own pull consumer `consumer`."""
    s, c = consumer.stream, consumer.name
    return (
        f"$JS.API.CONSUMER.INFO.{s}.{c}",
        f"$JS.API.CONSUMER.MSG.NEXT.{s}.{c}",
        *ack_subjects(s, c, account=account, domain=domain),
    )


def _filters(topology: Topology, consumer: Consumer) -> tuple[str, ...]:
    if consumer.filter_subjects:
        return consumer.filter_subjects
    return tuple(t.subject for t in topology.stream(consumer.stream).topics)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


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

    Publish, in this order: the subjects of its topics; the dead-letter subjects of its
    consumers (`<dlq prefix>.<stream>.<filter>`, where the bus copies an exhausted message);
    `$JS.API.STREAM.INFO.<stream>` of every stream it publishes to, consumes from or
    dead-letters to (the bus's start-up check); and per consumer of its own:
    `$JS.API.CONSUMER.INFO`, `$JS.API.CONSUMER.MSG.NEXT` and the acks (`ack_subjects`).
    Subscribe: its inbox prefix only.

    Args:
        topology: The model.
        service: A declared service.
        account: The account the services live in (default: the topology's name); names
            the v2 ack subjects.
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
    publish: list[str] = [t.subject for t in topics]
    streams = [t.stream for t in topics] + [c.stream for c in consumers]
    for c in consumers:
        dead_letter = topology.stream(c.stream).dead_letter
        if dead_letter is None:
            continue
        dl = topology.stream(dead_letter)
        streams.append(dl.name)
        publish += [dl.dead_letter_subject(c.stream, f) for f in _filters(topology, c)]
    publish += [f"$JS.API.STREAM.INFO.{s}" for s in _unique(streams)]
    for c in consumers:
        publish += consumer_subjects(c, account=account, domain=domain)
    prefix = inbox_prefix(service)
    return Permissions(_unique(publish), (f"{prefix}.>",), prefix)


def admin_permissions(identity: str = ADMIN) -> Permissions:
    """The provisioning identity: JetStream management, no message access, its own inbox."""
    prefix = inbox_prefix(identity)
    return Permissions(ADMIN_API_SUBJECTS, (f"{prefix}.>",), prefix)


def monitor_permissions(identity: str = MONITOR) -> Permissions:
    """The monitoring identity of the system account: report requests only."""
    prefix = inbox_prefix(identity)
    publish = [
        "$SYS.REQ.SERVER.PING",
        *(f"$SYS.REQ.SERVER.PING.{r}" for r in MONITOR_REPORTS),
        *(f"$SYS.REQ.SERVER.*.{r}" for r in MONITOR_REPORTS),
        *(f"$SYS.REQ.ACCOUNT.*.{r}" for r in MONITOR_ACCOUNT_REPORTS),
    ]
    return Permissions(tuple(publish), (f"{prefix}.>",), prefix)


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
    """Every identity's permissions: each service in file order, then `admin`, `monitor`.

    Raises:
        SetupError: A service has a reserved name.
    """
    check_identity_names(topology)
    check_domain(domain)
    out = {
        s.name: service_permissions(topology, s.name, account=account, domain=domain)
        for s in topology.services
    }
    out[ADMIN] = admin_permissions()
    out[MONITOR] = monitor_permissions()
    return out

"""The generated authorization against real servers (2.10 and the newest): the server is the oracle.

Every server here runs with the `auth.conf` that `CredentialStore.render` makes for the
shipped topology, and every client connects with exactly one identity's env file (its
credentials and inbox prefix) through `connect_kwargs`. What a service may do is shown by
doing it; what it may not is shown by the server's own permission violation for that very
subject (waited for, not slept on) and, where something could have changed, by the admin
reading the state afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from harness import NatsServer, ServerBinary, available_servers, running_cluster, running_server
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bus_runtime import EventPayload, apply_plan, load_topology, plan_changes
from bus_runtime._errors import ConnectError, PermissionViolationError
from bus_runtime.jetstream.api import JetStreamApi
from bus_runtime.jetstream.connect import ConnectOptions, connect
from bus_runtime.security import (
    ADMIN,
    DLQ_OPERATOR,
    MONITOR,
    CredentialStore,
    account_hash,
    connect_kwargs,
    permission_violation,
    read_env_file,
    service_account,
    service_connect_options,
)
from bus_runtime.topology.model import Topology

pytestmark = pytest.mark.nats

REPO = Path(__file__).resolve().parent.parent
# The oldest and the newest server, as conftest's `_each` fixtures (a module named
# conftest is not importable from here when tests/e2e has one too).
_ALL = available_servers()
SERVERS = sorted({_ALL[0], _ALL[-1]}) if _ALL else []


def _ids(binaries: list[ServerBinary]) -> list[str]:
    return [f"nats-{b.version_str}" for b in binaries]


SHIPPED = REPO / "topology" / "topology.yaml"
# The lowest bcrypt cost: the server checks a hash at every connect, and these tests
# connect a few hundred times; the cost changes nothing else.
COST = 4
NEWEST = SERVERS[-1] if SERVERS else None
V2_FLAG = "feature_flags { js_ack_fc_v2: true }"
# The server answers a refused publish or subscription at once; this only bounds a failure.
VIOLATION_WAIT = 5.0


def render(
    directory: Path, env: str | None = "dev", **kw: object
) -> tuple[Topology, CredentialStore]:
    topology = load_topology(SHIPPED, env)
    store = CredentialStore(directory)
    store.render(topology, cost=COST, **kw)  # type: ignore[arg-type]
    return topology, store


@dataclass
class Identity:
    """One connection made with exactly one identity's env file, and what the server said."""

    name: str
    nc: Client
    errors: asyncio.Queue[Exception] = field(default_factory=asyncio.Queue)
    # The JetStream API prefix its env file names (a service's imports), else `$JS.API`.
    api: str = "$JS.API"

    def js(self) -> JetStreamContext:
        """nats-py's JetStream context with this identity's API prefix."""
        return self.nc.jetstream(prefix=self.api)

    async def violation(self, subject: str) -> PermissionViolationError:
        """The server's permission violation for `subject` (other errors are kept out)."""
        async with asyncio.timeout(VIOLATION_WAIT):
            while True:
                err = permission_violation(await self.errors.get(), self.name, [subject])
                if err is not None and err.subject == subject:
                    return err

    async def refused_publish(self, subject: str, reply: str | None = None) -> None:
        await self.nc.publish(subject, b"{}", reply=reply or self.nc.new_inbox())
        err = await self.violation(subject)
        assert err.operation == "publish"
        assert err.service == self.name and self.name in str(err) and subject in str(err)

    async def refused_api(self, subject: str) -> None:
        """`refused_publish`, and for a `$JS.API.` subject also under its own API prefix."""
        await self.refused_publish(subject)
        if subject.startswith("$JS.API.") and self.api != "$JS.API":
            await self.refused_publish(self.api + subject.removeprefix("$JS.API"))

    async def refused_subscribe(self, subject: str) -> None:
        sub = await self.nc.subscribe(subject)
        err = await self.violation(subject)
        assert err.operation == "subscribe"
        await sub.unsubscribe()


async def collect(nc: Client, subject: str) -> asyncio.Queue[Msg]:
    """Every message `nc` receives on `subject`, in a queue (the subscription is made)."""
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(msg)

    await nc.subscribe(subject, cb=on_msg)
    return got


async def connect_as(
    url: str | list[str],
    store: CredentialStore,
    name: str,
    options: dict[str, object] | None = None,
    **extra: object,
) -> Identity:
    """Connect as `name` with its env file (`options` override it, `extra` go to nats-py)."""
    errors: asyncio.Queue[Exception] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        errors.put_nowait(exc)

    kwargs = connect_kwargs(name, env={}, env_file=store.env_path(name), **(options or {}))
    api = read_env_file(store.env_path(name)).get("NATS_JS_API_PREFIX", "$JS.API")
    nc = await nats.connect(
        servers=[url] if isinstance(url, str) else url,
        error_cb=on_error,
        allow_reconnect=False,
        **kwargs,
        **extra,
    )  # type: ignore[arg-type]
    return Identity(name, nc, errors, api)


async def provision(url: str | list[str], store: CredentialStore, topology: Topology) -> None:
    """The admin identity applies the whole topology with the reconciler; nothing is left."""
    admin = await connect_as(url, store, ADMIN)
    try:
        plan = await plan_changes(admin.nc, topology)
        await apply_plan(admin.nc, plan)
        again = await plan_changes(admin.nc, topology)
        assert not again.has_changes, again.to_text()
    finally:
        await admin.nc.close()


def tokens_for(subject: str) -> str:
    return subject.replace("*", "iris")


@pytest.fixture(params=SERVERS, ids=_ids(SERVERS))
def secured(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[NatsServer, Topology, CredentialStore]]:
    topology, store = render(tmp_path / "auth")
    with running_server(
        request.param, includes={"auth.conf": store.auth_path.read_text()}
    ) as server:
        yield server, topology, store


@pytest.fixture
async def provisioned(
    secured: tuple[NatsServer, Topology, CredentialStore],
) -> AsyncIterator[tuple[NatsServer, Topology, CredentialStore]]:
    server, topology, store = secured
    await provision(server.url, store, topology)
    yield server, topology, store


async def _stream_states(
    url: str, store: CredentialStore, topology: Topology
) -> dict[str, dict[str, object]]:
    admin = await connect_as(url, store, ADMIN)
    try:
        js = admin.js()
        out: dict[str, dict[str, object]] = {}
        for s in topology.streams:
            info = await js.stream_info(s.name)
            consumers = {}
            for c in s.consumers:
                ci = await js.consumer_info(s.name, c.name)
                consumers[c.name] = (
                    ci.delivered.stream_seq,
                    ci.ack_floor.stream_seq,
                    ci.num_pending,
                )
            out[s.name] = {
                "last_seq": info.state.last_seq,
                "messages": info.state.messages,
                "consumers": consumers,
            }
        return out
    finally:
        await admin.nc.close()


async def test_each_service_publishes_its_topics_and_consumes_through_its_own_consumers(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    server, topology, store = provisioned
    published: dict[str, int] = {}
    for svc in topology.services:
        topics = topology.topics_published_by(svc.name)
        if not topics:
            continue
        me = await connect_as(server.url, store, svc.name)
        js = me.js()
        for t in topics:
            subject = tokens_for(t.subject)
            ack = await js.publish(subject, json.dumps({"by": svc.name}).encode())
            assert ack.stream == t.stream
            published[subject] = published.get(subject, 0) + 1
        assert me.errors.empty(), list(me.errors._queue)  # type: ignore[attr-defined]
        await me.nc.close()

    for svc in topology.services:
        consumers = topology.consumers_of(svc.name)
        if not consumers:
            continue
        me = await connect_as(server.url, store, svc.name)
        js = me.js()
        for c in consumers:
            expected = sum(
                n
                for subj, n in published.items()
                if any(topology.topic(t).matches(subj) for t in c.topics)
            )
            assert expected > 0, f"{c.name}: nothing published for it"
            sub = await js.pull_subscribe_bind(c.name, c.stream)  # CONSUMER.INFO, then MSG.NEXT
            got: list[Msg] = []
            while len(got) < expected:
                got += await sub.fetch(expected - len(got), timeout=5)
            for i, msg in enumerate(got):
                assert msg.reply.startswith(f"$JS.ACK.{c.stream}.{c.name}.")
                # ack_sync: the server confirms it took the ack (a refused ack would time out).
                await (msg.ack_sync() if i == 0 else msg.ack())
            await sub.unsubscribe()
        await me.nc.flush()
        assert me.errors.empty(), list(me.errors._queue)  # type: ignore[attr-defined]
        await me.nc.close()

    # Every message was taken and acked through its consumer: the server's own count.
    states = await _stream_states(server.url, store, topology)
    for s in topology.streams:
        for c in s.consumers:
            delivered, ack_floor, pending = states[s.name]["consumers"][c.name]  # type: ignore[index]
            assert pending == 0 and delivered == ack_floor, (c.name, delivered, ack_floor, pending)
    assert states["TAX_AGENT_JOBS"]["messages"] == 0  # work queue: acked jobs are gone


def _others_consumer(topology: Topology, service: str) -> tuple[str, str]:
    for c in topology.consumers:
        if c.service != service:
            return c.stream, c.name
    raise AssertionError("no consumer of another service")


def _others_topic(topology: Topology, service: str) -> str:
    for t in topology.topics:
        if service not in t.publishers:
            return tokens_for(t.subject)
    raise AssertionError("no topic of another service")


async def test_a_service_is_refused_everything_it_does_not_declare(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """Each service in turn as the attacker, with its own valid credentials."""
    server, topology, store = provisioned
    before = await _stream_states(server.url, store, topology)
    account = topology.name
    for svc in topology.services:
        me = await connect_as(server.url, store, svc.name)
        stream, other = _others_consumer(topology, svc.name)
        mine = topology.consumers_of(svc.name)
        own_stream, own = (mine[0].stream, mine[0].name) if mine else (stream, other)
        victim = next(s.name for s in topology.services if s.name != svc.name)
        for subject in (
            _others_topic(topology, svc.name),  # publishing another service's topic
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{other}",  # fetching through another's consumer
            f"$JS.ACK.{stream}.{other}.1.1.1.1.0",  # acking for another's consumer (v1)
            f"$JS.ACK._.{account_hash(account)}.{stream}.{other}.1.1.1.1.0",  # (v2)
            f"$JS.API.CONSUMER.INFO.{stream}.{other}",
            "$JS.API.STREAM.CREATE.EVIL",
            f"$JS.API.STREAM.UPDATE.{own_stream}",
            f"$JS.API.STREAM.PURGE.{own_stream}",
            f"$JS.API.STREAM.DELETE.{own_stream}",
            f"$JS.API.STREAM.MSG.DELETE.{own_stream}",
            f"$JS.API.STREAM.MSG.GET.{own_stream}",
            f"$JS.API.DIRECT.GET.{own_stream}",
            f"$JS.API.DIRECT.GET.{own_stream}.tax.user.login",
            f"$JS.API.CONSUMER.CREATE.{own_stream}.evil",
            f"$JS.API.CONSUMER.CREATE.{own_stream}.{own}",  # not even its own: no update
            f"$JS.API.CONSUMER.DURABLE.CREATE.{own_stream}.evil",
            f"$JS.API.CONSUMER.DELETE.{own_stream}.{own}",
            f"$JS.API.CONSUMER.LIST.{own_stream}",
            "$JS.API.STREAM.LIST",
            "$JS.API.STREAM.NAMES",
            "$JS.API.INFO",
            f"_INBOX.{victim}.abc",  # forging a reply to another service
            f"$JS.API.CONSUMER.CREATE.{own_stream}",  # an ephemeral consumer
            f"$JS.API.CONSUMER.PAUSE.{own_stream}.{own}",
            f"$JS.API.CONSUMER.RESET.{own_stream}.{own}",
            f"$JS.API.CONSUMER.UNPIN.{own_stream}.{own}",
            f"$JS.API.STREAM.LEADER.STEPDOWN.{own_stream}",
            "$JS.API.META.LEADER.STEPDOWN",
            "$JS.API.SERVER.REMOVE",
            "$JS.API.ACCOUNT.PURGE.tax-agent",
            "$KV.config.key",
            "$SYS.REQ.SERVER.PING.CONNZ",
        ):
            await me.refused_api(subject)
        for subject in (
            f"_INBOX.{victim}.>",  # reading another service's replies (its fetched messages)
            "_INBOX.>",
            ">",
            "tax.>",  # reading events off the wire, past the consumers
            "jobs.ocr.requested",
            "$JS.EVENT.>",  # advisories
            "$JS.API.>",  # other clients' API requests
            "$JS.ACK.>",
        ):
            await me.refused_subscribe(subject)
        await me.nc.close()
    # Nothing was stored, fetched, acked, created or deleted.
    assert await _stream_states(server.url, store, topology) == before
    admin = await connect_as(server.url, store, ADMIN)
    names = await admin.nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=5)
    assert sorted(json.loads(names.data)["streams"]) == sorted(s.name for s in topology.streams)
    await admin.nc.close()


async def test_what_a_service_can_still_do_within_its_rights(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """The limits of subject permissions, shown so that docs/security.md can list them."""
    server, _topology, store = provisioned
    ocr = await connect_as(server.url, store, "svc-ocr")
    kg = await connect_as(server.url, store, "svc-kg")
    got = await collect(kg.nc, "_INBOX.svc-kg.>")
    await kg.nc.flush()
    # 1. A reply subject is not checked, but it is answered in the publisher's own account:
    #    the PubAck of svc-ocr's publish with svc-kg's inbox as reply never reaches svc-kg
    #    (with one shared account it did). Its next publish's PubAck reaching svc-ocr shows
    #    the first was answered (a stream answers in order); svc-kg's round trip after that
    #    would carry the spoofed one before its PONG.
    await ocr.nc.publish("tax.document.ocr_completed", b"{}", reply="_INBOX.svc-kg.spoof")
    own = await ocr.nc.request("tax.document.ocr_completed", b"{}", timeout=5)
    assert json.loads(own.data)["seq"] == 2
    await kg.nc.flush()
    assert got.empty(), got.get_nowait()
    # 2. Stream info of a stream it uses tells the subjects stored and their counts.
    reply = await ocr.nc.request(
        f"{ocr.api}.STREAM.INFO.TAX_AGENT_EVENTS",
        json.dumps({"subjects_filter": ">"}).encode(),
        timeout=5,
    )
    assert json.loads(reply.data)["state"]["subjects"] == {"tax.document.ocr_completed": 2}
    # 3. It may write dead letters for the subjects its own consumers take.
    ack = await ocr.js().publish("dlq.TAX_AGENT_JOBS.jobs.ocr.requested", b"{}")
    assert ack.stream == "TAX_AGENT_DLQ"
    await ocr.refused_publish("dlq.TAX_AGENT_EVENTS.tax.user.login")  # not its consumer's
    await ocr.nc.close()
    await kg.nc.close()


async def test_connecting_without_or_with_wrong_credentials_is_refused(
    secured: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    server, _topology, store = secured
    ocr = read_env_file(store.env_path("svc-ocr"))
    admin = read_env_file(store.env_path(ADMIN))
    for options in (
        ConnectOptions(servers=(server.url,)),  # no credentials at all
        ConnectOptions(servers=(server.url,), user=ocr["NATS_USER"], password="wrong"),
        ConnectOptions(
            servers=(server.url,), user=ocr["NATS_USER"], password=admin["NATS_PASSWORD"]
        ),
        ConnectOptions(servers=(server.url,), user="nobody", password=ocr["NATS_PASSWORD"]),
        ConnectOptions(servers=(server.url,), token=ocr["NATS_PASSWORD"]),
    ):
        with pytest.raises(ConnectError) as info:
            await connect(options)
        assert "authorization failed" in str(info.value)
        assert ocr["NATS_PASSWORD"] not in str(info.value) and admin["NATS_PASSWORD"] not in str(
            info.value
        )
    # and the real one works through the same path
    nc = await connect(
        ConnectOptions.from_env(read_env_file(store.env_path("svc-ocr")), servers=server.url)
    )
    await nc.close()


async def test_the_admin_provisions_but_reads_and_removes_no_message(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    server, _topology, store = provisioned
    ingestion = await connect_as(server.url, store, "svc-ingestion")
    await ingestion.js().publish("tax.document.uploaded", b"{}")
    await ingestion.nc.close()
    admin = await connect_as(server.url, store, ADMIN)
    events = "TAX_AGENT_EVENTS"
    for subject in (
        f"$JS.API.STREAM.MSG.GET.{events}",
        f"$JS.API.DIRECT.GET.{events}",
        f"$JS.API.STREAM.MSG.DELETE.{events}",
        f"$JS.API.STREAM.PURGE.{events}",
        f"$JS.API.CONSUMER.MSG.NEXT.{events}.audit-trail",
        f"$JS.ACK.{events}.audit-trail.1.1.1.1.0",
        "tax.document.uploaded",
        f"$JS.API.STREAM.SNAPSHOT.{events}",
    ):
        await admin.refused_publish(subject)
    for subject in ("tax.>", "$JS.EVENT.>", ">"):
        await admin.refused_subscribe(subject)
    info = await admin.js().stream_info(events)
    assert info.state.messages == 1
    # It may subscribe to every inbox of its account (NACK's controller cannot set an
    # inbox prefix), where no service's reply is: svc-audit's fetched message and a
    # PubAck of svc-ingestion arrive in their own accounts only.
    seen = await collect(admin.nc, "_INBOX.>")
    await admin.nc.flush()
    audit = await connect_as(server.url, store, "svc-audit")
    (msg,) = await (await audit.js().pull_subscribe_bind("audit-trail", events)).fetch(1, timeout=5)
    await msg.ack_sync()
    ingestion = await connect_as(server.url, store, "svc-ingestion")
    await ingestion.js().publish("tax.document.uploaded", b"{}")
    await ingestion.nc.close()
    await audit.nc.close()
    await admin.nc.flush()
    assert seen.empty(), seen.get_nowait()
    await admin.nc.close()


async def test_a_client_without_an_inbox_prefix_provisions_as_admin(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """What NACK's controller does (nats.go's default inboxes `_INBOX.<random>`)."""
    server, topology, store = provisioned
    admin = await connect_as(server.url, store, ADMIN, {"inbox_prefix": "_INBOX"})
    try:
        assert admin.nc.new_inbox().startswith("_INBOX.") and "admin" not in admin.nc.new_inbox()
        plan = await plan_changes(admin.nc, topology)
        assert not plan.has_changes, plan.to_text()
        assert admin.errors.empty()
    finally:
        await admin.nc.close()


async def test_the_admin_can_still_read_through_a_push_consumer_it_creates(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """The limit of the documented least privilege: consumer create is enough to read.

    A consumer that pushes to the admin's own inbox delivers every message there; subject
    permissions cannot look into a create request's body. docs/security.md lists it.
    """
    server, _topology, store = provisioned
    ingestion = await connect_as(server.url, store, "svc-ingestion")
    await ingestion.js().publish("tax.document.uploaded", b'{"secret":"data"}')
    await ingestion.nc.close()
    admin = await connect_as(server.url, store, ADMIN)
    got = await collect(admin.nc, "_INBOX.admin.steal")
    config = {
        "durable_name": "steal",
        "deliver_subject": "_INBOX.admin.steal",
        "ack_policy": "none",
    }
    reply = await admin.nc.request(
        "$JS.API.CONSUMER.CREATE.TAX_AGENT_EVENTS.steal",
        json.dumps({"stream_name": "TAX_AGENT_EVENTS", "config": config}).encode(),
        timeout=5,
    )
    assert "error" not in json.loads(reply.data)
    msg = await asyncio.wait_for(got.get(), 5)
    assert msg.data == b'{"secret":"data"}'
    await admin.nc.close()


async def test_the_admin_can_still_store_an_api_answer_in_a_stream_through_a_reply(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """The admin lives in the JetStream account, so a reply it names on an API request is
    answered there: naming a topic stores the answer in that topic's stream."""
    server, _topology, store = provisioned
    admin = await connect_as(server.url, store, ADMIN)
    audit = await connect_as(server.url, store, "svc-audit")
    try:
        await admin.nc.publish("$JS.API.STREAM.INFO.TAX_AGENT_EVENTS", b"", reply="tax.user.login")
        # the stream info answer, stored as an event, reaches the audit trail's consumer
        sub = await audit.js().pull_subscribe_bind("audit-trail", "TAX_AGENT_EVENTS")
        (msg,) = await sub.fetch(1, timeout=10)
        assert msg.subject == "tax.user.login"
        assert json.loads(msg.data)["type"] == "io.nats.jetstream.api.v1.stream_info_response"
    finally:
        await audit.nc.close()
        await admin.nc.close()


async def test_the_monitor_reads_server_reports_and_changes_nothing(
    secured: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    server, _topology, store = secured
    mon = await connect_as(server.url, store, MONITOR)
    reply = await mon.nc.request("$SYS.REQ.SERVER.PING.VARZ", b"", timeout=5)
    varz = json.loads(reply.data)
    assert varz["data"]["server_name"] == server.name
    server_id = varz["server"]["id"]
    reply = await mon.nc.request(f"$SYS.REQ.SERVER.{server_id}.JSZ", b"", timeout=5)
    assert "data" in json.loads(reply.data)
    for subject in (
        f"$SYS.REQ.SERVER.{server_id}.RELOAD",
        f"$SYS.REQ.SERVER.{server_id}.KICK",
        f"$SYS.REQ.SERVER.{server_id}.LDM",
        "$JS.API.INFO",
        "tax.user.login",
    ):
        await mon.refused_publish(subject)
    await mon.refused_subscribe("$SYS.>")
    await mon.nc.close()


@pytest.mark.skipif(NEWEST is None or NEWEST.version < (2, 14, 0), reason="v2 acks need 2.14+")
async def test_v2_ack_subjects_behind_the_feature_flag(tmp_path: Path) -> None:
    assert NEWEST is not None
    topology, store = render(tmp_path / "auth")
    with running_server(
        NEWEST, extra_conf=V2_FLAG, includes={"auth.conf": store.auth_path.read_text()}
    ) as server:
        await provision(server.url, store, topology)
        ui = await connect_as(server.url, store, "ui-review")
        await ui.js().publish("jobs.hmrc.submission_requested", b"{}")
        await ui.nc.close()
        hmrc = await connect_as(server.url, store, "svc-hmrc")
        sub = await hmrc.js().pull_subscribe_bind("hmrc-submitter", "TAX_AGENT_JOBS")
        (msg,) = await sub.fetch(1, timeout=5)
        # The server names the account by the hash permissions.account_hash computes.
        assert msg.reply.startswith(
            f"$JS.ACK._.{account_hash(topology.name)}.TAX_AGENT_JOBS.hmrc-submitter."
        )
        await msg.in_progress()
        await msg.ack_sync()
        # Another service cannot ack with the v2 subject either (a later delivery's subject).
        forged = msg.reply.replace(".1.1.1.", ".2.1.1.", 1)
        ocr = await connect_as(server.url, store, "svc-ocr")
        await ocr.refused_publish(forged)
        await ocr.nc.close()
        await hmrc.nc.close()
        states = await _stream_states(server.url, store, topology)
        assert states["TAX_AGENT_JOBS"]["messages"] == 0  # acked, so gone from the work queue


async def test_nkey_credentials(tmp_path: Path) -> None:
    topology, store = render(tmp_path / "auth", mode="nkey")
    auth = store.auth_path.read_text()
    assert "password" not in auth and 'nkey: "U' in auth
    for binary in SERVERS:
        with running_server(binary, includes={"auth.conf": auth}) as server:
            await provision(server.url, store, topology)
            ocr = await connect_as(server.url, store, "svc-ocr")
            await ocr.js().publish("tax.document.ocr_completed", b"{}")
            await ocr.refused_publish("tax.user.created")
            await ocr.nc.close()
            # Another identity's seed is another identity: its permissions, not svc-ocr's.
            seed = read_env_file(store.env_path("svc-kg"))["NATS_NKEY"]
            wrong = await connect_as(server.url, store, "svc-ocr", {"nkey_seed": seed})
            await wrong.refused_publish("tax.document.ocr_completed")
            await wrong.nc.close()
            other = CredentialStore(tmp_path / "other")
            other.render(topology, mode="nkey", cost=COST)
            with pytest.raises(ConnectError, match="authorization failed"):
                await connect(
                    ConnectOptions.from_env(
                        read_env_file(other.env_path("svc-ocr")), servers=server.url
                    )
                )


async def test_rotation_keeps_both_credentials_during_the_overlap_and_only_the_new_after(
    secured: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    server, topology, store = secured
    await provision(server.url, store, topology)
    old_env = read_env_file(store.env_path("svc-ocr"))
    running = await connect_as(server.url, store, "svc-ocr")  # a pod started before the rotation
    closed = asyncio.Event()

    async def publish_with(env: dict[str, str]) -> None:
        options = ConnectOptions.from_env(env, servers=server.url)
        nc = await connect(options)
        ack = await nc.jetstream().publish("tax.document.ocr_completed", b"{}")
        assert ack.stream == "TAX_AGENT_EVENTS"
        await nc.close()

    # 1. A new credential; the old one stays in the authorization. Reload.
    store.render(topology, rotate=["svc-ocr"], cost=COST)
    new_env = read_env_file(store.env_path("svc-ocr"))
    assert new_env["NATS_USER"] != old_env["NATS_USER"]
    server.write_include("auth.conf", store.auth_path.read_text())
    server.reload()
    await publish_with(old_env)
    await publish_with(new_env)
    await running.js().publish("tax.document.ocr_completed", b"{}")  # still connected

    # 2. Every pod moved to the new one: retire the old. Reload.
    await running.nc.close()
    store.render(topology, retire=["svc-ocr"], cost=COST)
    survivor = await connect_as(server.url, store, "svc-ocr", closed_cb=_set(closed))
    server.write_include("auth.conf", store.auth_path.read_text())
    server.reload()
    with pytest.raises(ConnectError, match="authorization failed"):
        await publish_with(old_env)
    await publish_with(new_env)
    await survivor.js().publish("tax.document.ocr_completed", b"{}")
    assert not closed.is_set()
    await survivor.nc.close()


def _set(event: asyncio.Event):  # type: ignore[no-untyped-def]
    async def cb() -> None:
        event.set()

    return cb


async def test_a_retired_credential_still_connected_is_cut_off_at_the_reload(
    secured: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """Why the procedure moves every client to the new credential before retiring the old."""
    server, topology, store = secured
    closed = asyncio.Event()
    stale = await connect_as(server.url, store, "svc-ocr", closed_cb=_set(closed))
    store.render(topology, rotate=["svc-ocr"], cost=COST)
    server.write_include("auth.conf", store.auth_path.read_text())
    server.reload()
    await stale.nc.flush()
    assert not closed.is_set()  # the overlap: still connected after the first reload
    store.render(topology, retire=["svc-ocr"], cost=COST)
    server.write_include("auth.conf", store.auth_path.read_text())
    server.reload()
    await asyncio.wait_for(closed.wait(), 10)


async def test_the_bus_runs_with_its_service_credentials(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    from bus_runtime import create_event_bus

    server, topology, store = provisioned
    got: asyncio.Queue[EventPayload] = asyncio.Queue()

    async def handle(topic: str, payload: EventPayload) -> None:
        got.put_nowait(payload)

    def bus(service: str):  # type: ignore[no-untyped-def]
        return create_event_bus(
            "nats",
            servers=server.url,
            topology=topology,
            service=service,
            startup_check="off",
            connection=service_connect_options(service, env={}, env_file=store.env_path(service)),
        )

    worker = bus("svc-normalize-map")
    await worker.subscribe("normalize.requested", handle)
    await worker.start()
    publisher = bus("svc-extract")
    await publisher.start()
    sent = EventPayload(data={"document_id": "d-1"}, actor="svc-extract", tenant_id="t-1")
    try:
        assert await publisher.publish("normalize.requested", sent) is True
        received = await asyncio.wait_for(got.get(), 10)
        assert received.event_id == sent.event_id
    finally:
        await publisher.stop()
        await worker.stop()
    # The bus acked it with the service's credentials: the work queue is empty.
    states = await _stream_states(server.url, store, topology)
    delivered, ack_floor, pending = states["TAX_AGENT_JOBS"]["consumers"]["normalize-map-worker"]  # type: ignore[index]
    assert delivered == ack_floor == 1 and pending == 0
    assert states["TAX_AGENT_JOBS"]["messages"] == 0


async def test_the_bus_takes_its_credentials_from_the_environment_and_checks_at_start(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only NATS_URL, NATS_USER, NATS_PASSWORD and NATS_JS_API_PREFIX set (as a pod's
    Secret gives them): the
    bus derives its inbox prefix, runs the default start-up check (error) within its
    permissions, publishes, consumes and acks; no secret reaches a log line."""
    from bus_runtime import create_event_bus

    server, topology, store = provisioned
    got: asyncio.Queue[EventPayload] = asyncio.Queue()

    async def handle(topic: str, payload: EventPayload) -> None:
        got.put_nowait(payload)

    def env_of(service: str) -> dict[str, str]:
        values = read_env_file(store.env_path(service))
        return {k: values[k] for k in ("NATS_USER", "NATS_PASSWORD", "NATS_JS_API_PREFIX")}

    caplog.set_level("DEBUG")
    secrets: list[str] = []
    buses = []
    for service in ("svc-normalize-map", "svc-extract"):
        env = env_of(service)
        secrets.append(env["NATS_PASSWORD"])
        monkeypatch.setenv("NATS_URL", server.url)
        monkeypatch.delenv("NATS_INBOX_PREFIX", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        bus = create_event_bus("nats", topology=topology, service=service)
        if service == "svc-normalize-map":
            await bus.subscribe("normalize.requested", handle)
        await bus.start()  # startup_check="error": reads only what its permissions allow
        buses.append(bus)
    worker, publisher = buses
    sent = EventPayload(data={"document_id": "d-2"}, actor="svc-extract", tenant_id="t-1")
    try:
        assert await publisher.publish("normalize.requested", sent) is True
        received = await asyncio.wait_for(got.get(), 10)
        assert received.event_id == sent.event_id
    finally:
        await publisher.stop()
        await worker.stop()
    states = await _stream_states(server.url, store, topology)
    delivered, ack_floor, pending = states["TAX_AGENT_JOBS"]["consumers"]["normalize-map-worker"]  # type: ignore[index]
    assert delivered == ack_floor == 1 and pending == 0
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "bus of svc-extract started" in logged
    assert "Permissions Violation" not in logged and "permission" not in logged.lower()
    for secret in secrets:
        assert secret not in logged


def _bus_with_credentials_of(
    server: NatsServer,
    topology: Topology,
    store: CredentialStore,
    service: str,
    other: str,
    **kw: object,
):  # type: ignore[no-untyped-def]
    """The bus of `service` connecting with `other`'s credentials: the topology says yes,
    the server's permissions say no (a stale Secret, a copy-pasted env file)."""
    from bus_runtime import create_event_bus
    from bus_runtime.security import service_connect_options

    connection = service_connect_options(
        other, env={}, env_file=store.env_path(other), servers=(server.url,)
    )
    return create_event_bus("nats", topology=topology, service=service, connection=connection, **kw)


@pytest.mark.parametrize("many", [False, True], ids=["publish", "publish_many"])
async def test_a_publish_the_server_refuses_raises_naming_subject_and_service(
    provisioned: tuple[NatsServer, Topology, CredentialStore], many: bool
) -> None:
    server, topology, store = provisioned
    # svc-extract publishes normalize.requested; svc-ocr may not
    bus = _bus_with_credentials_of(
        server,
        topology,
        store,
        "svc-extract",
        "svc-ocr",
        startup_check="off",
        publish_retry_for=60.0,
    )
    await bus.start()
    try:
        payloads = [
            EventPayload(data={"document_id": f"d-{i}"}, actor="svc-extract", tenant_id="t")
            for i in range(300 if many else 1)
        ]
        started = asyncio.get_running_loop().time()
        with pytest.raises(PermissionViolationError) as info:
            if many:  # one error for the whole call, however many were refused
                await asyncio.wait_for(bus.publish_many("normalize.requested", payloads), 30)
            else:
                await bus.publish("normalize.requested", payloads[0])
        # the server's answer, not the 60 s of retries
        assert asyncio.get_running_loop().time() - started < 30
    finally:
        await bus.stop()
    err = info.value
    subject = topology.topic("normalize.requested").subject
    assert err.operation == "publish" and err.subject == subject
    assert subject in str(err) and "svc-extract" in str(err)
    # nothing was stored
    states = await _stream_states(server.url, store, topology)
    assert states["TAX_AGENT_JOBS"]["messages"] == 0


async def test_a_start_up_check_the_server_refuses_is_a_permission_error(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    server, topology, store = provisioned
    bus = _bus_with_credentials_of(server, topology, store, "svc-normalize-map", "svc-ocr")

    async def handle(topic: str, payload: EventPayload) -> None:
        raise AssertionError("nothing may be delivered")

    await bus.subscribe("normalize.requested", handle)
    with pytest.raises(PermissionViolationError) as info:
        await bus.start()
    assert "$NATSTOPO.API." in info.value.subject and "svc-normalize-map" in str(info.value)
    await bus.stop()  # a bus that never started stops quietly


async def test_a_fetch_the_server_refuses_is_logged_once_naming_the_consumer(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, topology, store = provisioned
    bus = _bus_with_credentials_of(
        server,
        topology,
        store,
        "svc-normalize-map",
        "svc-ocr",
        startup_check="off",
        pull_expires=0.2,
    )
    refused = asyncio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "CONSUMER.MSG.NEXT" in record.getMessage():
                refused.set()

    async def handle(topic: str, payload: EventPayload) -> None:
        raise AssertionError("nothing may be delivered")

    caplog.set_level(logging.DEBUG, logger="bus_runtime")  # the repeats are at debug
    seen = Seen()
    logging.getLogger("bus_runtime").addHandler(seen)
    try:
        await bus.subscribe("normalize.requested", handle)
        await bus.start()
        await asyncio.wait_for(refused.wait(), 10)
        # a few more refused pulls (one per pull_expires + 2 s at most): still one error line
        for _ in range(2):
            refused.clear()
            await asyncio.wait_for(refused.wait(), 10)
    finally:
        logging.getLogger("bus_runtime").removeHandler(seen)
        await bus.stop()
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and "CONSUMER.MSG.NEXT" in r.getMessage()
    ]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "$NATSTOPO.API.CONSUMER.MSG.NEXT.TAX_AGENT_JOBS.normalize-map-worker" in message
    assert "svc-normalize-map" in message


async def test_wrong_credentials_are_one_connect_error_without_the_secret(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    from bus_runtime import create_event_bus

    server, topology, _store = provisioned
    bus = create_event_bus(
        "nats",
        servers=server.url,
        topology=topology,
        service="svc-ocr",
        user="svc-ocr",
        password="not-the-password-4711",
        start_timeout=3.0,
    )
    with pytest.raises(ConnectError) as info:
        await bus.start()
    assert "authorization failed" in str(info.value)
    assert "not-the-password-4711" not in str(info.value)


@pytest.mark.parametrize("binary", SERVERS, ids=_ids(SERVERS))
async def test_in_a_jetstream_domain_the_admin_uses_its_api_and_the_bus_its_imports(
    binary: ServerBinary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers in JetStream domain `hub`, authorization rendered for it: the admin's env
    file carries NATS_JS_DOMAIN and provisions through `$JS.hub.API`; a service's carries
    its imports' prefix, and the bus checks, fetches and acks through it."""
    from bus_runtime import create_event_bus
    from bus_runtime.jetstream.api import JetStreamApi

    topology, store = render(tmp_path / "auth", domain="hub")
    # the admin manages the domain's API; a service has JetStream imported into its account
    assert read_env_file(store.env_path(ADMIN))["NATS_JS_DOMAIN"] == "hub"
    service_env = read_env_file(store.env_path("svc-normalize-map"))
    assert "NATS_JS_DOMAIN" not in service_env
    assert service_env["NATS_JS_API_PREFIX"] == "$NATSTOPO.API"
    with running_server(
        binary, includes={"auth.conf": store.auth_path.read_text()}, js_domain="hub"
    ) as server:
        admin = await connect_as(server.url, store, ADMIN)
        api = JetStreamApi(admin.nc, "$JS.hub.API")
        await apply_plan(api, await plan_changes(api, topology))
        await admin.nc.close()
        got: asyncio.Queue[EventPayload] = asyncio.Queue()

        async def handle(topic: str, payload: EventPayload) -> None:
            got.put_nowait(payload)

        def bus(service: str, **env: str):  # type: ignore[no-untyped-def]
            values = {**read_env_file(store.env_path(service)), "NATS_URL": server.url, **env}
            for k in ("NATS_USER", "NATS_PASSWORD", "NATS_URL", "NATS_JS_API_PREFIX"):
                monkeypatch.setenv(k, values[k])
            return create_event_bus("nats", topology=topology, service=service)

        worker = bus("svc-normalize-map")
        assert worker.api_prefix == "$NATSTOPO.API"
        await worker.subscribe("normalize.requested", handle)
        await worker.start()
        publisher = bus("svc-extract")
        await publisher.start()
        sent = EventPayload(data={"document_id": "d-9"}, actor="svc-extract", tenant_id="t")
        try:
            assert await publisher.publish("normalize.requested", sent) is True
            assert (await asyncio.wait_for(got.get(), 10)).event_id == sent.event_id
        finally:
            await publisher.stop()
            await worker.stop()


async def test_every_services_bus_starts_with_its_env_file_and_the_default_check(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """The start-up check of each service reads only what its account imports (a
    publish-only service once read the dead-letter stream of the streams it publishes to,
    which it has no right to)."""
    from bus_runtime import create_event_bus

    server, topology, store = provisioned

    async def handle(topic: str, payload: EventPayload) -> None:
        raise AssertionError("nothing is published here")

    for svc in topology.services:
        connection = service_connect_options(
            svc.name, env={}, env_file=store.env_path(svc.name), servers=(server.url,)
        )
        bus = create_event_bus("nats", topology=topology, service=svc.name, connection=connection)
        for c in topology.consumers_of(svc.name):
            for t in c.topics:
                await bus.subscribe(t, handle)
        await bus.start()  # startup_check="error"
        await bus.stop()


async def test_a_startup_check_of_own_consumers_works_with_service_credentials(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """The scoped plan the bus can run under these permissions: its own consumers only."""
    server, topology, store = provisioned
    me = await connect_as(server.url, store, "ui-review")
    own = [(c.stream, c.name) for c in topology.consumers_of("ui-review")]
    plan = await plan_changes(JetStreamApi(me.nc, me.api), topology, only_consumers=own)
    assert not plan.has_changes, plan.to_text()
    assert me.errors.empty()
    await me.nc.close()


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("binary", SERVERS, ids=_ids(SERVERS))
async def test_a_cluster_with_the_same_authorization_forms_and_enforces_it(
    binary, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    topology, store = render(tmp_path / "auth", env=None)  # the base: 3 replicas
    with running_cluster(binary, includes={"auth.conf": store.auth_path.read_text()}) as cluster:
        url = cluster.nodes[0].url
        await provision(cluster.urls, store, topology)
        # A publisher on one node, the worker on another: routes carry the account's traffic.
        ingestion = await connect_as(cluster.nodes[1].url, store, "svc-ingestion")
        ack = await ingestion.js().publish("jobs.ocr.requested", b"{}")
        assert ack.stream == "TAX_AGENT_JOBS"
        await ingestion.refused_publish("jobs.extract.requested")
        await ingestion.nc.close()
        ocr = await connect_as(cluster.nodes[2].url, store, "svc-ocr")
        sub = await ocr.js().pull_subscribe_bind("ocr-worker", "TAX_AGENT_JOBS")
        (msg,) = await sub.fetch(1, timeout=10)
        await msg.ack_sync()
        await ocr.refused_publish("$JS.API.CONSUMER.MSG.NEXT.TAX_AGENT_JOBS.extract-worker")
        await ocr.refused_subscribe("_INBOX.svc-extract.>")
        await ocr.nc.close()
        admin = await connect_as(url, store, ADMIN)
        info = await admin.js().stream_info("TAX_AGENT_JOBS")
        assert info.config.num_replicas == 3 and info.state.messages == 0
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        await admin.nc.close()
        with pytest.raises(ConnectError, match="authorization failed"):
            await connect(ConnectOptions(servers=tuple(cluster.urls)))


async def test_the_cli_provisions_with_the_admin_env_file(
    secured: tuple[NatsServer, Topology, CredentialStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bus_runtime.cli.main import main

    server, _topology, store = secured
    for key, value in read_env_file(store.env_path(ADMIN)).items():
        monkeypatch.setenv(key, value)  # NATS_USER, NATS_PASSWORD, NATS_INBOX_PREFIX
    argv = ["apply", str(SHIPPED), "--env", "dev", "--server", server.url]
    assert await asyncio.to_thread(main, argv) == 0
    assert await asyncio.to_thread(main, ["drift", *argv[1:]]) == 0


async def test_the_dlq_operator_lists_replays_and_purges_dead_letters_and_nothing_else(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`natstopo dlq` with the dlq-operator's env file: list, replay to the consumer that
    failed, purge; and the server refuses it everything else."""
    from bus_runtime.bus.delivery import DLQ_CONSUMER, DLQ_SEQUENCE, DLQ_STREAM, DLQ_SUBJECT
    from bus_runtime.cli.main import main

    server, topology, store = provisioned
    # a dead letter of svc-ocr's ocr-worker, written as its bus writes one
    ocr = await connect_as(server.url, store, "svc-ocr")
    headers = {
        DLQ_STREAM: "TAX_AGENT_JOBS",
        DLQ_SUBJECT: "jobs.ocr.requested",
        DLQ_SEQUENCE: "7",
        DLQ_CONSUMER: "ocr-worker",
    }
    for body in (b'{"n": 1}', b'{"n": 2}'):
        await ocr.js().publish("dlq.TAX_AGENT_JOBS.jobs.ocr.requested", body, headers=headers)
    for key, value in read_env_file(store.env_path(DLQ_OPERATOR)).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()

    def cli(*argv: str) -> tuple[int, str]:
        code = main(["dlq", *argv, str(SHIPPED), "--env", "dev", "--server", server.url])
        out = capsys.readouterr()
        return code, out.out + out.err

    code, text = await asyncio.to_thread(cli, "list", "--format", "json")
    assert code == 0, text
    listed = json.loads(text)
    assert [d["consumer"] for d in listed] == ["ocr-worker", "ocr-worker"], listed
    code, text = await asyncio.to_thread(cli, "replay", "--seq", str(listed[0]["dlq_seq"]))
    assert code == 0, text
    # the replayed job is back on its subject, for ocr-worker
    sub = await ocr.js().pull_subscribe_bind("ocr-worker", "TAX_AGENT_JOBS")
    (msg,) = await sub.fetch(1, timeout=10)
    assert msg.data == b'{"n": 1}' and msg.headers["Natstopo-Replay-For"] == "ocr-worker"
    await msg.ack_sync()
    await ocr.nc.close()
    code, text = await asyncio.to_thread(cli, "purge", "--all")
    assert code == 0, text
    states = await _stream_states(server.url, store, topology)
    assert states["TAX_AGENT_DLQ"]["messages"] == 0
    operator = await connect_as(server.url, store, DLQ_OPERATOR)
    assert operator.api == "$NATSTOPO.API"
    for subject in (
        "$JS.API.STREAM.DELETE.TAX_AGENT_DLQ",
        "$JS.API.STREAM.UPDATE.TAX_AGENT_DLQ",
        "$JS.API.STREAM.MSG.GET.TAX_AGENT_EVENTS",  # the data itself
        "$JS.API.DIRECT.GET.TAX_AGENT_EVENTS",
        "$JS.API.STREAM.PURGE.TAX_AGENT_EVENTS",
        "$JS.API.CONSUMER.MSG.NEXT.TAX_AGENT_JOBS.ocr-worker",
        "$JS.API.CONSUMER.CREATE.TAX_AGENT_EVENTS.steal",
        "dlq.TAX_AGENT_JOBS.jobs.ocr.requested",  # forging a dead letter
    ):
        await operator.refused_api(subject)
    await operator.refused_subscribe("_INBOX.>")
    await operator.nc.close()
    # what it read stayed in its own account: the admin, subscribed to every inbox of the
    # JetStream account, sees none of a second listing
    admin = await connect_as(server.url, store, ADMIN)
    seen = await collect(admin.nc, "_INBOX.>")
    await admin.nc.flush()
    ocr = await connect_as(server.url, store, "svc-ocr")
    await ocr.js().publish("dlq.TAX_AGENT_JOBS.jobs.ocr.requested", b'{"n": 3}', headers=headers)
    await ocr.nc.close()
    code, text = await asyncio.to_thread(cli, "list", "--format", "json")
    assert code == 0 and len(json.loads(text)) == 1, text
    await admin.nc.flush()
    assert seen.empty(), seen.get_nowait()
    await admin.nc.close()


async def test_the_cli_with_a_service_env_file_says_the_server_refused_it(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`natstopo plan` run with a service's credentials: the server's refusal, named at the
    first timeout, not "no answer within 10s (3 attempts)"."""
    from bus_runtime.cli.main import main

    server, _topology, store = provisioned
    for key, value in read_env_file(store.env_path("svc-ocr")).items():
        monkeypatch.setenv(key, value)
    argv = ["plan", str(SHIPPED), "--env", "dev", "--server", server.url]
    code = await asyncio.to_thread(main, argv)
    err = capsys.readouterr().err
    assert code != 0
    assert "refused by the server's permissions" in err and "admin" in err, err
    assert "3 attempts" not in err and "Traceback" not in err


# --------------------------------------------------------------------------- replies
# A service chooses the reply subject of what it publishes, and a reply subject is not a
# permission. With the services in JetStream's own account the server's answer to an ack
# went to that reply inside the account, where no permission applies: an ack with reply
# `$JS.API.STREAM.DELETE.<s>` deleted the stream (2.10 .. 2.15), a publish with reply
# `$JS.API.STREAM.PURGE.<s>` purged it (2.10, 2.11). Now each answer is delivered in the
# service's own account: an observer user added to that account (not rendered by
# natstopo) receives it there, which is where the server put it; then the admin reads
# that nothing changed.

ATTACKER = "svc-firm-connectors"
OBSERVER = ("observer", "observer-password")


def _with_observer(auth: str, account: str) -> str:
    """`auth.conf` with an unrestricted user (plain password: a test) in `account`."""
    head = f'  "{account}": {{\n    users: [\n'
    assert head in auth, account
    user, password = OBSERVER
    return auth.replace(head, f'{head}      {{ user: "{user}", password: "{password}" }}\n')


async def _fetch_one(me: Identity, stream: str, consumer: str) -> Msg:
    sub = await me.js().pull_subscribe_bind(consumer, stream)
    (msg,) = await sub.fetch(1, timeout=10)
    return msg


async def _attack(
    url: str | list[str], store: CredentialStore, topology: Topology, attack: str
) -> tuple[str, Msg, dict[str, dict[str, object]]]:
    """Run `attack` as ATTACKER; return the reply named, the observed answer and the
    state before (with the attacker's own legitimate publish and fetch in it)."""
    me = await connect_as(url, store, ATTACKER)
    observer = await nats.connect(
        servers=[url] if isinstance(url, str) else url, user=OBSERVER[0], password=OBSERVER[1]
    )
    try:
        answers = await collect(observer, ">")
        await observer.flush()
        # what the attacker legitimately has: a job for its own consumer
        ack = await me.js().publish("jobs.firm.sync_requested", b"{}")
        assert ack.stream == "TAX_AGENT_JOBS"
        msg = await _fetch_one(me, "TAX_AGENT_JOBS", "firm-sync-worker")
        await me.js().publish("tax.document.uploaded", b"{}")  # something to purge
        while not answers.empty():  # its own traffic, seen by the observer
            answers.get_nowait()
        before = await _stream_states(url, store, topology)
        target = {
            "ack-reply-deletes-a-stream": "$JS.API.STREAM.DELETE.TAX_AGENT_EVENTS",
            "ack-reply-deletes-a-consumer": "$JS.API.CONSUMER.DELETE.TAX_AGENT_EVENTS.audit-trail",
            "ack-reply-purges-a-stream": "$JS.API.STREAM.PURGE.TAX_AGENT_EVENTS",
            "ack-reply-into-another-services-topic": "jobs.hmrc.submission_requested",
            "publish-reply-purges-a-stream": "$JS.API.STREAM.PURGE.TAX_AGENT_EVENTS",
            "publish-reply-deletes-a-stream": "$JS.API.STREAM.DELETE.TAX_AGENT_EVENTS",
        }[attack]
        if attack.startswith("ack-"):
            await me.nc.publish(msg.reply, b"+ACK", reply=target)
        else:
            await me.nc.publish("tax.document.uploaded", b"{}", reply=target)
        while True:  # the server's answer, delivered in the attacker's own account
            answer = await asyncio.wait_for(answers.get(), VIOLATION_WAIT)
            if answer.subject == target:
                break
        return target, answer, before
    finally:
        await observer.close()
        await me.nc.close()


REPLY_ATTACKS = [
    "ack-reply-deletes-a-stream",
    "ack-reply-deletes-a-consumer",
    "ack-reply-purges-a-stream",
    "ack-reply-into-another-services-topic",
    "publish-reply-purges-a-stream",
    "publish-reply-deletes-a-stream",
]


@pytest.mark.parametrize("binary", _ALL, ids=_ids(_ALL))
@pytest.mark.parametrize("attack", REPLY_ATTACKS)
async def test_a_reply_a_service_names_is_answered_in_its_own_account(
    binary: ServerBinary, attack: str, tmp_path: Path
) -> None:
    """Every supported server: the answer lands in the attacker's account, nothing changes."""
    topology, store = render(tmp_path / "auth")
    account = service_account(topology.name, ATTACKER)
    auth = _with_observer(store.auth_path.read_text(), account)
    with running_server(binary, includes={"auth.conf": auth}) as server:
        await provision(server.url, store, topology)
        target, answer, before = await _attack(server.url, store, topology, attack)
        if attack.startswith("publish-"):
            assert json.loads(answer.data)["stream"] == "TAX_AGENT_EVENTS"  # its PubAck
        after = await _stream_states(server.url, store, topology)
        if attack.startswith("publish-"):  # its own publish was stored, nothing else
            events = after["TAX_AGENT_EVENTS"]
            assert events["messages"] == before["TAX_AGENT_EVENTS"]["messages"] + 1  # type: ignore[operator]
            before["TAX_AGENT_EVENTS"]["messages"] = events["messages"]
            before["TAX_AGENT_EVENTS"]["last_seq"] = events["last_seq"]
            # its consumers have it pending (one more, or as many, by their filters)
            for name, (d, a, pending) in before["TAX_AGENT_EVENTS"]["consumers"].items():  # type: ignore[attr-defined]
                now = events["consumers"][name]  # type: ignore[index]
                assert now[:2] == (d, a) and now[2] in (pending, pending + 1), (name, now)
                before["TAX_AGENT_EVENTS"]["consumers"][name] = now  # type: ignore[index]
        else:  # its ack took effect: the job is gone from the work queue
            assert after["TAX_AGENT_JOBS"]["messages"] == before["TAX_AGENT_JOBS"]["messages"] - 1  # type: ignore[operator]
            before["TAX_AGENT_JOBS"] = after["TAX_AGENT_JOBS"]
        assert after == before, target


@pytest.mark.parametrize("binary", SERVERS, ids=_ids(SERVERS))
async def test_a_pull_outliving_the_imports_response_threshold_loses_its_late_messages(
    binary: ServerBinary,
) -> None:
    """Why the bus bounds `pull_expires` (60 s, under the server's default threshold of 2
    minutes): with a threshold of 1 s, a message the server delivers to a pull after it is
    counted as delivered but never reaches the importing account; it waits out its ack
    wait. (natstopo renders no threshold: the default.)"""
    conf = """
accounts {
  JS: { jetstream: enabled, users: [{user: adm, password: adm}],
    exports: [ { service: "$JS.API.CONSUMER.MSG.NEXT.S.c", accounts: [A], response_type: stream,
                 response_threshold: "1s" } ] }
  A: { users: [{user: a, password: a}],
    imports: [ { service: { account: JS, subject: "$JS.API.CONSUMER.MSG.NEXT.S.c" },
                 to: "$NATSTOPO.API.CONSUMER.MSG.NEXT.S.c" } ] }
}
"""
    with running_server(binary, includes={"auth.conf": conf}) as server:
        adm = await nats.connect(server.url, user="adm", password="adm")
        a = await nats.connect(server.url, user="a", password="a")
        try:
            js = adm.jetstream()
            await js.add_stream(name="S", subjects=["s.>"])
            await js.add_consumer("S", durable_name="c", ack_policy="explicit")
            inbox = a.new_inbox()
            got = await collect(a, inbox)
            pull = {"batch": 2, "expires": 10_000_000_000}
            await a.publish(
                "$NATSTOPO.API.CONSUMER.MSG.NEXT.S.c", json.dumps(pull).encode(), reply=inbox
            )
            await a.flush()
            await js.publish("s.1", b"early")
            assert (await asyncio.wait_for(got.get(), 5)).data == b"early"
            # Time past the threshold is what is tested here (the server sweeps response
            # mappings on a timer), so this waits for time itself.
            await asyncio.sleep(2.5)
            await js.publish("s.2", b"late")
            # the server delivered it (to the expired mapping) ...
            async with asyncio.timeout(5):
                while (await js.consumer_info("S", "c")).delivered.stream_seq < 2:  # noqa: ASYNC110 - the server's state, polled until it shows the delivery
                    await asyncio.sleep(0.05)
            # ... and the importer's connection, round-tripped after that, never got it
            await a.flush()
            assert got.empty(), got.get_nowait()
            assert (await js.consumer_info("S", "c")).num_ack_pending == 2
        finally:
            await a.close()
            await adm.close()


async def test_the_reply_mappings_of_unanswered_acks_are_dropped_within_seconds(
    provisioned: tuple[NatsServer, Topology, CredentialStore],
) -> None:
    """Every request through an import with a reply gets a reply mapping in the JetStream
    account; an ack of a message the consumer does not hold is never answered. With the
    server's default threshold a service could pin 200,000 of them (150 MB) for minutes;
    the ack exports' threshold (5 s) drops them within seconds."""
    import urllib.request

    server, _topology, store = provisioned

    def mappings() -> int:
        url = f"http://127.0.0.1:{server.http_port}/accountz?acc=tax-agent"
        with urllib.request.urlopen(url) as r:
            detail = json.loads(r.read()).get("account_detail") or {}
        return len(detail.get("responses") or {})

    me = await connect_as(server.url, store, "svc-ocr")
    try:  # connected throughout: the server drops a client's mappings when it leaves
        for i in range(2_000):
            subject = f"$JS.ACK.TAX_AGENT_JOBS.ocr-worker.1.{i + 1000}.{i + 1000}.0.0"
            await me.nc.publish(subject, b"", reply=f"{me.nc.new_inbox()}")
        await me.nc.flush()
        assert me.errors.empty()
        async with asyncio.timeout(10):  # held while unanswered (made as they are processed) ...
            while await asyncio.to_thread(mappings) < 1_000:  # noqa: ASYNC110 - the server's count
                await asyncio.sleep(0.1)
        async with asyncio.timeout(30):  # ... and dropped after the threshold (and a sweep)
            while await asyncio.to_thread(mappings):  # noqa: ASYNC110 - the server's count, polled until it is 0
                await asyncio.sleep(0.5)
        assert me.nc.is_connected
    finally:
        await me.nc.close()


def _accounts_conf(importers: list[str]) -> str:
    exports = ", ".join(f'"{a}"' for a in importers)
    accounts = "".join(
        f"""  {a}: {{ users: [{{user: {a.lower()}, password: {a.lower()}}}],
    imports: [ {{ service: {{ account: JS, subject: "orders.new" }} }} ] }}
"""
        for a in importers
    )
    return f"""
accounts {{
  JS: {{ jetstream: enabled, users: [{{user: adm, password: adm}}],
    exports: [ {{ service: "orders.new", accounts: [{exports}] }} ] }}
{accounts}}}
"""


@pytest.mark.parametrize("binary", SERVERS, ids=_ids(SERVERS))
async def test_an_account_added_by_a_reload_has_no_working_import_until_a_restart(
    binary: ServerBinary,
) -> None:
    """Why a new account rolls the servers (the pod template's accounts digest; `make
    local` restarts): after a reload that adds account B, B's import of a stream's subject
    finds no responder, while A's still works; after a restart B's works. When a server
    fixes this, this test fails: then a reload would do."""
    with running_server(binary, includes={"auth.conf": _accounts_conf(["A"])}) as server:
        adm = await nats.connect(server.url, user="adm", password="adm")
        await adm.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
        await adm.close()
        server.write_include("auth.conf", _accounts_conf(["A", "B"]))
        server.reload()

        async def publish_as(user: str) -> bytes:
            nc = await nats.connect(server.url, user=user, password=user)
            try:
                return (await nc.request("orders.new", b"{}", timeout=5)).data
            finally:
                await nc.close()

        assert b'"stream":"ORDERS"' in await publish_as("a")
        with pytest.raises(nats.errors.NoRespondersError):
            await publish_as("b")
        server.restart()
        assert b'"stream":"ORDERS"' in await publish_as("b")


@pytest.mark.cluster
@pytest.mark.slow
async def test_a_reply_a_service_names_is_answered_in_its_own_account_in_a_cluster(
    tmp_path: Path,
) -> None:
    assert NEWEST is not None
    topology, store = render(tmp_path / "auth", env=None)  # the base: 3 replicas
    auth = _with_observer(store.auth_path.read_text(), service_account(topology.name, ATTACKER))
    with running_cluster(NEWEST, includes={"auth.conf": auth}) as cluster:
        await provision(cluster.urls, store, topology)
        # the attacker on another node than the streams' leaders, for some of them at least
        _target, _answer, before = await _attack(
            cluster.nodes[2].url, store, topology, "ack-reply-deletes-a-stream"
        )
        after = await _stream_states(cluster.urls, store, topology)
        before["TAX_AGENT_JOBS"] = after["TAX_AGENT_JOBS"]
        assert after == before

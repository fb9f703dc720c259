"""The live reconciler against real servers: plan, apply, drift, replace, managed scope, import."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness import NatsCluster, NatsServer, ServerBinary, available_servers, running_server
from nats.aio.client import Client
from reconcile_helpers import (
    api,
    connect,
    consumer_config,
    edit_consumer,
    edit_stream,
    shipped,
    shipped_copy,
    shop,
    shop_edit,
    stream_config,
    topology_from_text,
)

from bus_runtime._errors import ChangesRefusedError, ReconcileError
from bus_runtime.reconcile.apply import apply_plan
from bus_runtime.reconcile.importer import import_topology
from bus_runtime.reconcile.marks import MARK_FINGERPRINT, MARK_TOPOLOGY
from bus_runtime.reconcile.plan import Change, Plan
from bus_runtime.reconcile.planner import plan_changes
from bus_runtime.topology.loader import load_topology, parse_topology
from bus_runtime.topology.model import Topology

pytestmark = pytest.mark.nats

ALL_SERVERS = available_servers()  # the allow_batched test runs on every version


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def nc_each(nats_server_each: NatsServer) -> AsyncIterator[Client]:
    client = await connect(nats_server_each.url)
    yield client
    await client.close()


def change(plan: Plan, name: str, kind: str = "stream") -> Change:
    for c in plan.changes:
        if c.name == name and c.kind == kind:
            return c
    raise AssertionError(f"{kind} {name} not in plan:\n{plan.to_text()}")


def field_names(c: Change) -> set[str]:
    return {f.field for f in c.fields}


async def converge(nc: Client, topology: Topology, **kw: Any) -> Plan:
    """Apply and check that a second plan is empty."""
    plan = await plan_changes(nc, topology)
    await apply_plan(nc, plan, **kw)
    after = await plan_changes(nc, topology)
    assert not after.has_changes, after.to_text()
    return after


# --------------------------------------------------------------------------- shipped topology


async def test_apply_shipped_then_drift_edit_restore(nc_each: Client) -> None:
    nc = nc_each
    topology = shipped("local")
    plan = await plan_changes(nc, topology)
    assert plan.has_changes and not plan.refused_without_flag
    assert [c.action for c in plan.changes] == ["create"] * 20
    # Streams before their consumers, in file order.
    assert plan.changes[0].name == "TAX_AGENT_JOBS"
    assert plan.changes[1].name == "TAX_AGENT_JOBS/ocr-worker"
    lines: list[str] = []
    result = await apply_plan(nc, plan, progress=lines.append)
    assert len(result.steps) == 20
    # Streams run side by side (16 at once); each stream still comes before its consumers.
    assert lines[0].startswith("+ stream TAX_AGENT_")
    first = {line.split()[2] for line in lines if line.split()[1] == "stream"}
    assert first == {"TAX_AGENT_JOBS", "TAX_AGENT_EVENTS", "TAX_AGENT_DLQ"}
    assert not (await plan_changes(nc, topology)).has_changes

    cfg = await stream_config(nc, "TAX_AGENT_EVENTS")
    assert cfg["metadata"][MARK_TOPOLOGY] == "tax-agent"
    assert len(cfg["metadata"][MARK_FINGERPRINT]) == 16

    # Out of band: a smaller stream and a consumer allowed more deliveries.
    await edit_stream(nc, "TAX_AGENT_EVENTS", max_bytes=512 * 1024**2)
    await edit_consumer(nc, "TAX_AGENT_EVENTS", "audit-trail", max_deliver=20)
    drift = await plan_changes(nc, topology)
    assert drift.has_changes
    s = change(drift, "TAX_AGENT_EVENTS")
    assert s.action == "update" and field_names(s) == {"max_bytes"}
    assert "max_bytes: 512MiB -> 1GiB" in drift.to_text(drift=True)
    c = change(drift, "TAX_AGENT_EVENTS/audit-trail", "consumer")
    assert c.action == "update" and field_names(c) == {"max_deliver"}
    assert not drift.refused_without_flag  # raising a limit back is in place
    await apply_plan(nc, drift)
    assert not (await plan_changes(nc, topology)).has_changes
    assert (await consumer_config(nc, "TAX_AGENT_EVENTS", "audit-trail"))["max_deliver"] == 10


async def test_apply_with_concurrency(nc: Client) -> None:
    from generate_topology import generate

    topology = topology_from_text(generate(12, 2, 2), "generated.yaml")
    lines: list[str] = []
    plan = await plan_changes(nc, topology)
    await apply_plan(nc, plan, progress=lines.append, concurrency=8)
    assert len(lines) == 36
    # Each stream still comes before its consumers.
    order = [line.split()[1:3] for line in lines]  # [kind, name]
    for kind, name in order:
        if kind == "consumer":
            stream = name.split("/")[0]
            assert order.index(["stream", stream]) < order.index([kind, name])
    assert not (await plan_changes(nc, topology)).has_changes


async def test_second_apply_is_a_no_op(nc: Client) -> None:
    topology = shipped("local")
    await converge(nc, topology)
    plan = await plan_changes(nc, topology)
    result = await apply_plan(nc, plan)
    assert not result.changed
    assert plan.to_text().startswith("No changes")


@pytest.mark.cluster
@pytest.mark.slow
async def test_cluster_replicas_3(nats_cluster_each: NatsCluster, tmp_path: Any) -> None:
    topology = load_topology(shipped_copy(tmp_path), "ci-cluster")
    assert {s.replicas for s in topology.streams} == {3}
    nc = await connect(nats_cluster_each.url)
    try:
        await converge(nc, topology)
        cfg = await stream_config(nc, "TAX_AGENT_JOBS")
        assert cfg["num_replicas"] == 3
        await edit_stream(nc, "TAX_AGENT_JOBS", description="edited by hand")
        await edit_consumer(nc, "TAX_AGENT_JOBS", "ocr-worker", max_ack_pending=7)
        drift = await plan_changes(nc, topology)
        assert field_names(change(drift, "TAX_AGENT_JOBS")) == {"description"}
        assert field_names(change(drift, "TAX_AGENT_JOBS/ocr-worker", "consumer")) == {
            "max_ack_pending"
        }
        await apply_plan(nc, drift)
        assert not (await plan_changes(nc, topology)).has_changes
    finally:
        await nc.close()


# --------------------------------------------------------------------------- replace cases

REPLACE_CASES = {
    "storage": (("storage: file", "storage: memory"), "ORDERS", "stream", "storage"),
    "workqueue": (
        ("retention: limits", "retention: workqueue"),
        "ORDERS",
        "stream",
        "retention",
    ),
    "ack_policy": (
        ("        max_deliver: 5\n", "        max_deliver: 5\n        ack_policy: all\n"),
        "ORDERS/billing",
        "consumer",
        "ack_policy",
    ),
    "deliver_policy": (
        ("        max_deliver: 5\n", "        max_deliver: 5\n        deliver_policy: new\n"),
        "ORDERS/billing",
        "consumer",
        "deliver_policy",
    ),
}


@pytest.mark.parametrize("case", list(REPLACE_CASES))
async def test_replace_refused_without_flag_then_recreated(nc_each: Client, case: str) -> None:
    nc = nc_each
    edit, name, kind, fld = REPLACE_CASES[case]
    before = shop()
    if case == "workqueue":
        # Two consumers share `created`: not allowed on a work-queue stream.
        before = shop_edit(("topics: [created, paid]", "topics: [paid]"))
        after = shop_edit(("topics: [created, paid]", "topics: [paid]"), edit)
    else:
        after = shop_edit(edit)
    await converge(nc, before)
    await nc.jetstream().publish("orders.created", b"{}")

    plan = await plan_changes(nc, after)
    c = change(plan, name, kind)
    assert c.action == "replace", plan.to_text()
    if kind == "stream":
        assert c.note.startswith("holds 1 message,")  # what the replace loses
    assert [f.effect for f in c.fields if f.field == fld] == ["replace"]
    assert plan.refused_without_flag
    if kind == "stream":
        # Its consumers are recreated after it.
        assert change(plan, "ORDERS/billing", "consumer").action == "create"
        names = [x.name for x in plan.pending]
        assert names.index("ORDERS") < names.index("ORDERS/billing")
    with pytest.raises(ChangesRefusedError) as refused:
        await apply_plan(nc, plan)
    assert name in str(refused.value)
    # Nothing changed.
    assert (await plan_changes(nc, after)).has_changes
    assert (await stream_config(nc, "ORDERS"))["storage"] == "file"

    await apply_plan(nc, plan, allow_destructive=True)
    final = await plan_changes(nc, after)
    assert not final.has_changes, final.to_text()
    if kind == "stream":
        info = await api(nc, "STREAM.INFO.ORDERS")
        assert info["state"]["messages"] == 0  # recreated: the message is gone
        assert info["config"][fld] in ("memory", "workqueue")
    else:
        cfg = await consumer_config(nc, "ORDERS", "billing")
        assert cfg[fld] in ("all", "new")


async def test_lowered_limit_is_destructive_only_when_it_drops_stored_messages(nc: Client) -> None:
    await converge(nc, shop())
    # Nothing stored: lowering max_age deletes nothing (the plan reads the stream's state).
    lower = await plan_changes(nc, shop_edit(("max_age: 7d", "max_age: 1d")))
    (f,) = change(lower, "ORDERS").fields
    assert (f.field, f.effect) == ("max_age", "in_place")
    assert not lower.refused_without_flag

    js = nc.jetstream()
    for _ in range(10):
        await js.publish("orders.created", b"x" * 1000)  # about 10 KiB stored
    small = await plan_changes(nc, shop_edit(("max_bytes: 64MiB", "max_bytes: 4KiB")))
    c = change(small, "ORDERS")
    assert c.action == "update"
    (f,) = c.fields
    assert (f.field, f.effect) == ("max_bytes", "destructive")
    assert f.render().startswith(
        "max_bytes: 64MiB -> 4KiB (destructive: deletes the oldest messages above 4KiB: "
    )
    with pytest.raises(ChangesRefusedError):
        await apply_plan(nc, small)
    assert (await api(nc, "STREAM.INFO.ORDERS"))["state"]["messages"] == 10
    roomy = await plan_changes(nc, shop_edit(("max_bytes: 64MiB", "max_bytes: 1MiB")))
    (f,) = change(roomy, "ORDERS").fields
    assert (f.field, f.effect) == ("max_bytes", "in_place")  # everything stored fits
    await apply_plan(nc, roomy)
    assert (await api(nc, "STREAM.INFO.ORDERS"))["state"]["messages"] == 10

    higher = await plan_changes(nc, shop_edit(("max_age: 7d", "max_age: 30d")))
    effects = {f.field: f.effect for f in change(higher, "ORDERS").fields}
    assert effects == {"max_age": "in_place", "max_bytes": "in_place"}  # both raised
    assert not higher.refused_without_flag
    await apply_plan(nc, higher)
    assert (await stream_config(nc, "ORDERS"))["max_age"] == 30 * 86400 * 10**9


async def test_unset_fields_are_compared_with_the_servers_defaults(nc: Client) -> None:
    await converge(nc, shop())
    plan = await plan_changes(nc, shop_edit(("    max_bytes: 64MiB\n", "")))
    (f,) = change(plan, "ORDERS").fields
    assert f.render() == "max_bytes: 64MiB -> unlimited"
    await converge(nc, shop_edit(("    max_bytes: 64MiB\n", "")))
    assert (await stream_config(nc, "ORDERS"))["max_bytes"] == -1


async def test_adding_a_topic_updates_subjects_and_filters(nc: Client) -> None:
    await converge(nc, shop())
    after = shop_edit(
        ("      paid: {publishers: [svc-billing]}\n", "      paid: {}\n      refunded: {}\n"),
        ("topics: [created, paid]", "topics: [created, paid, refunded]"),
    )
    plan = await plan_changes(nc, after)
    assert field_names(change(plan, "ORDERS")) == {"subjects"}
    assert field_names(change(plan, "ORDERS/mail", "consumer")) == {"filter_subjects"}
    assert not plan.refused_without_flag
    await converge(nc, after)


# --------------------------------------------------------------------------- managed scope


async def test_unmanaged_stream_and_consumer_left_alone(nc: Client) -> None:
    foreign = {"name": "LEGACY", "subjects": ["legacy.>"], "max_age": 10**12}
    await api(nc, "STREAM.CREATE.LEGACY", foreign)
    topology = shop()
    await converge(nc, topology)
    # A consumer someone added by hand to a managed stream.
    await api(
        nc,
        "CONSUMER.CREATE.ORDERS.adhoc",
        {"stream_name": "ORDERS", "config": {"durable_name": "adhoc", "ack_policy": "explicit"}},
    )
    plan = await plan_changes(nc, topology)
    assert not plan.has_changes, plan.to_text()
    assert change(plan, "LEGACY").action == "unmanaged"
    assert change(plan, "ORDERS/adhoc", "consumer").action == "unmanaged"
    assert "? stream LEGACY: unmanaged, left alone (not created by natstopo)" in plan.to_text()
    await apply_plan(nc, plan, allow_destructive=True)
    assert (await stream_config(nc, "LEGACY"))["max_age"] == 10**12
    await consumer_config(nc, "ORDERS", "adhoc")

    # Removing JOBS and a consumer from the topology: managed, so deleted (destructive).
    smaller = topology_from_text(
        shop_edit_text(
            ("      mail:\n        service: svc-mail\n        topics: [created, paid]\n", ""),
        ).split("  JOBS:")[0]
    )
    plan = await plan_changes(nc, smaller)
    assert change(plan, "JOBS").action == "delete"
    assert change(plan, "ORDERS/mail", "consumer").action == "delete"
    assert change(plan, "LEGACY").action == "unmanaged"
    assert plan.refused_without_flag
    with pytest.raises(ChangesRefusedError):
        await apply_plan(nc, plan)
    await apply_plan(nc, plan, allow_destructive=True)
    names = (await api(nc, "STREAM.NAMES"))["streams"]
    assert sorted(names) == ["LEGACY", "ORDERS"]
    assert not (await plan_changes(nc, smaller)).has_changes


def shop_edit_text(*pairs: tuple[str, str]) -> str:
    from reconcile_helpers import SHOP

    text = SHOP
    for old, new in pairs:
        text = text.replace(old, new, 1)
    return text


async def test_declared_unmarked_stream_is_adopted(nc: Client) -> None:
    topology = shop()
    cfg = topology.stream("ORDERS").to_stream_config()
    await api(nc, "STREAM.CREATE.ORDERS", cfg)
    plan = await plan_changes(nc, topology)
    c = change(plan, "ORDERS")
    assert c.action == "update" and "adopted" in c.note
    assert field_names(c) == {f"metadata.{MARK_TOPOLOGY}"}
    await converge(nc, topology)


async def test_stream_of_another_topology_is_a_conflict(nc: Client) -> None:
    await converge(nc, shop())
    other = topology_from_text(shop_edit_text(("name: shop", "name: other-shop")))
    plan = await plan_changes(nc, other)
    assert change(plan, "ORDERS").conflict
    assert plan.has_changes  # the topology is not satisfied: drift reports it
    assert "owned by another topology" in plan.to_text()
    with pytest.raises(ReconcileError, match="managed by another topology"):
        await apply_plan(nc, plan, allow_destructive=True)


async def test_scoped_plan_reads_only_what_it_is_asked(nc: Client) -> None:
    topology = shop()
    await converge(nc, topology)
    await edit_consumer(nc, "ORDERS", "mail", max_deliver=9)
    await edit_consumer(nc, "ORDERS", "billing", max_ack_pending=3)
    plan = await plan_changes(nc, topology, only_consumers=[("ORDERS", "mail")])
    assert [c.name for c in plan.changes] == ["ORDERS", "ORDERS/mail"]
    assert field_names(change(plan, "ORDERS/mail", "consumer")) == {"max_deliver"}
    plan = await plan_changes(nc, topology, only_streams=["JOBS"])
    assert not plan.has_changes
    with pytest.raises(KeyError):
        await plan_changes(nc, topology, only_consumers=[("ORDERS", "nope")])


# --------------------------------------------------------------------------- versions

TTL = """\
version: 1
name: ttl
streams:
  CACHE:
    allow_msg_ttl: true
    topics: {entry: {}}
"""


async def test_newer_feature_is_a_plan_error_on_old_server(nc_each: Client) -> None:
    topology = topology_from_text(TTL)
    version = nc_each.connected_server_version
    if (version.major, version.minor) >= (2, 11):
        await converge(nc_each, topology)
        return
    plan = await plan_changes(nc_each, topology)
    assert plan.errors == [
        "shop.yaml:5:20: error: streams.CACHE.allow_msg_ttl: needs per-message TTL, which "
        "nats-server 2.11.0 brings; the server runs 2.10.26"
    ]
    with pytest.raises(ReconcileError, match="the plan has errors; nothing was changed"):
        await apply_plan(nc_each, plan)
    assert (await api(nc_each, "STREAM.NAMES"))["streams"] in (None, [])


BATCHED = """\
version: 1
name: batched
streams:
  INGEST:
    allow_batched: {value}
    topics: {{entry: {{}}}}
"""


async def _raw_create(nc: Client, config: dict[str, Any]) -> dict[str, Any]:
    """STREAM.CREATE and STREAM.DELETE with the raw API: the server's answer to `config`."""
    name = config["name"]
    msg = await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(config).encode(), timeout=10)
    answer: dict[str, Any] = json.loads(msg.data)
    if "error" not in answer:
        await api(nc, f"STREAM.DELETE.{name}")
    return answer


async def _stored_messages(nc: Client, name: str) -> int:
    return int((await api(nc, f"STREAM.INFO.{name}"))["state"]["messages"])


@pytest.mark.parametrize("binary", ALL_SERVERS, ids=[f"nats-{b.version_str}" for b in ALL_SERVERS])
async def test_allow_batched_on_every_version(binary: ServerBinary) -> None:
    """2.10 and 2.11 drop `allow_batched` silently and 2.12 refuses any stream config that
    has the key (seen here with the raw API); natstopo never sends `false` (the default),
    refuses to plan `true` on those servers, and on 2.14+ turns it on and off in place."""
    with running_server(binary) as server:
        nc = await connect(server.url)
        try:
            probe = {"name": "PROBE", "subjects": ["probe.>"], "allow_batched": True}
            answer = await _raw_create(nc, probe)
            knows = "error" not in answer and answer["config"].get("allow_batched") is True
            off = topology_from_text(BATCHED.format(value="false"))
            await converge(nc, off)  # also on 2.12, which refuses the key
            assert "allow_batched" not in await stream_config(nc, "INGEST")
            js = nc.jetstream()
            for i in range(3):
                await js.publish("INGEST.entry", str(i).encode())
            on = topology_from_text(BATCHED.format(value="true"))
            plan = await plan_changes(nc, on)
            if binary.version < (2, 14, 0):
                assert not knows, answer
                assert len(plan.errors) == 1, plan.errors
                assert "streams.INGEST.allow_batched: needs fast batch publish" in plan.errors[0]
                with pytest.raises(ReconcileError):
                    await apply_plan(nc, plan)
                assert "allow_batched" not in await stream_config(nc, "INGEST")
                return
            assert knows, answer
            assert not plan.errors, plan.errors
            c = change(plan, "INGEST")
            assert (c.action, [(f.field, f.effect) for f in c.fields]) == (
                "update",
                [("allow_batched", "in_place")],
            )
            await converge(nc, on)
            assert (await stream_config(nc, "INGEST"))["allow_batched"] is True
            await converge(nc, off)
            assert not (await stream_config(nc, "INGEST")).get("allow_batched")
            assert await _stored_messages(nc, "INGEST") == 3
        finally:
            await nc.close()


# --------------------------------------------------------------------------- import


async def test_import_round_trip_plan_is_empty(nc_each: Client, tmp_path: Any) -> None:
    nc = nc_each
    await converge(nc, shipped("local"))
    imported = await import_topology(nc, source="test")
    assert imported.name == "tax-agent"
    assert (imported.streams, imported.consumers, imported.skipped) == (3, 17, [])
    path = tmp_path / "imported.yaml"
    path.write_text(imported.text)
    topology = load_topology(path)
    assert len(topology.topics) == 23
    assert topology.stream("TAX_AGENT_JOBS").dead_letter == "TAX_AGENT_DLQ"
    assert topology.consumer_for("svc-ocr", "ocr.requested").name == "ocr-worker"
    plan = await plan_changes(nc, topology)
    assert not plan.has_changes, plan.to_text()


async def test_import_of_generated_topology_keeps_topic_names_unique(nc: Client) -> None:
    from generate_topology import generate

    topology = topology_from_text(generate(5, 3, 2), "generated.yaml")
    await converge(nc, topology)
    imported = await import_topology(nc)
    assert imported.skipped == [] and imported.consumers == 10
    again = topology_from_text(imported.text, "imported.yaml")
    assert "s3.t1.created" in {t.name for t in again.topics}
    assert not (await plan_changes(nc, again)).has_changes


async def test_import_of_unmanaged_streams(nc: Client) -> None:
    await api(nc, "STREAM.CREATE.ORDERS", {"name": "ORDERS", "subjects": ["shop.orders.*"]})
    await api(
        nc,
        "STREAM.CREATE.AUDIT",
        {"name": "AUDIT", "subjects": ["audit.>"], "storage": "memory"},
    )
    await api(
        nc,
        "CONSUMER.CREATE.ORDERS.Mailer_1",
        {
            "stream_name": "ORDERS",
            "config": {
                "durable_name": "Mailer_1",
                "ack_policy": "explicit",
                "filter_subject": "shop.orders.*",
                "max_deliver": -1,
            },
        },
    )
    imported = await import_topology(nc)
    assert imported.name == "imported"
    assert any("AUDIT" in s and ">" in s for s in imported.skipped)
    topology, errors = parse_topology(imported.text, "imported.yaml")
    assert not errors and topology is not None
    c = topology.stream("ORDERS").consumer("Mailer_1")
    assert c.service == "svc-mailer-1" and c.max_deliver == -1
    plan = await plan_changes(nc, topology)
    # Only the adoption marks: the settings already match.
    for ch in plan.pending:
        assert ch.action == "update" and all(f.field.startswith("metadata.") for f in ch.fields)


MOVE = """\
version: 1
name: move
streams:
  B:
    subject_prefix: x
    topics: {b1: {}}
  A:
    subject_prefix: x
    topics: {a1: {}, a2: {}}
"""


async def test_topic_moved_to_an_earlier_stream(nc: Client) -> None:
    await converge(nc, topology_from_text(MOVE))
    moved = topology_from_text(
        MOVE.replace("topics: {b1: {}}", "topics: {b1: {}, a2: {}}").replace(
            "topics: {a1: {}, a2: {}}", "topics: {a1: {}}"
        )
    )
    plan = await plan_changes(nc, moved)
    assert field_names(change(plan, "A")) == {"subjects"}
    assert field_names(change(plan, "B")) == {"subjects"}
    await converge(nc, moved)
    assert (await stream_config(nc, "B"))["subjects"] == ["x.b1", "x.a2"]


@pytest.mark.slow
async def test_lists_are_read_past_one_page(nc: Client) -> None:
    # STREAM.LIST and CONSUMER.LIST answer 256 entries a page.
    await asyncio.gather(
        *(
            api(
                nc,
                f"STREAM.CREATE.X{i}",
                {"name": f"X{i}", "subjects": [f"x{i}"], "storage": "memory"},
            )
            for i in range(300)
        )
    )
    topology = shop()
    await converge(nc, topology)
    await asyncio.gather(
        *(
            api(
                nc,
                f"CONSUMER.CREATE.ORDERS.extra{i}",
                {
                    "stream_name": "ORDERS",
                    "config": {"durable_name": f"extra{i}", "ack_policy": "explicit"},
                },
            )
            for i in range(270)
        )
    )
    plan = await plan_changes(nc, topology)
    assert not plan.has_changes
    kinds = [c.kind for c in plan.unmanaged]
    assert (kinds.count("stream"), kinds.count("consumer")) == (300, 270)


async def test_work_queue_filter_moves_to_a_new_consumer(nc: Client) -> None:
    two = shop_edit(
        ("      invoice.render: {publishers: [svc-billing]}\n",
         "      invoice.render: {publishers: [svc-billing]}\n      invoice.mail: {}\n"),
        ("renderer: {service: svc-billing, topics: [invoice.render]}",
         "renderer: {service: svc-billing, topics: [invoice.render, invoice.mail]}"),
    )  # fmt: skip
    await converge(nc, two)
    split = shop_edit(
        ("      invoice.render: {publishers: [svc-billing]}\n",
         "      invoice.render: {publishers: [svc-billing]}\n      invoice.mail: {}\n"),
        ("      renderer: {service: svc-billing, topics: [invoice.render]}\n",
         "      mailer: {service: svc-mail, topics: [invoice.mail]}\n"
         "      renderer: {service: svc-billing, topics: [invoice.render]}\n"),
    )  # fmt: skip
    plan = await plan_changes(nc, split)
    assert change(plan, "JOBS/mailer", "consumer").action == "create"
    assert field_names(change(plan, "JOBS/renderer", "consumer")) == {"filter_subjects"}
    await converge(nc, split)

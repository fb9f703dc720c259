"""The reconciler's pure parts, without a server: classification, rendering, options."""

from __future__ import annotations

import argparse

import pytest
from reconcile_helpers import SHOP, shop, topology_from_text

from bus_runtime._errors import UnsupportedFeatureError
from bus_runtime.jetstream.connect import (
    ConnectOptions,
    add_connect_args,
    options_from_args,
    split_servers,
)
from bus_runtime.reconcile.diff import classify_stream_field as _classify_stream_field
from bus_runtime.reconcile.importer import _common_prefix, service_name
from bus_runtime.reconcile.plan import Change, FieldChange, Plan, format_value
from bus_runtime.reconcile.planner import check_features
from bus_runtime.reconcile.planner import diff_consumer as _diff_consumer
from bus_runtime.reconcile.planner import diff_stream as _diff_stream
from bus_runtime.topology.units import DAY, SECOND

GIB = 1024**3

V215 = (2, 15, 1)


@pytest.mark.parametrize(
    ("fld", "before", "after", "effect"),
    [
        ("storage", "file", "memory", "replace"),
        ("retention", "limits", "workqueue", "replace"),
        ("retention", "workqueue", "interest", "replace"),
        ("retention", "limits", "interest", "in_place"),
        ("retention", "interest", "limits", "in_place"),
        ("max_age", 7 * DAY, DAY, "destructive"),
        ("max_age", DAY, 7 * DAY, "in_place"),
        ("max_age", 0, DAY, "destructive"),  # forever -> 1d
        ("max_age", DAY, 0, "in_place"),
        ("max_bytes", -1, GIB, "destructive"),
        ("max_bytes", GIB, 2 * GIB, "in_place"),
        ("max_msgs", 100, 10, "destructive"),
        ("max_msgs_per_subject", -1, 5, "destructive"),
        ("max_msgs_per_subject", 5, 0, "in_place"),
        ("max_msg_size", 1000, 10, "in_place"),
        ("deny_delete", True, False, "replace"),
        ("deny_delete", False, True, "in_place"),
        ("allow_msg_ttl", True, False, "replace"),
        ("replicas", 1, 3, "in_place"),
        ("compression", "none", "s2", "in_place"),
        ("max_consumers", -1, 10, "replace"),
    ],
)
def test_stream_field_classification(fld: str, before: object, after: object, effect: str) -> None:
    assert _classify_stream_field(fld, before, after)[0] == effect


def test_consumer_replace_fields() -> None:
    topology = topology_from_text(
        SHOP.replace(
            "        max_deliver: 5\n",
            "        max_deliver: 5\n        ack_policy: all\n        replay_policy: original\n"
            "        max_waiting: 10\n        max_ack_pending: 50\n",
        )
    )
    consumer = topology.stream("ORDERS").consumer("billing")
    live = {
        "durable_name": "billing",
        "ack_policy": "explicit",
        "ack_wait": SECOND,
        "max_deliver": 5,
        "backoff": [SECOND, 5 * SECOND],
        "filter_subject": "orders.created",
        "replay_policy": "instant",
        "max_waiting": 512,
        "max_ack_pending": 1000,
        "num_replicas": 0,
        "deliver_policy": "all",
    }
    fields, update = _diff_consumer(consumer, live, 1, topology, V215)
    effects = {f.field: f.effect for f in fields}
    assert effects == {
        "ack_policy": "replace",
        "replay_policy": "replace",
        "max_waiting": "replace",
        "max_ack_pending": "in_place",
        "metadata.natstopo.topology": "in_place",
        "metadata.natstopo.service": "in_place",
    }
    assert update["filter_subject"] == "orders.created" and "filter_subjects" not in update


def test_server_defaults_and_added_fields_are_not_drift() -> None:
    topology = shop()
    stream = topology.stream("JOBS")
    cfg = stream.to_stream_config()
    live = {
        **cfg,
        "max_age": 0,
        "max_msgs": -1,
        "duplicate_window": 120 * SECOND,
        "allow_msg_ttl": False,
        "some_future_field": {"x": 1},
        "metadata": {"_nats.ver": "2.15.1", "natstopo.topology": "shop"},
    }
    fields, update = _diff_stream(stream, live, topology, V215)
    assert fields == []
    assert update["some_future_field"] == {"x": 1}  # sent back as the server gave it
    assert update["metadata"]["_nats.ver"] == "2.15.1"


def test_feature_check_names_field_feature_and_version() -> None:
    topology = topology_from_text(
        "version: 1\nname: t\nstreams:\n  S:\n    subject_delete_marker_ttl: 5m\n"
        "    max_age: 1h\n    topics: {a: {}}\n"
    )
    check_features(topology, (2, 11, 0))
    with pytest.raises(UnsupportedFeatureError) as err:
        check_features(topology, (2, 10, 26))
    assert str(err.value) == (
        "`streams.S.subject_delete_marker_ttl` needs subject delete markers, which "
        "nats-server 2.11.0 brings; the server runs 2.10.26"
    )
    with pytest.raises(UnsupportedFeatureError, match="metadata"):
        check_features(shop(), (2, 9, 25))


def test_rendering_in_topology_units() -> None:
    assert format_value("max_age", 7 * DAY) == "7d"
    assert format_value("max_bytes", 5 * GIB) == "5GiB"
    assert format_value("max_bytes", -1) == "unlimited"
    assert format_value("backoff", [SECOND, 60 * SECOND]) == "[1s, 1m]"
    assert format_value("deny_delete", True) == "true"
    assert format_value("max_age", None) == "-"
    f = FieldChange("max_bytes", 5 * GIB, 10 * GIB)
    assert f.render() == "max_bytes: 5GiB -> 10GiB"
    plan = Plan("tax-agent", "prod", "2.15.1")
    plan.changes.append(Change("stream", "TAX_AGENT_EVENTS", None, "update", [f]))
    assert plan.to_text().splitlines()[:2] == [
        "~ stream TAX_AGENT_EVENTS: update in place",
        "    max_bytes: 5GiB -> 10GiB",
    ]
    assert plan.changes[0].describe() == (
        "~ stream TAX_AGENT_EVENTS: update in place: max_bytes: 5GiB -> 10GiB"
    )
    assert plan.has_changes and not plan.refused_without_flag
    plan.changes.append(Change("consumer", "TAX_AGENT_EVENTS", "old", "delete"))
    assert plan.refused_without_flag
    assert plan.to_dict()["counts"]["delete"] == 1


def test_connect_options_from_env_and_flags() -> None:
    env = {
        "NATS_URL": "nats://a:4222, b:4223",
        "NATS_USER": "u",
        "NATS_PASSWORD": "s3cret-pw",
        "NATS_CREDS": "/x.creds",
    }
    opts = ConnectOptions.from_env(env)
    assert opts.servers == ("nats://a:4222", "nats://b:4223")
    assert (opts.user, opts.password, opts.creds) == ("u", "s3cret-pw", "/x.creds")
    assert "s3cret-pw" not in repr(opts)
    parser = argparse.ArgumentParser()
    add_connect_args(parser)
    args = parser.parse_args(["-s", "nats://c:1", "--server", "d:2", "--token", "t"])
    opts = options_from_args(args, env)
    assert opts.servers == ("nats://c:1", "nats://d:2")
    assert (opts.token, opts.user) == ("t", "u")
    assert split_servers("tls://x:1") == ("tls://x:1",)


def test_import_naming() -> None:
    assert service_name("Mailer_1") == "svc-mailer-1"
    assert service_name("ocr-worker") == "svc-ocr-worker"
    assert _common_prefix(["tax.user.created", "tax.firm.*.done"]) == ["tax"]
    assert _common_prefix(["a.b", "a.b.c"]) == ["a"]
    assert _common_prefix(["orders.created"]) == ["orders"]
    assert _common_prefix(["a.x", "b.y"]) == []


def test_equivalent_spellings_are_not_drift() -> None:
    topology = topology_from_text(
        "version: 1\nname: t\nstreams:\n  S:\n    max_msgs_per_subject: 0\n    topics: {a: {}}\n"
    )
    stream = topology.stream("S")
    live = {**stream.to_stream_config(), "max_msgs_per_subject": -1}
    live["metadata"] = {"natstopo.topology": "t"}
    assert _diff_stream(stream, live, topology, V215)[0] == []

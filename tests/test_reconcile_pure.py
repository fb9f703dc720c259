"""The reconciler's parts that need no server: rendering, options, saved-plan files, redaction.

What a server does with a change is not tested here: the conformance matrix
(tests/conformance/test_matrix.py) proves every rule against every server version.
"""

from __future__ import annotations

import argparse

import pytest
from reconcile_helpers import SHOP, shop, topology_from_text

from bus_runtime._errors import ConnectError, UnsupportedFeatureError
from bus_runtime.jetstream.api import api_prefix
from bus_runtime.jetstream.connect import (
    ConnectOptions,
    add_connect_args,
    options_from_args,
    redact,
    split_servers,
)
from bus_runtime.jetstream.rules import check_features, classify
from bus_runtime.reconcile.diff import diff_stream
from bus_runtime.reconcile.importer import _common_prefix, service_name
from bus_runtime.reconcile.plan import Change, FieldChange, Plan, format_value
from bus_runtime.topology.units import DAY, SECOND

GIB = 1024**3
V215 = (2, 15, 1)


def test_server_defaults_and_fields_it_adds_are_not_drift() -> None:
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
    fields, update = diff_stream(stream, live, topology, V215)
    assert fields == []
    assert update["some_future_field"] == {"x": 1}  # sent back as the server gave it
    assert update["metadata"]["_nats.ver"] == "2.15.1"
    assert "max_age" not in update  # unset: left out, the server applies its default


def test_equivalent_spellings_are_not_drift() -> None:
    topology = topology_from_text(
        "version: 1\nname: t\nstreams:\n  S:\n    max_msgs_per_subject: 0\n"
        "    max_consumers: 0\n    topics: {a: {}}\n"
    )
    stream = topology.stream("S")
    assert (stream.max_msgs_per_subject, stream.max_consumers) == (-1, -1)
    live = {**stream.to_stream_config(), "max_msgs_per_subject": -1, "max_consumers": -1}
    live["metadata"] = {"natstopo.topology": "t"}
    assert diff_stream(stream, live, topology, V215)[0] == []


def test_classify_without_state_is_the_worst_case() -> None:
    """`natstopo diff` has no server: a lowered limit may drop messages, so it says so."""
    assert classify("stream", "max_age", 7 * DAY, DAY, V215)[0] == "destructive"
    assert classify("stream", "max_bytes", -1, GIB, V215)[0] == "destructive"
    assert classify("stream", "retention", "limits", "interest", V215)[0] == "destructive"
    assert classify("stream", "max_age", DAY, 7 * DAY, V215) == ("in_place", "")
    # discard new keeps what is stored (measured): not a loss even without state.
    effect = classify("stream", "max_msgs", 100, 10, V215, config={"discard": "new"})
    assert effect == ("in_place", "")


def test_feature_check_names_field_feature_and_version() -> None:
    topology = topology_from_text(
        "version: 1\nname: t\nstreams:\n  S:\n    subject_delete_marker_ttl: 5m\n"
        "    max_age: 1h\n    allow_rollup_hdrs: true\n    allow_msg_ttl: true\n"
        "    topics: {a: {}}\n"
    )
    check_features(topology, (2, 11, 0))
    with pytest.raises(UnsupportedFeatureError) as err:
        check_features(topology, (2, 10, 26))
    assert str(err.value) == (
        "`streams.S.allow_msg_ttl` needs per-message TTL, which "
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
    assert plan.has_changes and not plan.refused_without_flag
    plan.changes.append(Change("consumer", "TAX_AGENT_EVENTS", "old", "delete"))
    assert plan.refused_without_flag
    assert plan.to_dict()["counts"]["delete"] == 1


def test_saved_plan_round_trip_and_refusals() -> None:
    plan = Plan("shop", None, "2.15.1", snapshot={"stream:ORDERS": "abc"})
    plan.changes.append(
        Change(
            "stream",
            "ORDERS",
            None,
            "update",
            [FieldChange("max_age", DAY, 2 * DAY)],
            config={"name": "ORDERS"},
        )
    )
    again = Plan.from_saved(plan.to_saved())
    assert again.to_saved() == plan.to_saved()
    assert again.changes[0].config == {"name": "ORDERS"}
    with pytest.raises(ValueError, match="not a saved natstopo plan"):
        Plan.from_saved({"version": 1})
    edited = plan.to_saved()
    edited["changes"][0]["config"]["max_age"] = 1
    with pytest.raises(ValueError, match="edited since"):
        Plan.from_saved(edited)


def test_connect_options_from_env_and_flags() -> None:
    env = {
        "NATS_URL": "nats://a:4222, b:4223",
        "NATS_USER": "u",
        "NATS_PASSWORD": "s3cret-pw",
        "NATS_CREDS": "/x.creds",
        "NATS_JS_DOMAIN": "hub",
    }
    opts = ConnectOptions.from_env(env)
    assert opts.servers == ("nats://a:4222", "nats://b:4223")
    assert (opts.user, opts.password, opts.creds) == ("u", "s3cret-pw", "/x.creds")
    assert opts.api_prefix == "$JS.hub.API"
    assert "s3cret-pw" not in repr(opts)
    parser = argparse.ArgumentParser()
    add_connect_args(parser)
    args = parser.parse_args(
        ["-s", "nats://c:1", "--server", "d:2", "--token", "t", "--js-api-prefix", "$JS.x.API"]
    )
    opts = options_from_args(args, {})
    assert opts.servers == ("nats://c:1", "nats://d:2")
    assert opts.token == "t" and opts.api_prefix == "$JS.x.API"
    assert split_servers("tls://x:1") == ("tls://x:1",)
    assert ConnectOptions(servers=("tls://x:1",)).tls_required
    assert ConnectOptions(tls_ca="/ca.pem").tls_required
    assert not ConnectOptions().tls_required
    with pytest.raises(ConnectError, match="not both"):
        ConnectOptions.from_env({"NATS_JS_DOMAIN": "a", "NATS_JS_API_PREFIX": "$JS.b.API"})


def test_api_prefix() -> None:
    assert api_prefix() == "$JS.API"
    assert api_prefix("hub") == "$JS.hub.API"
    assert api_prefix(prefix="$JS.acme.API.") == "$JS.acme.API"
    with pytest.raises(ValueError):
        api_prefix("a b")


def test_redaction() -> None:
    assert redact("cannot connect to nats://alice:pw@h:4222") == (
        "cannot connect to nats://alice:***@h:4222"
    )
    assert redact("tls://t0ken@h:1, nats://h:2") == "tls://***@h:1, nats://h:2"
    opts = ConnectOptions(servers=("nats://bob:hunter22@h:1",), token="tok-123", password="pw-9")
    text = "nats: authorization violation for bob:hunter22 using tok-123 and pw-9"
    assert opts.redact(text) == "nats: authorization violation for bob:*** using *** and ***"
    assert opts.shown_servers == ("nats://bob:***@h:1",)


def test_import_naming() -> None:
    assert service_name("Mailer_1") == "svc-mailer-1"
    assert service_name("ocr-worker") == "svc-ocr-worker"
    assert _common_prefix(["tax.user.created", "tax.firm.*.done"]) == ["tax"]
    assert _common_prefix(["a.b", "a.b.c"]) == ["a"]
    assert _common_prefix(["orders.created"]) == ["orders"]
    assert _common_prefix(["a.x", "b.y"]) == []


def test_shop_is_valid() -> None:
    assert topology_from_text(SHOP).stream("ORDERS").max_bytes == 64 * 1024**2


def test_memory_consumers_are_warned_about() -> None:
    topology = topology_from_text(
        SHOP.replace(
            "        max_deliver: 5\n", "        max_deliver: 5\n        mem_storage: true\n"
        )
    )
    (w,) = [w for w in topology.warnings if w.path.endswith("mem_storage")]
    assert "a restart of its server loses the consumer" in w.message

"""`natstopo asyncapi`: the document passes the official parser and says what the topology says.

The official parser (npm `@asyncapi/parser`, from the root package-lock.json, run by
tools/docs-check.mjs) validates the AsyncAPI schema, the references and its Spectral
rules; deliberately broken documents show that it reports errors. The structure tests
compare the document with the model and with the runtime's own envelope and headers.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from review_helpers import (
    SHIPPED,
    assert_one_line_error,
    docs_check,
    run_natstopo,
    write_hard_topology,
)

from bus_runtime.bus.delivery import DLQ_HEADERS
from bus_runtime.bus.envelope import ENVELOPE_FIELDS, MSG_ID_HEADER, TRACEPARENT_HEADER
from bus_runtime.review.asyncapi import build_asyncapi, parse_server
from bus_runtime.topology.loader import load_topology
from bus_runtime.topology.model import Topology

ENVIRONMENTS = (None, *load_topology(SHIPPED).environments)


def _problems(report: dict[str, Any]) -> list[str]:
    return [
        f"{d['severity']} {d['code']} at {'/'.join(d['path'])}: {d['message']}"
        for d in report["diagnostics"]
        if d["severity"] in ("error", "warning")
    ]


def test_the_shipped_topology_in_every_environment_passes_the_official_parser(
    tmp_path: Path,
) -> None:
    texts = [
        build_asyncapi(load_topology(SHIPPED, env), servers=["nats://nats:4222"]).to_yaml()
        for env in ENVIRONMENTS
    ]
    reports = docs_check("asyncapi", texts, tmp_path)
    for env, report in zip(ENVIRONMENTS, reports, strict=True):
        assert report["valid"] and not _problems(report), (env, _problems(report))


def _broken(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Copies of `doc`, each with one mistake the parser must report."""
    cases = []

    def case(name: str, change: Any) -> None:
        d = copy.deepcopy(doc)
        change(d)
        cases.append((name, d))

    case("no info.version", lambda d: d["info"].pop("version"))
    case("unknown action", lambda d: next(iter(d["operations"].values())).update(action="publish"))
    case(
        "dangling channel reference",
        lambda d: next(iter(d["operations"].values()))["channel"].update(
            {"$ref": "#/channels/nope"}
        ),
    )
    case(
        "payload type misspelt",
        lambda d: d["components"]["schemas"]["user.login"]["properties"]["mfa"].update(
            type="bolean"
        ),
    )
    case(
        "dangling payload reference",
        lambda d: d["components"]["messages"]["user.login"].update(
            payload={"$ref": "#/components/schemas/nope"}
        ),
    )
    case(
        "required not a list",
        lambda d: d["components"]["schemas"]["user.login"].update(required="user_id"),
    )
    return cases


def test_broken_documents_fail_the_official_parser(tmp_path: Path) -> None:
    doc = build_asyncapi(load_topology(SHIPPED)).document
    cases = _broken(doc)
    reports = docs_check("asyncapi", [json.dumps(d) for _, d in cases], tmp_path)
    for (name, _), report in zip(cases, reports, strict=True):
        assert not report["valid"] and report["errors"] > 0, name


def test_awkward_names_and_schemas_still_make_a_valid_document(tmp_path: Path) -> None:
    result = build_asyncapi(load_topology(write_hard_topology(tmp_path)))
    (report,) = docs_check("asyncapi", [result.to_json()], tmp_path)
    assert report["valid"] and not _problems(report), _problems(report)
    doc = result.document
    # two wildcards, two parameters
    assert doc["channels"]["a._._.b"]["address"] == "e.a.{token1}.{token2}.b"
    assert set(doc["channels"]["a._._.b"]["parameters"]) == {"token1", "token2"}
    # a subject with braces cannot be an address: unknown, said so
    weird = next(c for c in doc["channels"].values() if c["title"] == 'a"b<c#d&e`f{x}')
    assert weird["address"] is None and weird["x-jetstream"]["subject"] == 'e.a"b<c#d&e`f{x}'
    hard = doc["components"]["schemas"]["x.hard"]
    # 2020-12 -> draft-07: prefixItems becomes items; $ref points into the document
    assert hard["properties"]["pair"]["items"] == [{"type": "string"}, {"type": "integer"}]
    assert hard["properties"]["tree"] == {"$ref": "#/components/schemas/x.hard/$defs/node"}
    assert "$schema" not in hard
    kw = doc["components"]["schemas"]["class._.def"]
    assert kw["properties"]["nested"] == {"$ref": "#/components/schemas/class._.def"}
    warnings = "\n".join(result.warnings)
    for words in ["`unevaluatedProperties`", "holds `{` or `}`"]:
        assert words in warnings, words


def _operations(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    out = set()
    for op in doc["operations"].values():
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]
        out.add((op["x-natstopo-service"], op["action"], channel["title"]))
    return out


def _expected_operations(t: Topology) -> set[tuple[str, str, str]]:
    out = set()
    for s in t.streams:
        for topic in s.topics:
            out.update((p, "send", topic.name) for p in topic.publishers)
        for c in s.consumers:
            for name in c.topics or [x.name for x in s.topics]:
                out.add((c.service, "receive", name))
            if not c.topics:
                out.update(
                    (c.service, "receive", f"dead letters of {o}") for o in s.dead_letter_sources
                )
        if s.dead_letter:
            out.update((c.service, "send", f"dead letters of {s.name}") for c in s.consumers)
    return out


@pytest.mark.parametrize("which", ["shipped", "hard"])
def test_channels_messages_and_operations_are_the_topology_s(which: str, tmp_path: Path) -> None:
    t = load_topology(SHIPPED if which == "shipped" else write_hard_topology(tmp_path))
    doc = build_asyncapi(t).document
    topic_channels = {c["title"]: c for c in doc["channels"].values() if "stream" in c["x-jetstream"] and not c["title"].startswith("dead letters")}  # fmt: skip
    assert set(topic_channels) == {x.name for x in t.topics}
    for topic in t.topics:
        ch = topic_channels[topic.name]
        if ch["address"] is not None:
            tokens = ch["address"].split(".")
            params = [tok[1:-1] for tok in tokens if tok.startswith("{")]
            assert set(params) == set(ch.get("parameters", {}))
            assert re.sub(r"\{token\d+\}", "*", ch["address"]) == topic.subject
        assert ch["x-jetstream"]["stream"] == topic.stream
    assert _operations(doc) == _expected_operations(t)
    # every operation's message is its channel's
    for op in doc["operations"].values():
        channel = op["channel"]["$ref"]
        assert all(m["$ref"].startswith(channel + "/messages/") for m in op["messages"])


def test_messages_carry_the_runtime_s_envelope_and_headers() -> None:
    doc = build_asyncapi(load_topology(SHIPPED)).document
    schemas = doc["components"]["schemas"]
    envelope = schemas["document.uploaded.envelope"]
    assert tuple(envelope["properties"]) == ENVELOPE_FIELDS
    assert envelope["properties"]["topic"]["const"] == "document.uploaded"
    assert envelope["properties"]["data"] == {"$ref": "#/components/schemas/document.uploaded"}
    # trace_id may be null; `schema` is absent from envelopes of older publishers
    assert set(envelope["required"]) == set(ENVELOPE_FIELDS) - {"trace_id", "schema"}
    untyped = schemas["kg.facts_updated.envelope"]["properties"]["data"]
    assert untyped["type"] == "object" and "No payload schema" in untyped["description"]
    assert set(schemas["EventHeaders"]["properties"]) == {MSG_ID_HEADER, TRACEPARENT_HEADER}
    assert set(schemas["DeadLetterHeaders"]["properties"]) == {
        MSG_ID_HEADER,
        TRACEPARENT_HEADER,
        *DLQ_HEADERS,
    }
    message = doc["components"]["messages"]["document.uploaded"]
    assert message["payload"] == {"$ref": "#/components/schemas/document.uploaded.envelope"}
    assert message["headers"] == {"$ref": "#/components/schemas/EventHeaders"}
    dead = doc["components"]["messages"]["dead-letters.TAX_AGENT_EVENTS"]["payload"]["oneOf"]
    assert len(dead) == len(load_topology(SHIPPED).stream("TAX_AGENT_EVENTS").topics)


def test_x_jetstream_settings_are_in_the_topology_s_units_per_environment() -> None:
    base = build_asyncapi(load_topology(SHIPPED)).document
    prod = build_asyncapi(load_topology(SHIPPED, "prod")).document
    dev = build_asyncapi(load_topology(SHIPPED, "dev")).document
    events = base["channels"]["document.uploaded"]["x-jetstream"]
    assert (events["stream"], events["retention"], events["max_age"], events["max_bytes"]) == (
        "TAX_AGENT_EVENTS",
        "interest",
        "7d",
        "10GiB",
    )
    assert events["dead_letter"] == {
        "stream": "TAX_AGENT_DLQ",
        "subject": "dlq.TAX_AGENT_EVENTS.tax.document.uploaded",
    }
    assert prod["channels"]["document.uploaded"]["x-jetstream"]["max_bytes"] == "50GiB"
    assert dev["channels"]["document.uploaded"]["x-jetstream"]["replicas"] == 1
    audit = prod["operations"]["audit-trail.receive.document.uploaded"]["x-jetstream"]
    assert audit["max_ack_pending"] == 10000
    assert audit["backoff"] == ["30s", "1m", "5m", "15m", "1h"]
    assert audit["filter_subjects"][0] == "tax.user.created"
    assert base["x-jetstream"]["streams"]["TAX_AGENT_DLQ"]["compression"] == "s2"
    assert base["info"]["version"] == load_topology(SHIPPED).fingerprint
    assert prod["id"] == "urn:natstopo:tax-agent:prod"


def test_servers_come_from_the_option_without_credentials() -> None:
    proc = run_natstopo(
        "asyncapi",
        str(SHIPPED),
        "--env",
        "prod",
        "--server",
        "main=nats://app:s3cret@nats-0.prod:4222",
        "--server",
        "tls://nats-1.prod:4443",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["servers"]["main"] == {
        "host": "nats-0.prod:4222",
        "protocol": "nats",
        "tags": [{"name": "env:prod"}],
    }
    assert doc["servers"]["prod-2"]["description"] == "TLS"
    assert "s3cret" not in proc.stdout
    assert "credentials in its URL are left out" in proc.stderr
    assert parse_server("[::1]:4222", "x") == ("x", {"host": "[::1]:4222", "protocol": "nats"})
    assert_one_line_error(run_natstopo("asyncapi", str(SHIPPED), "--server", "http://x:80"))
    assert_one_line_error(run_natstopo("asyncapi", str(SHIPPED), "--server", "nats://x:port"))
    assert_one_line_error(
        run_natstopo("asyncapi", str(SHIPPED), "--server", "a=nats://x", "--server", "a=nats://y")
    )


def test_cli_writes_yaml_or_json_deterministically(tmp_path: Path) -> None:
    a = run_natstopo("asyncapi", str(SHIPPED), "--out", str(tmp_path / "a.yaml"))
    b = run_natstopo("asyncapi", str(SHIPPED))
    assert a.returncode == b.returncode == 0
    assert (tmp_path / "a.yaml").read_text(encoding="utf-8") == b.stdout
    assert "&id" not in b.stdout and "*id" not in b.stdout  # no YAML anchors
    assert yaml.safe_load(b.stdout) == json.loads(
        run_natstopo("asyncapi", str(SHIPPED), "--format", "json").stdout
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nstreams:\n  S:\n    retention: workque\n")
    proc = run_natstopo("asyncapi", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not proc.stdout
    assert f"{bad}:5:16: error: streams.S.retention:" in proc.stderr

"""`natstopo diff`: one test per judgement, as a reviewer would meet it in a pull request.

Each test writes a BASE and a HEAD topology (with their payload schemas) and reads the
review's verdict for the change it made; the CLI tests check exit codes, formats and the
`REF:path` form in a real git repository.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bus_runtime.cli.main import main
from bus_runtime.review.diff import Review, ReviewChange, review
from bus_runtime.review.schema_compat import compare_schemas, deploy_order
from bus_runtime.topology.loader import load_every_environment

BASE = textwrap.dedent(
    """\
    version: 1
    name: shop
    services:
      svc-orders: {}
      svc-billing: {}
      svc-mail: {}
    defaults:
      stream: {replicas: 1, max_age: 7d}
    streams:
      ORDERS:
        retention: limits
        max_bytes: 1GiB
        dead_letter: DLQ
        topics:
          order.placed:
            publishers: [svc-orders]
            schema: schemas/order-placed.json
          order.cancelled:
            publishers: [svc-orders]
        consumers:
          billing-orders:
            service: svc-billing
            topics: [order.placed, order.cancelled]
          mail-orders:
            service: svc-mail
            topics: [order.placed]
      DLQ:
        retention: limits
    environments:
      dev: {defaults: {stream: {max_age: 1d}}}
      prod:
        streams:
          ORDERS: {max_bytes: 50GiB}
    """
)

ORDER_PLACED: dict[str, Any] = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {
        "order_id": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "currency": {"enum": ["GBP", "EUR"]},
        "note": {"type": "string", "maxLength": 200},
    },
}


def edit(text: str, *pairs: str) -> str:
    """`text` with each (old, new) pair replaced; an old that is not there fails the test."""
    assert len(pairs) % 2 == 0
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert old in text, f"test edit does not apply: {old!r}"
        text = text.replace(old, new)
    return text


def write(folder: Path, text: str, schema: dict[str, Any] | None = None) -> Path:
    (folder / "schemas").mkdir(parents=True, exist_ok=True)
    (folder / "schemas" / "order-placed.json").write_text(json.dumps(schema or ORDER_PLACED))
    path = folder / "topology.yaml"
    path.write_text(text)
    return path


def compare(
    tmp_path: Path,
    head_text: str | None = None,
    head_schema: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Review:
    base = write(tmp_path / "base", BASE)
    assert head_text != BASE or head_schema is not None or head_text is None, (
        "the test changed nothing"
    )
    head = write(tmp_path / "head", head_text if head_text is not None else BASE, head_schema)
    b, errors_b = load_every_environment(base)
    h, errors_h = load_every_environment(head)
    assert not errors_b and not errors_h, [str(e) for e in errors_b + errors_h]
    return review(b, h, base_label="base", head_label="head", **kwargs)


def only(r: Review, kind: str, name: str, environment: str | None = None) -> ReviewChange:
    found = [
        c for c in r.changes if c.kind == kind and c.name == name and c.environment == environment
    ]
    assert len(found) == 1, [c.to_dict() for c in r.changes]
    return found[0]


# --------------------------------------------------------------------------- infrastructure


def test_nothing_changed_is_no_change_and_passes(tmp_path: Path) -> None:
    r = compare(tmp_path)
    assert r.changes == []
    assert not r.gate_failed


def test_a_lowered_limit_is_destructive_only_where_it_lowers(tmp_path: Path) -> None:
    # Base ORDERS: 1GiB; prod 50GiB. HEAD lowers prod to 10GiB and raises the base to 2GiB.
    head = BASE.replace("ORDERS: {max_bytes: 50GiB}", "ORDERS: {max_bytes: 10GiB}").replace(
        "max_bytes: 1GiB\n", "max_bytes: 2GiB\n"
    )
    r = compare(tmp_path, head)
    prod = only(r, "stream", "ORDERS", "prod")
    assert prod.infrastructure == "destructive"
    assert [(f.field, f.before, f.after) for f in prod.fields] == [
        ("max_bytes", 50 * 2**30, 10 * 2**30)
    ]
    assert "deletes the oldest messages" in prod.fields[0].reason
    dev = only(r, "stream", "ORDERS", "dev")
    assert dev.infrastructure == "safe"
    assert r.gate_failed
    assert r.failing == [prod]


def test_storage_change_is_a_replace_and_takes_the_consumers_with_it(tmp_path: Path) -> None:
    head = BASE.replace(
        "    retention: limits\n    max_bytes: 1GiB",
        "    retention: limits\n    storage: memory\n    max_bytes: 1GiB",
    )
    r = compare(tmp_path, head, environments=["dev"])
    s = only(r, "stream", "ORDERS", "dev")
    assert s.infrastructure == "replace" and s.action == "replace"
    assert any("recreated" in why for why in s.reasons)
    for consumer in ("ORDERS/billing-orders", "ORDERS/mail-orders"):
        assert only(r, "consumer", consumer, "dev").infrastructure == "replace"
    # replace loses the stream's messages: the default gate fails on it
    assert r.gate_failed
    assert not compare(
        tmp_path / "2", head, environments=["dev"], fail_on=["destructive"]
    ).gate_failed


def test_retention_to_workqueue_is_a_replace(tmp_path: Path) -> None:
    head = BASE.replace("  ORDERS:\n    retention: limits", "  ORDERS:\n    retention: workqueue")
    head = head.replace(
        "      mail-orders:\n        service: svc-mail\n        topics: [order.placed]\n", ""
    )
    r = compare(tmp_path, head, environments=["dev"])
    assert only(r, "stream", "ORDERS", "dev").infrastructure == "replace"


def test_removing_max_age_is_safe_it_resets_to_unlimited(tmp_path: Path) -> None:
    head = BASE.replace("  stream: {replicas: 1, max_age: 7d}", "  stream: {replicas: 1}")
    r = compare(tmp_path, head, environments=["prod"])
    s = only(r, "stream", "ORDERS", "prod")
    assert [(f.field, f.before, f.after, f.effect) for f in s.fields] == [
        ("max_age", 7 * 86400 * 10**9, None, "safe")
    ]
    assert "max_age: 7d -> unset" in s.fields[0].render()


def test_stream_and_consumer_deletes_are_destructive(tmp_path: Path) -> None:
    head = BASE.replace(
        "      mail-orders:\n        service: svc-mail\n        topics: [order.placed]\n", ""
    )
    r = compare(tmp_path, head, environments=["dev"])
    # one change, two judgements: the server loses the consumer's position, and svc-mail
    # (which subscribes through it) breaks
    c = only(r, "consumer", "ORDERS/mail-orders", "dev")
    assert c.infrastructure == "destructive" and c.action == "delete"
    assert c.contract == "breaking" and c.services == ["svc-mail"]


def test_consumer_ack_policy_and_deliver_policy_are_replaces_max_deliver_is_safe(
    tmp_path: Path,
) -> None:
    head = BASE.replace(
        "      mail-orders:\n        service: svc-mail\n",
        "      mail-orders:\n        service: svc-mail\n        deliver_policy: new\n",
    ).replace(
        "      billing-orders:\n        service: svc-billing\n",
        "      billing-orders:\n        service: svc-billing\n        max_deliver: 5\n",
    )
    r = compare(tmp_path, head, environments=["dev"])
    assert only(r, "consumer", "ORDERS/mail-orders", "dev").infrastructure == "replace"
    billing = only(r, "consumer", "ORDERS/billing-orders", "dev")
    assert billing.infrastructure == "safe"
    assert billing.fields[0].render() == "max_deliver: 3 -> 5"


def test_a_new_stream_and_consumer_are_safe(tmp_path: Path) -> None:
    head = BASE.replace(
        "  DLQ:\n",
        "  AUDIT:\n    topics:\n      audit.logged: {publishers: [svc-orders]}\n"
        "    consumers:\n      mail-audit: {service: svc-mail}\n  DLQ:\n",
    )
    r = compare(tmp_path, head, environments=["dev"])
    assert only(r, "stream", "AUDIT", "dev").infrastructure == "safe"
    assert only(r, "consumer", "AUDIT/mail-audit", "dev").infrastructure == "safe"
    assert only(r, "topic", "audit.logged", "dev").contract == "compatible"
    assert not r.gate_failed


# --------------------------------------------------------------------------- contract


def test_removing_a_used_topic_breaks_its_publishers_and_consumers(tmp_path: Path) -> None:
    head = BASE.replace("      order.cancelled:\n        publishers: [svc-orders]\n", "").replace(
        "topics: [order.placed, order.cancelled]", "topics: [order.placed]"
    )
    r = compare(tmp_path, head)
    t = only(r, "topic", "order.cancelled")
    assert t.contract == "breaking"
    assert t.services == ["svc-billing", "svc-orders"]
    # the consumer lost a topic too: svc-billing's subscribe of it fails
    lost = [c for c in r.changes if c.kind == "consumer" and c.environment is None]
    assert [(c.name, c.contract, c.services) for c in lost] == [
        ("ORDERS/billing-orders", "breaking", ["svc-billing"])
    ]


def test_a_renamed_topic_is_named_as_a_likely_rename(tmp_path: Path) -> None:
    head = BASE.replace("order.cancelled", "order.canceled")
    r = compare(tmp_path, head)
    gone = only(r, "topic", "order.cancelled")
    assert gone.contract == "breaking"
    assert "renamed" not in gone.reasons[0]  # different subject: not guessed
    head2 = (
        BASE.replace("      order.placed:\n", "      order.submitted:\n")
        .replace(
            "topics: [order.placed, order.cancelled]", "topics: [order.submitted, order.cancelled]"
        )
        .replace("topics: [order.placed]", "topics: [order.submitted]")
    )
    r2 = compare(tmp_path / "2", head2)
    assert only(r2, "topic", "order.placed").contract == "breaking"


def test_a_consumer_moved_to_another_service_breaks_both(tmp_path: Path) -> None:
    head = BASE.replace(
        "      mail-orders:\n        service: svc-mail\n",
        "      mail-orders:\n        service: svc-orders\n",
    )
    r = compare(tmp_path, head)
    moved = [c for c in r.changes if c.kind == "consumer" and c.environment is None]
    assert len(moved) == 1
    assert moved[0].contract == "breaking"
    assert moved[0].services == ["svc-mail", "svc-orders"]
    perms = {(c.name, c.action) for c in r.changes if c.kind == "permission"}
    assert perms == {
        ("svc-mail consume ORDERS/mail-orders", "delete"),
        ("svc-orders consume ORDERS/mail-orders", "create"),
    }


def test_a_new_publisher_is_a_permission_change_for_review(tmp_path: Path) -> None:
    head = BASE.replace(
        "      order.placed:\n        publishers: [svc-orders]",
        "      order.placed:\n        publishers: [svc-orders, svc-mail]",
    )
    r = compare(tmp_path, head)
    p = only(r, "permission", "svc-mail publish order.placed")
    assert p.review and p.action == "create" and p.contract is None
    assert not r.gate_failed
    assert compare(tmp_path / "2", head, fail_on=["permission"]).gate_failed


def test_a_publisher_losing_a_topic_it_publishes_is_breaking(tmp_path: Path) -> None:
    head = BASE.replace(
        "      order.cancelled:\n        publishers: [svc-orders]",
        "      order.cancelled:\n        publishers: [svc-billing]",
    )
    r = compare(tmp_path, head)
    lost = only(r, "permission", "svc-orders publish order.cancelled")
    assert lost.contract == "breaking"


def schema_review(tmp_path: Path, new: dict[str, Any]) -> ReviewChange:
    return only(compare(tmp_path, BASE, new), "schema", "order.placed")


def with_props(**changes: Any) -> dict[str, Any]:
    schema = json.loads(json.dumps(ORDER_PLACED))
    for key, value in changes.items():
        if value is None:
            schema["properties"].pop(key)
        else:
            schema["properties"][key] = value
    return schema


def test_a_new_required_field_breaks_publishers_and_goes_publishers_first(tmp_path: Path) -> None:
    new = with_props(customer_id={"type": "string"})
    new["required"] = [*new["required"], "customer_id"]
    c = schema_review(tmp_path, new)
    assert c.contract == "breaking"
    assert c.services == ["svc-orders"]
    assert c.deploy_order == "publishers first"


def test_a_new_optional_field_is_compatible(tmp_path: Path) -> None:
    c = schema_review(tmp_path, with_props(coupon={"type": "string"}))
    assert c.contract == "compatible"
    assert c.services == []
    assert c.deploy_order is None  # the object is open: either side may go first


def test_a_new_optional_field_of_a_closed_object_goes_consumers_first(tmp_path: Path) -> None:
    base = {**ORDER_PLACED, "additionalProperties": False}
    head = {**with_props(coupon={"type": "string"}), "additionalProperties": False}
    deltas = compare_schemas(base, head)
    assert deploy_order(deltas) == "consumers first"
    assert not any(d.breaks_readers or d.breaks_writers for d in deltas)


def test_a_narrowed_enum_breaks_publishers(tmp_path: Path) -> None:
    c = schema_review(tmp_path, with_props(currency={"enum": ["GBP"]}))
    assert (c.contract, c.services, c.deploy_order) == (
        "breaking",
        ["svc-orders"],
        "publishers first",
    )


def test_a_widened_enum_breaks_consumers_and_goes_consumers_first(tmp_path: Path) -> None:
    c = schema_review(tmp_path, with_props(currency={"enum": ["GBP", "EUR", "USD"]}))
    assert c.contract == "breaking"
    assert c.services == ["svc-billing", "svc-mail"]
    assert c.deploy_order == "consumers first"


def test_a_retyped_field_breaks_everyone_and_has_no_safe_order(tmp_path: Path) -> None:
    c = schema_review(tmp_path, with_props(amount={"type": "string"}))
    assert c.contract == "breaking"
    assert c.services == ["svc-billing", "svc-mail", "svc-orders"]
    assert c.deploy_order == "no safe order"


def test_a_removed_field_breaks_its_readers(tmp_path: Path) -> None:
    c = schema_review(tmp_path, with_props(note=None))
    assert (c.contract, c.services, c.deploy_order) == (
        "breaking",
        ["svc-billing", "svc-mail"],
        "consumers first",
    )


def test_tightened_and_loosened_limits(tmp_path: Path) -> None:
    tight = schema_review(tmp_path, with_props(note={"type": "string", "maxLength": 100}))
    assert (tight.contract, tight.deploy_order) == ("breaking", "publishers first")
    loose = schema_review(tmp_path / "2", with_props(note={"type": "string", "maxLength": 500}))
    assert (loose.contract, loose.deploy_order) == ("compatible", "consumers first")


def test_keywords_not_compared_are_never_called_compatible(tmp_path: Path) -> None:
    c = schema_review(tmp_path, with_props(note={"anyOf": [{"type": "string"}, {"type": "null"}]}))
    assert c.contract == "breaking"
    assert c.deploy_order == "no safe order"
    assert any("review by hand" in why for why in c.reasons)


def test_only_annotations_changed_is_compatible(tmp_path: Path) -> None:
    c = schema_review(tmp_path, {**ORDER_PLACED, "description": "An order was placed."})
    assert (c.contract, c.deploy_order) == ("compatible", None)


def test_the_default_server_is_the_oldest_the_features_allow(tmp_path: Path) -> None:
    assert compare(tmp_path).server_version == "2.10.0"
    head = BASE.replace(
        "  DLQ:\n    retention: limits\n",
        "  DLQ:\n    retention: limits\n    allow_msg_ttl: true\n",
    )
    assert compare(tmp_path / "2", head).server_version == "2.11.0"
    batched = BASE.replace(
        "  DLQ:\n    retention: limits\n",
        "  DLQ:\n    retention: limits\n    allow_batched: true\n",
    )
    assert compare(tmp_path / "3", batched).server_version == "2.14.0"


def test_the_default_server_has_what_base_uses_too(tmp_path: Path) -> None:
    # BASE runs today: removing a 2.14 setting is judged for 2.14, not for 2.10
    batched = BASE.replace(
        "  DLQ:\n    retention: limits\n",
        "  DLQ:\n    retention: limits\n    allow_batched: true\n",
    )
    assert compare_from(tmp_path, batched, BASE).server_version == "2.14.0"


def test_a_target_older_than_heads_settings_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2.12 refuses any stream request with allow_batched (10025) and 2.10/2.11 drop it:
    # "safe" would pass a change no plan against that server can apply.
    base = write(tmp_path / "b", BASE)
    head_text = BASE.replace(
        "  DLQ:\n    retention: limits\n",
        "  DLQ:\n    retention: limits\n    allow_batched: true\n",
    )
    head = write(tmp_path / "h", head_text)
    line = head_text.splitlines().index("    allow_batched: true") + 1
    for target in ("2.10", "2.12", "2.13.9"):
        code, out, err = run([str(base), str(head), "--server-version", target], capsys)
        assert code == 1 and out == ""
        first = err.splitlines()[0]
        assert first.startswith(f"{head}:{line}:20: error: streams.DLQ.allow_batched: needs ")
        assert "2.14.0 brings" in first
    code, out, _ = run([str(base), str(head), "--server-version", "2.14"], capsys)
    assert code == 0 and "allow_batched: unset -> true" in out


def test_allow_batched_turns_on_and_off_in_place(tmp_path: Path) -> None:
    # Measured on 2.14 and 2.15 (tests/conformance: allow_batched-on, -off, -unset): both
    # directions in place, stored messages kept; unlike allow_msg_ttl it is not one-way.
    on = edit(BASE, "    max_bytes: 1GiB\n", "    max_bytes: 1GiB\n    allow_batched: true\n")
    off = edit(BASE, "    max_bytes: 1GiB\n", "    max_bytes: 1GiB\n    allow_batched: false\n")
    for n, (base, head) in enumerate([(BASE, on), (on, off), (on, BASE), (off, on)]):
        r = compare_from(tmp_path / str(n), base, head, environments=["dev"])
        c = only(r, "stream", "ORDERS", "dev")
        assert (c.infrastructure, [f.field for f in c.fields]) == ("safe", ["allow_batched"])


# --------------------------------------------------------------------------- the CLI


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["diff", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_exit_codes_follow_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path / "b", BASE)
    same = write(tmp_path / "s", BASE)
    lowered = write(
        tmp_path / "h", BASE.replace("ORDERS: {max_bytes: 50GiB}", "ORDERS: {max_bytes: 5GiB}")
    )
    assert run([str(base), str(same)], capsys)[0] == 0
    code, out, _ = run([str(base), str(lowered)], capsys)
    assert code == 2
    assert "[prod] stream ORDERS: update — destructive" in out
    assert "the gate FAILS" in out
    assert run([str(base), str(lowered), "--fail-on", "none"], capsys)[0] == 0
    assert run([str(base), str(lowered), "--env", "dev"], capsys)[0] == 0
    with pytest.raises(SystemExit) as exited:  # a usage error, as argparse reports it
        main(["diff", str(base), str(lowered), "--fail-on", "destructiv"])
    assert exited.value.code == 1
    assert "unknown level 'destructiv'" in capsys.readouterr().err


def test_cli_invalid_head_exits_1_with_validate_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write(tmp_path / "b", BASE)
    bad = write(
        tmp_path / "h",
        BASE.replace("retention: limits\n    max_bytes", "retention: limitz\n    max_bytes"),
    )
    code, _, err = run([str(base), str(bad)], capsys)
    assert code == 1
    assert f"{bad}:11:16: error: streams.ORDERS.retention:" in err
    assert "Traceback" not in err
    code, _, err = run([str(base), str(tmp_path / "missing.yaml")], capsys)
    assert code == 1 and "no such file" in err


def test_cli_unknown_environment_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write(tmp_path / "b", BASE)
    code, _, err = run([str(base), str(base), "--env", "prd"], capsys)
    assert code == 1
    assert "--env prd: not declared in BASE and HEAD (HEAD declares: dev, prod)" in err


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_ref_path_reads_the_topology_and_its_schemas_from_git(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / "topology").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo / "topology", BASE)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    # HEAD (the work tree) changes only the payload schema: the ref must bring its own.
    new = with_props(currency={"enum": ["GBP"]})
    (repo / "topology" / "schemas" / "order-placed.json").write_text(json.dumps(new))
    monkeypatch.chdir(repo)
    code, out, _ = run(["main:topology/topology.yaml", "topology/topology.yaml"], capsys)
    assert code == 2
    assert "schema order.placed: update — breaking for svc-orders" in out
    # ./path is relative to the current folder, as in git show
    monkeypatch.chdir(repo / "topology")
    code, out, _ = run(["main:./topology.yaml", "topology.yaml"], capsys)
    assert code == 2 and "values removed: ['EUR']" in out
    code, _, err = run(["nosuchref:topology/topology.yaml", "topology.yaml"], capsys)
    assert code == 1 and "git cat-file" in err and "Traceback" not in err


def test_ref_path_errors_name_the_ref(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / "topology").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(
        repo / "topology",
        BASE.replace("retention: limits\n    max_bytes", "retention: limitz\n    max_bytes"),
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "bad")
    write(repo / "topology", BASE)
    monkeypatch.chdir(repo)
    code, _, err = run(["main:topology/topology.yaml", "topology/topology.yaml"], capsys)
    assert code == 1
    assert "main:topology/topology.yaml:11:16: error: streams.ORDERS.retention" in err


DIFF_SCHEMA = Path(__file__).resolve().parent.parent / "bus_runtime" / "schema" / "diff.schema.json"


def test_json_output_follows_its_published_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write(tmp_path / "b", BASE)
    head = write(
        tmp_path / "h",
        BASE.replace("ORDERS: {max_bytes: 50GiB}", "ORDERS: {max_bytes: 5GiB}").replace(
            "publishers: [svc-orders]\n        schema",
            "publishers: [svc-orders, svc-mail]\n        schema",
        ),
        with_props(currency={"enum": ["GBP"]}),
    )
    code, out, _ = run([str(base), str(head), "--format", "json"], capsys)
    assert code == 2
    doc = json.loads(out)
    jsonschema.Draft202012Validator(json.loads(DIFF_SCHEMA.read_text())).validate(doc)
    assert doc["format"] == "natstopo.diff/v1"
    assert doc["gate"] == {
        "fail_on": ["replace", "destructive", "breaking"],
        "failed": True,
        "failing": 2,
    }
    kinds = [
        (c["kind"], c["environment"], c["infrastructure"], c["contract"]) for c in doc["changes"]
    ]
    assert kinds == [
        ("stream", "prod", "destructive", None),
        ("schema", None, None, "breaking"),
        ("permission", None, None, None),
    ]


def test_github_annotations_point_at_the_line_that_sets_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write(tmp_path / "b", BASE)
    text = BASE.replace("ORDERS: {max_bytes: 50GiB}", "ORDERS: {max_bytes: 5GiB}").replace(
        "      order.placed:\n        publishers: [svc-orders]",
        "      order.placed:\n        publishers: [svc-orders, svc-mail]",
    )
    head = write(tmp_path / "h", text)
    code, out, _ = run([str(base), str(head), "--format", "github"], capsys)
    assert code == 2
    lines = text.splitlines()
    annotations = [line for line in out.splitlines() if line.startswith("::")]
    assert len(annotations) == 2
    error, warning = annotations
    assert error.startswith(f"::error file={head},line=")
    line_no = int(error.split("line=")[1].split(",")[0])
    assert lines[line_no - 1].strip() == "ORDERS: {max_bytes: 5GiB}"
    assert "max_bytes: 50GiB -> 5GiB" in error
    assert warning.startswith("::warning ")
    line_no = int(warning.split("line=")[1].split(",")[0])
    assert lines[line_no - 1].strip() == "order.placed:"


def test_markdown_comment_lists_risky_changes_first_with_a_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write(tmp_path / "b", BASE)
    head = write(
        tmp_path / "h",
        BASE.replace("ORDERS: {max_bytes: 50GiB}", "ORDERS: {max_bytes: 5GiB}"),
        with_props(coupon={"type": "string"}),
    )
    code, out, _ = run([str(base), str(head), "--format", "markdown"], capsys)
    assert code == 2
    assert out.startswith("<!-- natstopo-diff -->\n")
    table = [
        line for line in out.splitlines() if line.startswith("| 🔴") or line.startswith("| 🟢")
    ]
    assert table[0].startswith("| 🔴 | update stream `ORDERS` | prod | destructive |")
    assert table[-1].startswith("| 🟢 | update schema `order.placed` |")
    assert "```mermaid\nflowchart LR\n" in out
    assert "class stream_ORDERS,topic_order_placed changed" in out


# --------------------------------------------------------------------------- found by trying to break it


INTEREST = edit(BASE, "  ORDERS:\n    retention: limits", "  ORDERS:\n    retention: interest")


def compare_from(tmp_path: Path, base_text: str, head_text: str, **kwargs: Any) -> Review:
    base = write(tmp_path / "base", base_text)
    head = write(tmp_path / "head", head_text)
    b, eb = load_every_environment(base)
    h, eh = load_every_environment(head)
    assert not eb and not eh, [str(e) for e in eb + eh]
    return review(b, h, base_label="base", head_label="head", **kwargs)


def test_narrowing_a_filter_on_an_interest_stream_is_destructive(tmp_path: Path) -> None:
    # The server deletes stored messages that no consumer's filter takes any more
    # (measured on 2.10 to 2.15: 4 of 8 lost when the only consumer narrowed).
    head = edit(INTEREST, "topics: [order.placed, order.cancelled]", "topics: [order.placed]")
    r = compare_from(tmp_path, INTEREST, head)
    c = only(r, "consumer", "ORDERS/billing-orders")
    assert c.infrastructure == "destructive"
    f = next(f for f in c.fields if f.field == "filter_subjects")
    assert "ORDERS.order.cancelled" in f.reason
    # ... but not when another consumer still takes the subject
    covered = edit(
        INTEREST,
        "topics: [order.placed, order.cancelled]",
        "topics: [order.placed]",
        "      mail-orders:\n        service: svc-mail\n        topics: [order.placed]",
        "      mail-orders:\n        service: svc-mail\n        topics: [order.placed, order.cancelled]",
    )
    r2 = compare_from(tmp_path / "2", INTEREST, covered)
    assert only(r2, "consumer", "ORDERS/billing-orders").infrastructure == "safe"
    # and on a limits stream it never deletes anything
    head3 = edit(BASE, "topics: [order.placed, order.cancelled]", "topics: [order.placed]")
    r3 = compare_from(tmp_path / "3", BASE, head3)
    assert only(r3, "consumer", "ORDERS/billing-orders").infrastructure == "safe"


def test_a_change_the_same_in_every_environment_is_reported_once(tmp_path: Path) -> None:
    head = edit(
        BASE, "      mail-orders:\n        service: svc-mail\n        topics: [order.placed]\n", ""
    )
    r = compare(tmp_path, head)
    deletes = [c for c in r.changes if c.kind == "consumer"]
    assert len(deletes) == 1
    assert deletes[0].environment is None
    assert (deletes[0].infrastructure, deletes[0].contract) == ("destructive", "breaking")


def test_an_environment_only_subject_prefix_is_a_contract_change_there(tmp_path: Path) -> None:
    head = edit(
        BASE,
        "      ORDERS: {max_bytes: 50GiB}",
        "      ORDERS: {max_bytes: 50GiB, subject_prefix: shop}",
    )
    r = compare(tmp_path, head)
    moved = [c for c in r.changes if c.kind == "topic" and c.environment == "prod"]
    assert {c.name for c in moved} == {"order.placed", "order.cancelled"}
    assert all(c.contract == "breaking" for c in moved)
    assert not [c for c in r.changes if c.kind == "topic" and c.environment == "dev"]


def test_adding_the_environments_block_still_compares_the_settings(tmp_path: Path) -> None:
    plain = BASE.split("environments:")[0]
    head = edit(
        plain,
        "    retention: limits\n    max_bytes: 1GiB",
        "    retention: limits\n    storage: memory\n    max_bytes: 1GiB",
    )
    head += "environments:\n  dev: {}\n"
    r = compare_from(tmp_path, plain, head)
    assert only(r, "stream", "ORDERS", "dev").infrastructure == "replace"
    assert only(r, "environment", "dev").action == "create"
    assert r.gate_failed


def test_writing_out_a_server_default_is_no_change(tmp_path: Path) -> None:
    head = edit(
        BASE,
        "    max_bytes: 1GiB\n",
        "    max_bytes: 1GiB\n    max_consumers: -1\n",
        "      mail-orders:\n        service: svc-mail\n",
        "      mail-orders:\n        service: svc-mail\n        max_waiting: 512\n        replay_policy: instant\n",
    )
    assert compare(tmp_path, head).changes == []


def test_headers_only_is_refused_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bus needs every body: a head turning headers_only on is invalid, not a change.
    head_text = edit(
        BASE,
        "      mail-orders:\n        service: svc-mail\n",
        "      mail-orders:\n        service: svc-mail\n        headers_only: true\n",
    )
    base = write(tmp_path / "b", BASE)
    head = write(tmp_path / "h", head_text)
    code, _, err = run([str(base), str(head)], capsys)
    line = head_text.splitlines().index("        headers_only: true") + 1
    assert code == 1, err
    assert f"{head}:{line}:" in err and "headers_only" in err, err


def test_a_server_version_below_2_10_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = write(tmp_path / "b", BASE)
    assert main(["diff", str(base), str(base), "--server-version", "1.0"]) == 1
    assert "supports nats-server 2.10 and newer" in capsys.readouterr().err


def test_locations_name_head_and_never_base_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # BASE has more lines than HEAD: a deleted stream must not point past HEAD's end.
    base_text = edit(
        BASE,
        "  DLQ:\n",
        "  AUDIT:\n    topics:\n      audit.logged: {publishers: [svc-orders]}\n  DLQ:\n",
    )
    base = write(tmp_path / "b", base_text)
    head = write(tmp_path / "h", BASE)
    code, out, _ = run([str(base), str(head), "--format", "github"], capsys)
    assert code == 2
    n = len(BASE.splitlines())
    for line in out.splitlines():
        if line.startswith("::"):
            assert int(line.split("line=")[1].split(",")[0]) <= n, line


def test_markdown_stays_under_github_s_comment_limit(tmp_path: Path) -> None:
    from bus_runtime.review.diff_render import render_markdown

    topics = "".join(f"      t{i}.happened: {{publishers: [svc-orders]}}\n" for i in range(400))
    base_text = edit(BASE, "  DLQ:\n", "  MANY:\n    topics:\n" + topics + "  DLQ:\n")
    head_text = edit(BASE, "  DLQ:\n", "  DLQ:\n")
    r = compare_from(tmp_path, base_text, head_text)
    text = render_markdown(r, None, limit=20_000)
    assert len(text) <= 20_000
    assert "changes are not listed here" in text
    assert len(render_markdown(r, None, limit=10**9)) > 20_000


def test_limits_to_interest_is_destructive_without_a_server(tmp_path: Path) -> None:
    # limits -> interest deletes what every consumer acked (and on 2.15, with no consumer,
    # everything): without live state the diff says the worst.
    r = compare_from(tmp_path, BASE, INTEREST, environments=["dev"])
    assert only(r, "stream", "ORDERS", "dev").infrastructure == "destructive"
    back = compare_from(tmp_path / "2", INTEREST, BASE, environments=["dev"])
    assert only(back, "stream", "ORDERS", "dev").infrastructure == "safe"


def test_max_consumers_follows_the_target_server_version(tmp_path: Path) -> None:
    head = edit(BASE, "    max_bytes: 1GiB\n", "    max_bytes: 1GiB\n    max_consumers: 10\n")
    old = compare_from(tmp_path, BASE, head, environments=["dev"])  # default: 2.10
    assert only(old, "stream", "ORDERS", "dev").infrastructure == "replace"
    new = compare_from(tmp_path / "2", BASE, head, environments=["dev"], server_version=(2, 14, 0))
    assert only(new, "stream", "ORDERS", "dev").infrastructure == "safe"


def test_a_lowered_limit_with_discard_new_deletes_nothing(tmp_path: Path) -> None:
    base = edit(BASE, "    max_bytes: 1GiB\n", "    max_bytes: 1GiB\n    discard: new\n")
    head = edit(base, "    max_bytes: 1GiB\n", "    max_bytes: 512MiB\n")
    r = compare_from(tmp_path, base, head, environments=["dev"])
    assert only(r, "stream", "ORDERS", "dev").infrastructure == "safe"

"""Permissions, the authorization text, credentials and violations, without a server.

What the server makes of them is tests/test_auth_server.py's; here: that each service's
lists follow from the topology and from nothing else, that no secret reaches a rendered
file or a message, and the parsing of what nats-py reports.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bus_runtime import load_topology
from bus_runtime._errors import PermissionViolationError, SetupError
from bus_runtime.security import (
    ADMIN,
    DLQ_OPERATOR,
    MONITOR,
    CredentialStore,
    PublicCredential,
    account_hash,
    all_permissions,
    connect_kwargs,
    jetstream_exports,
    permission_violation,
    read_env_file,
    render_authorization,
    service_permissions,
)
from bus_runtime.security.credentials import format_env_file
from bus_runtime.topology.subjects import subject_matches

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "topology" / "topology.yaml"
COST = 4


@pytest.fixture(scope="module")
def topology():  # type: ignore[no-untyped-def]
    return load_topology(SHIPPED, "dev")


def test_the_permissions_of_svc_ocr_as_rendered(topology) -> None:  # type: ignore[no-untyped-def]
    p = service_permissions(topology, "svc-ocr")
    assert p.publish == (
        "jobs.extract.requested",
        "tax.document.ocr_completed",
        "dlq.TAX_AGENT_JOBS.jobs.ocr.requested",
        "$NATSTOPO.API.STREAM.INFO.TAX_AGENT_JOBS",
        "$NATSTOPO.API.STREAM.INFO.TAX_AGENT_EVENTS",
        "$NATSTOPO.API.STREAM.INFO.TAX_AGENT_DLQ",
        "$NATSTOPO.API.CONSUMER.INFO.TAX_AGENT_JOBS.ocr-worker",
        "$NATSTOPO.API.CONSUMER.MSG.NEXT.TAX_AGENT_JOBS.ocr-worker",
        "$JS.ACK.TAX_AGENT_JOBS.ocr-worker.>",
        f"$JS.ACK._.{account_hash('tax-agent')}.TAX_AGENT_JOBS.ocr-worker.>",
    )
    assert p.subscribe == ("_INBOX.svc-ocr.>",)
    assert p.inbox_prefix == "_INBOX.svc-ocr"
    assert p.account == "tax-agent-svc-ocr" and p.api_prefix == "$NATSTOPO.API"
    # What it publishes in its own account is exactly what its account imports; the API
    # under the local prefix, everything else under its own name.
    assert tuple(i.local for i in p.imports) == p.publish
    for i in p.imports:
        if i.local.startswith("$NATSTOPO.API."):
            assert i.subject == "$JS.API." + i.local.removeprefix("$NATSTOPO.API.")
        else:
            assert i.subject == i.local
    assert [i.local for i in p.imports if i.stream_response] == [
        "$NATSTOPO.API.CONSUMER.MSG.NEXT.TAX_AGENT_JOBS.ocr-worker"
    ]


def test_the_jetstream_account_exports_each_import_to_its_importers_only(topology) -> None:  # type: ignore[no-untyped-def]
    perms = all_permissions(topology)
    exports = {e.subject: e for e in jetstream_exports(perms)}
    wanted: dict[str, set[str]] = {}
    for p in perms.values():
        for i in p.imports:
            wanted.setdefault(i.subject, set()).add(p.account)
    assert {s: set(e.accounts) for s, e in exports.items()} == wanted
    assert exports["tax.document.uploaded"].accounts == (
        "tax-agent-svc-ingestion",
        "tax-agent-svc-firm-connectors",
        "tax-agent-svc-rpa",
        "tax-agent-dlq-operator",  # a replay publishes on the original subject
    )
    assert perms[ADMIN].account == "tax-agent" and not perms[ADMIN].imports
    assert perms[MONITOR].account == "SYS"
    # Every identity has an account of its own: the admin JetStream's, the monitor SYS.
    accounts = [p.account for p in perms.values()]
    assert len(set(accounts)) == len(accounts)


def test_account_hash_is_the_servers() -> None:
    # Read from a 2.15 server's v2 ack subject for the global account `$G`; the shipped
    # account's hash is checked against a server in test_auth_server.py.
    assert account_hash("$G") == "szMpdrwD"


def test_a_domain_names_the_v2_acks(topology) -> None:  # type: ignore[no-untyped-def]
    p = service_permissions(topology, "svc-ocr", domain="hub")
    assert f"$JS.ACK.hub.{account_hash('tax-agent')}.TAX_AGENT_JOBS.ocr-worker.>" in p.publish


def test_every_service_gets_what_it_declares_and_nothing_of_another(topology) -> None:  # type: ignore[no-untyped-def]
    perms = all_permissions(topology)
    assert list(perms) == [s.name for s in topology.services] + [ADMIN, DLQ_OPERATOR, MONITOR]
    for svc in topology.services:
        p = perms[svc.name]
        data = [s for s in p.publish if not s.startswith("$") and not s.startswith("dlq.")]
        assert data == [t.subject for t in topology.topics_published_by(svc.name)]
        own = {(c.stream, c.name) for c in topology.consumers_of(svc.name)}
        for c in topology.consumers:
            uses = [s for s in p.publish if f".{c.stream}.{c.name}" in s]
            assert bool(uses) == ((c.stream, c.name) in own), (svc.name, c.name, uses)
        # No wildcard on the JetStream API: every API subject names one asset.
        for s in p.publish:
            if s.startswith("$NATSTOPO.API."):
                assert "*" not in s and ">" not in s, s
        assert p.subscribe == (f"_INBOX.{svc.name}.>",)
        # The dead letters it may write are those of its own consumers' subjects only.
        for s in (s for s in p.publish if s.startswith("dlq.")):
            origin = s.split(".")[1]
            original = s.split(".", 2)[2]
            assert any(
                c.stream == origin and any(subject_matches(f, original) for f in c.filter_subjects)
                for c in topology.consumers_of(svc.name)
            ), s


def test_the_admin_manages_and_never_reads(topology) -> None:  # type: ignore[no-untyped-def]
    p = all_permissions(topology)[ADMIN]
    forbidden = ("MSG.GET", "DIRECT", "MSG.NEXT", "PURGE", "MSG.DELETE", "SNAPSHOT", "$JS.ACK")
    assert not [s for s in p.publish if any(f in s for f in forbidden)]
    # every inbox of the JetStream account, where no service's inbox is
    assert p.subscribe == ("_INBOX.>",) and p.inbox_prefix == "_INBOX.admin"


def test_a_service_named_like_an_own_identity_is_refused(tmp_path: Path) -> None:
    text = (
        SHIPPED.read_text()
        .replace("  svc-audit:\n", "  admin:\n")
        .replace("service: svc-audit", "service: admin")
    )
    copy = tmp_path / "topology.yaml"
    copy.write_text(text)
    for schema in (REPO / "topology" / "schemas").iterdir():
        (tmp_path / "schemas").mkdir(exist_ok=True)
        (tmp_path / "schemas" / schema.name).write_text(schema.read_text())
    topo = load_topology(copy, "dev")
    with pytest.raises(SetupError, match="`admin` identity"):
        all_permissions(topo)


def _creds(topology, **override):  # type: ignore[no-untyped-def]
    h = "$2a$04$" + "a" * 53
    out = {i: [PublicCredential(i, f"{i}.1", h)] for i in all_permissions(topology)}
    out.update(override)
    return out


def test_render_refuses_a_plaintext_password_and_never_echoes_it(topology) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SetupError) as info:
        PublicCredential("svc-ocr", "svc-ocr.1", "hunter2-plaintext")
    assert "hunter2" not in str(info.value) and "bcrypt hash" in str(info.value)
    with pytest.raises(SetupError) as info:
        PublicCredential(
            "svc-ocr", nkey="SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"
        )
    assert "SUAIBD" not in str(info.value)


def test_render_needs_one_credential_per_identity_and_unique_ones(topology) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SetupError, match="no credentials for `svc-ocr`"):
        render_authorization(topology, _creds(topology, **{"svc-ocr": []}))
    with pytest.raises(SetupError, match="`svc-nobody`"):
        h = "$2a$04$" + "b" * 53
        render_authorization(
            topology, _creds(topology, **{"svc-nobody": [PublicCredential("svc-nobody", "x", h)]})
        )
    h = "$2a$04$" + "c" * 53
    dup = _creds(topology, **{"svc-kg": [PublicCredential("svc-kg", "svc-ocr.1", h)]})
    with pytest.raises(SetupError, match="share the credential"):
        render_authorization(topology, dup)


def test_the_rendered_file_holds_two_users_during_a_rotation(topology) -> None:  # type: ignore[no-untyped-def]
    h1, h2 = "$2a$04$" + "d" * 53, "$2b$11$" + "e" * 53
    creds = _creds(
        topology,
        **{
            "svc-ocr": [
                PublicCredential("svc-ocr", "svc-ocr.1", h1),
                PublicCredential("svc-ocr", "svc-ocr.2", h2),
            ]
        },
    )
    text = render_authorization(topology, creds)
    assert text.count('user: "svc-ocr.') == 2 and h1 in text and h2 in text
    assert 'system_account: "SYS"' in text and text.count("jetstream: enabled") == 1
    # both users in the service's own account
    block = text[text.index('"tax-agent-svc-ocr": {') :]
    block = block[: block.index("\n  }\n")]
    assert 'user: "svc-ocr.1"' in block and 'user: "svc-ocr.2"' in block


def test_the_store_writes_private_files_and_no_secret_where_it_should_not(
    topology, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    store = CredentialStore(tmp_path / "creds")
    result = store.render(topology, cost=COST)
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    files = list(store.directory.iterdir())
    assert {f.name for f in files} >= {"auth.conf", "identities.json", "admin.env", "monitor.env"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    secrets = [read_env_file(p)["NATS_PASSWORD"] for p in result.env_files.values()]
    assert len(set(secrets)) == len(secrets) == len(topology.services) + 3
    public = store.auth_path.read_text() + store.state_path.read_text()
    assert not [s for s in secrets if s in public]
    assert not [s for s in secrets if s in repr(result)]


def test_rendering_again_changes_nothing(topology, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = CredentialStore(tmp_path)
    store.render(topology, cost=COST)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    result = store.render(topology, cost=COST)
    assert not result.created and not result.rotated
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes


def test_rotate_then_retire(topology, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = CredentialStore(tmp_path)
    store.render(topology, cost=COST)
    old = read_env_file(store.env_path("svc-ocr"))
    result = store.render(topology, rotate=["svc-ocr"], cost=COST)
    assert result.rotated == ["svc-ocr"] and result.valid["svc-ocr"] == 2
    new = read_env_file(store.env_path("svc-ocr"))
    assert (old["NATS_USER"], new["NATS_USER"]) == ("svc-ocr.1", "svc-ocr.2")
    assert new["NATS_INBOX_PREFIX"] == old["NATS_INBOX_PREFIX"] == "_INBOX.svc-ocr"
    text = store.auth_path.read_text()
    assert 'user: "svc-ocr.1"' in text and 'user: "svc-ocr.2"' in text
    with pytest.raises(SetupError, match="two steps"):
        store.render(topology, rotate=["svc-kg"], retire=["svc-kg"], cost=COST)
    result = store.render(topology, retire=["svc-ocr"], cost=COST)
    assert result.retired == ["svc-ocr"] and result.valid["svc-ocr"] == 1
    text = store.auth_path.read_text()
    assert 'user: "svc-ocr.1"' not in text and 'user: "svc-ocr.2"' in text


def test_a_lost_secret_is_not_silently_replaced(topology, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = CredentialStore(tmp_path)
    store.render(topology, cost=COST)
    store.env_path("svc-kg").unlink()
    with pytest.raises(SetupError, match="--rotate svc-kg"):
        store.render(topology, cost=COST)
    assert store.render(topology, rotate=["svc-kg"], cost=COST).rotated == ["svc-kg"]


def test_the_server_url_goes_into_every_env_file(topology, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = CredentialStore(tmp_path)
    store.render(topology, cost=COST)
    secret = read_env_file(store.env_path("svc-kg"))["NATS_PASSWORD"]
    store.render(topology, cost=COST, server_url="nats://nats.dev:4222")
    values = read_env_file(store.env_path("svc-kg"))
    assert values["NATS_URL"] == "nats://nats.dev:4222" and values["NATS_PASSWORD"] == secret
    store.render(topology, cost=COST)  # kept when not given again
    assert read_env_file(store.env_path("svc-kg"))["NATS_URL"] == "nats://nats.dev:4222"


def test_connect_kwargs_precedence_and_inbox(tmp_path: Path) -> None:
    env_file = tmp_path / "svc.env"
    env_file.write_text(format_env_file({"NATS_USER": "from-file", "NATS_PASSWORD": "p-file"}))
    env = {"NATS_USER": "from-env", "NATS_PASSWORD": "p-env", "NATS_TOKEN": "t-env"}
    kw = connect_kwargs("svc-ocr", env=env, env_file=env_file)
    assert (kw["user"], kw["password"], kw["token"]) == ("from-file", "p-file", "t-env")
    assert kw["inbox_prefix"] == "_INBOX.svc-ocr"
    kw = connect_kwargs("svc-ocr", env=env, user="explicit", inbox_prefix="_INBOX.x")
    assert (kw["user"], kw["inbox_prefix"]) == ("explicit", "_INBOX.x")
    kw = connect_kwargs("svc-ocr", env={"NATS_INBOX_PREFIX": "_INBOX.custom"})
    assert kw == {"inbox_prefix": "_INBOX.custom"}
    assert connect_kwargs(env={}) == {}
    with pytest.raises(SetupError, match="unknown connect option"):
        connect_kwargs("svc-ocr", env={}, passwd="x")


def test_a_bad_env_file_line_is_named_not_shown(tmp_path: Path) -> None:
    f = tmp_path / "x.env"
    f.write_text("NATS_USER=a\nthis line holds s3cr3t-value\n")
    with pytest.raises(SetupError) as info:
        read_env_file(f)
    assert ":2: not a KEY=value line" in str(info.value) and "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "operation", "subject", "queue"),
    [
        (
            'nats: permissions violation for publish to "$js.api.info"',
            "publish",
            "$JS.API.INFO",
            None,
        ),
        (
            'nats: Permissions Violation for Subscription to "_INBOX.>"',
            "subscribe",
            "_INBOX.>",
            None,
        ),
        (
            'nats: permissions violation for subscription to "tax.>" using queue "q1"',
            "subscribe",
            "tax.>",
            "q1",
        ),
    ],
)
def test_permission_violations_are_read_with_subject_and_service(
    text: str, operation: str, subject: str, queue: str | None
) -> None:
    err = permission_violation(Exception(text), "svc-ocr", ["$JS.API.INFO", "_INBOX.>", "tax.>"])
    assert isinstance(err, PermissionViolationError)
    assert (err.operation, err.subject, err.service, err.queue) == (
        operation,
        subject,
        "svc-ocr",
        queue,
    )
    assert "svc-ocr" in str(err) and subject in str(err)
    assert err.__cause__ is not None


def test_other_errors_are_not_violations() -> None:
    assert permission_violation(Exception("nats: stale connection")) is None
    assert permission_violation("nats: 'Authorization Violation'") is None
    # Without candidates the subject is as nats-py reported it (lower-cased).
    err = permission_violation('permissions violation for publish to "$js.api.info"')
    assert err is not None and err.subject == "$js.api.info" and err.service is None

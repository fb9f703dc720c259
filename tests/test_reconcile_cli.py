"""`natstopo plan | apply | drift | import` through the CLI entry point: exit codes and output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from harness import NatsServer, free_port
from reconcile_helpers import SHIPPED, SHOP, connect, edit_consumer, edit_stream

from bus_runtime.cli.main import main

pytestmark = pytest.mark.nats


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def edit(url: str, stream: str, consumer: str | None = None, **changes: object) -> None:
    async def go() -> None:
        nc = await connect(url)
        try:
            if consumer:
                await edit_consumer(nc, stream, consumer, **changes)
            else:
                await edit_stream(nc, stream, **changes)
        finally:
            await nc.close()

    asyncio.run(go())


def test_plan_apply_drift_cycle(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    s = ["--server", nats_server.url, str(SHIPPED), "--env", "local"]
    code, out, _ = run(capsys, "plan", *s)
    assert code == 2
    assert "+ stream TAX_AGENT_EVENTS: create" in out
    assert "20 to create" in out

    code, out, _ = run(capsys, "apply", *s)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("+ stream TAX_AGENT_")  # streams run side by side
    assert lines[0].endswith("s)")
    assert "+ stream TAX_AGENT_JOBS created (" in out
    assert "+ consumer TAX_AGENT_EVENTS/audit-trail created (" in out
    assert lines[-1].startswith("Applied 20 change(s)")

    code, out, _ = run(capsys, "apply", *s)
    assert (code, out.startswith("No changes")) == (0, True)
    code, out, _ = run(capsys, "drift", *s)
    assert code == 0 and out.startswith("In sync")

    edit(nats_server.url, "TAX_AGENT_EVENTS", max_bytes=2 * 1024**3)
    edit(nats_server.url, "TAX_AGENT_EVENTS", "audit-trail", max_ack_pending=10)
    code, out, _ = run(capsys, "drift", *s)
    assert code == 2
    # The stream holds nothing: lowering its limit deletes nothing, so it is in place.
    assert "~ stream TAX_AGENT_EVENTS: update in place\n" in out
    assert "    max_bytes: 2GiB -> 1GiB\n" in out
    assert "max_ack_pending: 10 -> 5000" in out

    code, out, _ = run(capsys, "apply", *s)
    assert code == 0
    assert "~ stream TAX_AGENT_EVENTS updated (" in out
    assert "~ consumer TAX_AGENT_EVENTS/audit-trail updated (" in out
    assert run(capsys, "drift", *s)[0] == 0


def test_plan_json(nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "plan", "-s", nats_server.url, str(SHIPPED), "--env", "local", "--format", "json"
    )
    assert code == 2
    doc = json.loads(out)
    assert doc["topology"] == "tax-agent" and doc["has_changes"] is True
    assert doc["counts"]["create"] == 20
    first = doc["changes"][0]
    assert (first["kind"], first["stream"], first["action"]) == (
        "stream",
        "TAX_AGENT_JOBS",
        "create",
    )


def test_replace_refused_then_allowed(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = tmp_path / "before.yaml"
    before.write_text(SHOP)
    after = tmp_path / "after.yaml"
    after.write_text(SHOP.replace("storage: file", "storage: memory"))
    assert run(capsys, "apply", "-s", nats_server.url, str(before))[0] == 0
    code, out, _ = run(capsys, "plan", "-s", nats_server.url, str(after))
    assert code == 2
    assert "-/+ stream ORDERS: replace (delete and recreate)" in out
    assert "storage: file -> memory (replace: storage cannot change in place" in out
    code, out, err = run(capsys, "apply", "-s", nats_server.url, str(after))
    assert code == 2 and "refusing" in err
    code, out, _ = run(capsys, "apply", "-s", nats_server.url, str(after), "--allow-destructive")
    assert code == 0
    assert "-/+ stream ORDERS replaced (" in out
    assert "+ consumer ORDERS/billing created (" in out
    assert run(capsys, "drift", "-s", nats_server.url, str(after))[0] == 0


def test_import_writes_a_valid_topology(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "apply", "-s", nats_server.url, str(SHIPPED), "--env", "local")[0] == 0
    out_file = tmp_path / "imported.yaml"
    code, _, err = run(capsys, "import", "--server", nats_server.url, "-o", str(out_file))
    assert code == 0 and "3 streams, 17 consumers" in err
    assert run(capsys, "validate", str(out_file))[0] == 0
    code, out, _ = run(capsys, "plan", "-s", nats_server.url, str(out_file))
    assert code == 0, out
    code, out, _ = run(capsys, "import", "--server", nats_server.url)
    assert code == 0 and out.startswith("# Imported by `natstopo import`")


def test_nats_url_from_environment(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_URL", nats_server.url)
    code, out, _ = run(capsys, "plan", str(SHIPPED), "--env", "local")
    assert code == 2 and "20 to create" in out


def test_connection_refused_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "plan", "--server", url, str(SHIPPED), "--env", "local")
    assert code == 1
    assert out == ""
    assert err == f"natstopo plan: error: cannot connect to {url}: connection refused\n"


def test_invalid_topology_is_an_error_before_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SHOP.replace("retention: limits", "retention: workque"))
    url = f"nats://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "drift", "-s", url, str(bad))
    assert code == 1
    assert "retention" in err and "cannot connect" not in err


def test_server_refusal_is_one_line_with_its_code(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # More than the server's store (the harness's 1TB): a plan cannot see the server's
    # disk, the server refuses the create.
    path = tmp_path / "huge.yaml"
    path.write_text(SHOP.replace("max_bytes: 64MiB", "max_bytes: 2TiB"))
    code, _, err = run(capsys, "apply", "-s", nats_server.url, str(path))
    assert code == 1
    assert err.count("\n") == 1, err
    assert err.startswith("natstopo apply: error: stream ORDERS: create failed")
    assert "(err_code 10047)" in err


def test_plan_errors_are_one_line_each_at_their_place(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The base environment asks for 3 replicas; a single server cannot have them.
    code, out, err = run(capsys, "apply", "-s", nats_server.url, str(SHIPPED))
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 3  # one per stream
    assert all(ln.startswith(f"{SHIPPED}:29:") and ": error: streams." in ln for ln in lines)


def test_drift_names_missing_assets(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "drift", "-s", nats_server.url, str(SHIPPED), "--env", "local")
    assert code == 2
    assert "+ stream TAX_AGENT_DLQ: missing on the server" in out
    assert out.splitlines()[-1].startswith(
        "Drift for topology `tax-agent` (env local): 20 to create"
    )


def test_blocking_reconcile_helper(nats_server: NatsServer) -> None:
    from reconcile_helpers import shipped

    from bus_runtime.reconcile.apply import reconcile

    topology = shipped("local")
    dry = reconcile(nats_server.url, topology, apply=False)
    assert dry.plan.has_changes and not dry.changed
    lines: list[str] = []
    done = reconcile([nats_server.url], topology, progress=lines.append, concurrency=4)
    assert len(done.steps) == 20 == len(lines)
    again = reconcile(nats_server.url, topology)
    assert not again.changed and not again.plan.has_changes


async def test_blocking_helper_inside_an_event_loop(nats_server: NatsServer) -> None:
    from reconcile_helpers import shop

    from bus_runtime.reconcile.apply import reconcile

    result = reconcile(nats_server.url, shop())
    assert len(result.steps) == 5  # 2 streams, 3 consumers

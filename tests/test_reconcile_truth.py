"""The reconciler tells the truth: each example a new user hit (issue 9, "Why"), as a test
against real servers (2.10 and the newest) through the `natstopo` command line.

Each of these failed before the reconciler compared every field with the server's
defaults, classified changes by the measured rules and checked plans against the server.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from harness import NatsServer, free_port
from reconcile_helpers import SHIPPED, api, connect, consumer_config, stream_config

from bus_runtime import create_event_bus
from bus_runtime.cli.main import main

pytestmark = pytest.mark.nats
T = TypeVar("T")
MIB = 1024**2


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def on_server(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    async def go() -> T:
        nc = await connect(url)
        try:
            return await work(nc)
        finally:
            await nc.close()

    return asyncio.run(go())


def write(tmp_path: Path, text: str, name: str = "topology.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def version(server: NatsServer) -> tuple[int, int, int]:
    return server.binary.version


ORDERS = """\
version: 1
name: shop
services:
  svc-web: {}
  svc-mail: {}
streams:
  ORDERS:
    subject_prefix: orders
    retention: RETENTION
EXTRA    topics:
      created: {publishers: [svc-web]}
    consumers:
      mail:
        service: svc-mail
        topics: [created]
CONSUMER_EXTRA"""


def orders(retention: str = "limits", extra: str = "", consumer: str = "") -> str:
    return (
        ORDERS.replace("RETENTION", retention)
        .replace("CONSUMER_EXTRA", consumer)
        .replace("EXTRA", extra)
    )


async def publish_and_ack(nc: Any, count: int, ack: int) -> None:
    js = nc.jetstream()
    for i in range(count):
        await js.publish("orders.created", f"{i}".encode())
    if not ack:
        return
    sub = await js.pull_subscribe_bind("mail", "ORDERS")
    msgs = await sub.fetch(ack, timeout=5)
    for m in msgs:
        await m.ack_sync()
    await sub.unsubscribe()


async def messages(nc: Any, stream: str = "ORDERS") -> int:
    return int((await api(nc, f"STREAM.INFO.{stream}"))["state"]["messages"])


# --------------------------------------------------------------------------- data loss


def test_limits_to_interest_with_acked_messages_is_destructive(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = nats_server_each.url
    assert run(capsys, "apply", "-s", url, write(tmp_path, orders()))[0] == 0
    on_server(url, lambda nc: publish_and_ack(nc, 5, 5))
    interest = write(tmp_path, orders("interest"), "interest.yaml")
    code, out, _ = run(capsys, "plan", "-s", url, interest)
    assert code == 2
    assert "retention: limits -> interest (destructive: interest retention drops" in out
    assert "consumer `mail` acknowledged stored messages" in out
    code, _, err = run(capsys, "apply", "-s", url, interest)
    assert code == 2 and "--allow-destructive" in err
    assert on_server(url, messages) == 5  # nothing was changed
    assert run(capsys, "apply", "-s", url, interest, "--allow-destructive")[0] == 0
    assert on_server(url, messages) == 0  # what the plan said would happen


def test_limits_to_interest_keeps_what_a_consumer_still_holds(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = nats_server_each.url
    assert run(capsys, "apply", "-s", url, write(tmp_path, orders()))[0] == 0
    on_server(url, lambda nc: publish_and_ack(nc, 5, 0))
    code, out, _ = run(capsys, "apply", "-s", url, write(tmp_path, orders("interest"), "i.yaml"))
    assert code == 0, out
    assert on_server(url, messages) == 5


def test_max_consumers_change_by_server_version(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = nats_server_each.url
    ten = write(tmp_path, orders(extra="    max_consumers: 10\n"), "ten.yaml")
    twenty = write(tmp_path, orders(extra="    max_consumers: 20\n"), "twenty.yaml")
    assert run(capsys, "apply", "-s", url, ten)[0] == 0
    on_server(url, lambda nc: publish_and_ack(nc, 3, 0))
    code, out, _ = run(capsys, "plan", "-s", url, twenty)
    assert code == 2
    if version(nats_server_each) >= (2, 12, 0):
        assert "~ stream ORDERS: update in place" in out
        assert "max_consumers: 10 -> 20\n" in out
        assert run(capsys, "apply", "-s", url, twenty)[0] == 0
        assert on_server(url, messages) == 3
        assert on_server(url, lambda nc: stream_config(nc, "ORDERS"))["max_consumers"] == 20
    else:
        assert "-/+ stream ORDERS: replace" in out
        assert "max_consumers cannot change in place" in out


# --------------------------------------------------------------------------- convergence


ZEROS = "    max_consumers: 0\n    max_bytes: 0\n    max_msgs: 0\n    max_msg_size: 0\n"


def test_zero_limits_converge_and_do_not_block_the_runtime(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = nats_server_each.url
    path = write(tmp_path, orders(extra=ZEROS))
    assert run(capsys, "apply", "-s", url, path)[0] == 0
    code, out, _ = run(capsys, "plan", "-s", url, path)
    assert (code, out.startswith("No changes")) == (0, True), out
    cfg = on_server(url, lambda nc: stream_config(nc, "ORDERS"))
    assert [cfg[k] for k in ("max_consumers", "max_bytes", "max_msgs", "max_msg_size")] == [-1] * 4

    async def start_bus() -> None:
        bus = create_event_bus("nats", servers=url, topology=path, service="svc-mail")
        await bus.start()  # the start-up check raises when the server differs
        await bus.stop()

    asyncio.run(start_bus())


# --------------------------------------------------------------------------- removed settings


def test_removing_a_backoff_resets_it(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = nats_server_each.url
    backoff = "        max_deliver: 5\n        backoff: [1m, 5m]\n"
    with_backoff = write(tmp_path, orders(consumer=backoff), "with.yaml")
    without = write(tmp_path, orders(consumer="        max_deliver: 5\n"), "without.yaml")
    assert run(capsys, "apply", "-s", url, with_backoff)[0] == 0
    code, out, _ = run(capsys, "plan", "-s", url, without)
    assert code == 2
    assert "ack_wait: 1m -> 30s" in out and "backoff: [1m, 5m] -> []" in out
    assert run(capsys, "apply", "-s", url, without)[0] == 0
    cfg = on_server(url, lambda nc: consumer_config(nc, "ORDERS", "mail"))
    assert not cfg.get("backoff") and cfg["ack_wait"] == 30 * 10**9
    assert run(capsys, "drift", "-s", url, without)[0] == 0


STREAM_SETTINGS = (
    "    max_age: 1d\n    max_bytes: 64MiB\n    max_msgs: 1000\n    compression: s2\n"
    "    description: the orders\n"
)


def test_removing_stream_settings_resets_them(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = nats_server_each.url
    assert run(capsys, "apply", "-s", url, write(tmp_path, orders(extra=STREAM_SETTINGS)))[0] == 0
    bare = write(tmp_path, orders(), "bare.yaml")
    code, out, _ = run(capsys, "plan", "-s", url, bare)
    assert code == 2, out
    for line in (
        "max_age: 1d -> 0",
        "max_bytes: 64MiB -> unlimited",
        "max_msgs: 1000 -> -1",
        "compression: s2 -> none",
        "description: the orders -> -",
    ):
        assert line in out
    assert run(capsys, "apply", "-s", url, bare)[0] == 0
    cfg = on_server(url, lambda nc: stream_config(nc, "ORDERS"))
    assert (cfg["max_age"], cfg["max_bytes"], cfg["max_msgs"]) == (0, -1, -1)
    assert cfg.get("compression", "none") == "none" and not cfg.get("description")
    assert run(capsys, "drift", "-s", url, bare)[0] == 0


def test_out_of_band_settings_are_drift(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = nats_server_each.url
    path = write(tmp_path, orders())
    assert run(capsys, "apply", "-s", url, path)[0] == 0

    async def edit(nc: Any) -> None:
        cfg = await stream_config(nc, "ORDERS")
        cfg.update(max_msgs_per_subject=5, deny_delete=True)
        await api(nc, "STREAM.UPDATE.ORDERS", cfg)

    on_server(url, edit)
    code, out, _ = run(capsys, "drift", "-s", url, path)
    assert code == 2
    assert "max_msgs_per_subject: 5 -> -1" in out
    assert "deny_delete: true -> false (replace: deny_delete cannot be turned off" in out


# --------------------------------------------------------------------------- plan sees conflicts


def test_unmanaged_overlapping_stream_is_a_plan_error(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = nats_server_each.url
    on_server(
        url,
        lambda nc: api(nc, "STREAM.CREATE.LEGACY", {"name": "LEGACY", "subjects": ["orders.>"]}),
    )
    path = write(tmp_path, orders())
    code, out, _ = run(capsys, "plan", "-s", url, path)
    assert code == 1
    assert re.search(
        r"topology\.yaml:\d+:\d+: error: streams\.ORDERS: subject `orders\.created` overlaps "
        r"subject `orders\.>` of stream `LEGACY` on the server \(not managed by natstopo\)",
        out,
    ), out
    code, _, err = run(capsys, "apply", "-s", url, path)
    assert code == 1 and "LEGACY" in err
    names = on_server(url, lambda nc: api(nc, "STREAM.NAMES"))["streams"]
    assert names == ["LEGACY"]  # apply did not start


def test_prod_replicas_on_a_single_server_is_a_plan_error(
    nats_server_each: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = nats_server_each.url
    code, out, _ = run(capsys, "plan", "-s", url, str(SHIPPED), "--env", "prod")
    assert code == 1
    line = next(ln for ln in out.splitlines() if "TAX_AGENT_JOBS.replicas" in ln)
    # The place that sets replicas 3: the file's stream defaults.
    want = f"{SHIPPED}:29:"
    assert line.startswith(want) and "3 replicas, but the server is a single server" in line
    code, _, err = run(capsys, "apply", "-s", url, str(SHIPPED), "--env", "prod")
    assert code == 1
    assert all(ln.startswith(f"{SHIPPED}:29:") for ln in err.strip().splitlines()), err
    assert on_server(url, lambda nc: api(nc, "STREAM.NAMES"))["streams"] in (None, [])


# --------------------------------------------------------------------------- connections


def test_password_in_the_url_is_never_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://alice:s3cret-pw@127.0.0.1:{free_port()}"
    for command in ("plan", "drift", "apply"):
        code, out, err = run(capsys, command, "-s", url, str(SHIPPED), "--env", "local")
        assert code == 1
        assert "s3cret-pw" not in out + err
        assert "nats://alice:***@127.0.0.1" in err
    code, out, err = run(capsys, "import", "-s", url)
    assert code == 1 and "s3cret-pw" not in out + err


def test_tls_options_refuse_a_server_without_tls(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ca = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    plain = nats_server.url
    tls_url = plain.replace("nats://", "tls://")
    for argv in (["-s", tls_url], ["-s", plain, "--tls-ca", str(ca)]):
        code, out, err = run(capsys, "plan", *argv, str(SHIPPED), "--env", "local")
        assert code == 1, out
        assert "TLS is required" in err and "does not offer TLS" in err, err
        assert err.count("\n") == 1


def test_tls_url_with_password_against_plain_server_sends_no_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The password must not leave the machine in the clear: the client stops at INFO."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        info = {"server_id": "x", "version": "2.10.26", "proto": 1, "max_payload": 1048576}
        conn.sendall(f"INFO {json.dumps(info)}\r\n".encode())
        conn.settimeout(2)
        try:
            while chunk := conn.recv(4096):
                seen.append(chunk)
        except OSError:
            pass
        conn.close()

    import threading

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    url = f"tls://alice:s3cret-pw@127.0.0.1:{port}"
    code, _, err = run(capsys, "plan", "-s", url, "--connect-timeout", "1", str(SHIPPED))
    listener.close()
    t.join(5)
    assert code == 1 and "does not offer TLS" in err
    assert b"s3cret-pw" not in b"".join(seen)

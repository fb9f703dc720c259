"""Connection options of the reconciler's commands: user/password, token, TLS, failures."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import NatsServer, available_servers, make_test_pki
from reconcile_helpers import SHIPPED

from bus_runtime.cli.main import main

pytestmark = pytest.mark.nats


def server_with(tmp_path: Path, conf: str) -> Iterator[NatsServer]:
    store = tmp_path / "store"
    store.mkdir()
    server = NatsServer(available_servers()[-1], "secured", store, extra_conf=conf)
    try:
        server.start()
        server.wait_jetstream()
        yield server
    finally:
        server.stop()


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from server_with(tmp_path, "authorization { user: alice, password: s3cret }")


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from server_with(tmp_path, "authorization { token: t0ken }")


def plan(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["plan", str(SHIPPED), "--env", "local", *argv])
    return code, capsys.readouterr().err


def test_user_password(password_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = password_server.url
    assert plan(capsys, "-s", url, "--user", "alice", "--password", "s3cret")[0] == 2
    code, err = plan(capsys, "-s", url, "--user", "alice", "--password", "wrong")
    assert code == 1
    assert err == (
        f"natstopo plan: error: cannot connect to {url}: authorization failed "
        "(check user/password, token or credentials)\n"
    )


def test_token_from_environment(
    token_server: NatsServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_URL", token_server.url)
    assert plan(capsys)[0] == 1
    monkeypatch.setenv("NATS_TOKEN", "t0ken")
    assert plan(capsys)[0] == 2


def test_silent_server_times_out_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        code, err = plan(capsys, "-s", f"127.0.0.1:{port}", "--connect-timeout", "0.5")
    finally:
        listener.close()
        for s in held:
            s.close()
    assert code == 1
    assert err == (
        f"natstopo plan: error: cannot connect to nats://127.0.0.1:{port}: no answer within 0.5s\n"
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mutual_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    make_test_pki(d)
    conf = (
        f'tls {{ cert_file: "{d}/server.pem", key_file: "{d}/server.key", '
        f'ca_file: "{d}/ca.pem", verify: true }}'
    )
    servers = server_with(tmp_path, conf)
    server = next(servers)
    try:
        url = f"tls://127.0.0.1:{server.port}"
        tls = ["--tls-ca", f"{d}/ca.pem", "--tls-cert", f"{d}/client.pem"]
        code, err = plan(capsys, "-s", url, *tls, "--tls-key", f"{d}/client.key")
        assert code == 2, err
        code, err = plan(capsys, "-s", url, "--tls-ca", f"{d}/ca.pem")  # no client cert
        assert code == 1 and err.count("\n") == 1, err
        assert f"cannot connect to {url}: TLS handshake failed" in err
    finally:
        servers.close()


def test_missing_credentials_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = plan(capsys, "-s", "nats://127.0.0.1:1", "--creds", "/no/such.creds")
    assert code == 1
    assert err == (
        "natstopo plan: error: cannot connect to nats://127.0.0.1:1: "
        "credentials file /no/such.creds not found\n"
    )


def test_server_without_jetstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness import free_port

    port = free_port()
    binary = available_servers()[-1].path
    proc = subprocess.Popen(
        [str(binary), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            threading.Event().wait(0.05)
        code, err = plan(capsys, "-s", f"nats://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)
    assert code == 1
    assert err.startswith("natstopo plan: error: JetStream is not enabled on the server")
    assert err.count("\n") == 1


def test_an_api_prefix_nothing_answers_says_what_to_check(
    password_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A service account's imports that do not reach JetStream (another topology's
    authorization, an account a reload added): not "JetStream is not enabled"."""
    url = password_server.url
    creds = ("--user", "alice", "--password", "s3cret")
    code, err = plan(capsys, "-s", url, *creds, "--js-api-prefix", "$NATSTOPO.API")
    assert code == 1
    assert err.startswith("natstopo plan: error: no responder for $NATSTOPO.API.STREAM."), err
    assert "imports of $NATSTOPO.API do not reach JetStream" in err
    assert "needs a server restart" in err and err.count("\n") == 1

"""TLS of the client and route listeners (`natstopo:cluster.tls`): the objects under Pulumi's
mocks (Kubernetes' schemas for built-ins, cert-manager's CRD validators for its kinds), and
the generated nats.conf run by a real 3-node cluster (2.10 and the newest) with certificates
made here by `cryptography`, as cert-manager would write them (tls.crt, tls.key, ca.crt).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import ServerBinary, available_servers, free_port
from program_mocks import StackRun, run_stack
from schemas import validate_cert_manager, validate_kubernetes

from nats_conf import TlsFiles, nats_conf_for_cluster, on_this_machine, render_nats_conf
from stack_settings import read_settings, read_stack_file

REPO = Path(__file__).resolve().parents[2]
ALL = available_servers()
SERVERS = sorted({ALL[0], ALL[-1]}) if ALL else []
TLS_ON = {"natstopo:cluster": None}  # replaced per test: the stack's cluster plus tls


def _ids(binaries: list[ServerBinary]) -> list[str]:
    return [".".join(map(str, b.version)) for b in binaries]


def with_tls(stack: str, tls: dict[str, Any]) -> dict[str, Any]:
    cluster = dict(read_stack_file(REPO / f"Pulumi.{stack}.yaml")["natstopo:cluster"])
    cluster["tls"] = tls
    return {"natstopo:cluster": cluster}


def run(stack: str, tls: dict[str, Any]) -> StackRun:
    result = run_stack(stack, with_tls(stack, tls))
    assert result.error is None, result.error
    return result


def test_cert_manager_makes_a_ca_and_the_client_and_route_certificates(
    loop: asyncio.AbstractEventLoop,
) -> None:
    result = run("prod", {"enabled": True, "certManager": {"enabled": True}})
    objects = result.kube_objects()
    cm = [o for o in objects if o["apiVersion"] == "cert-manager.io/v1"]
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in cm}
    assert sorted(by_name) == [
        ("Certificate", "nats-ca"),
        ("Certificate", "nats-client-tls"),
        ("Certificate", "nats-route-tls"),
        ("Issuer", "nats-ca"),
        ("Issuer", "nats-selfsigned"),
    ]
    reports = validate_cert_manager(cm)
    assert all(r["valid"] for r in reports), reports
    # The checker can fail: a usage cert-manager does not know, a key algorithm it has not.
    broken = json.loads(json.dumps(by_name[("Certificate", "nats-client-tls")]))
    broken["spec"]["usages"] = ["server-auth"]
    broken["spec"]["privateKey"]["algorithm"] = "DSA"
    [report] = validate_cert_manager([broken])
    assert not report["valid"] and "usages" in report["error"]

    ca_cert = by_name[("Certificate", "nats-ca")]["spec"]
    assert ca_cert["isCA"] is True
    assert by_name[("Issuer", "nats-ca")]["spec"] == {"ca": {"secretName": ca_cert["secretName"]}}
    client = by_name[("Certificate", "nats-client-tls")]["spec"]
    route = by_name[("Certificate", "nats-route-tls")]["spec"]
    for spec in (client, route):
        assert spec["issuerRef"] == {
            "kind": "Issuer",
            "name": "nats-ca",
            "group": "cert-manager.io",
        }
        assert set(spec) == {
            "secretName",
            "dnsNames",
            "usages",
            "duration",
            "renewBefore",
            "privateKey",
            "issuerRef",
        }
    assert client["secretName"] == "nats-client-tls" and route["secretName"] == "nats-route-tls"
    # The client URL's host, and every route URL's host, are names of the certificates.
    settings = read_settings(
        {k: v for k, v in with_tls("prod", {"enabled": True}).items()}
        | {
            k: v
            for k, v in read_stack_file(REPO / "Pulumi.prod.yaml").items()
            if k != "natstopo:cluster"
        },
        "prod",
        REPO,
    )
    assert settings.client_url.split("//")[1].split(":")[0] in client["dnsNames"]
    conf = nats_conf_for_cluster(settings.cluster)
    for url in conf.routes:
        host = url.split("//")[1].split(":")[0]
        _first, rest = host.split(".", 1)
        assert f"*.{rest}" in route["dnsNames"], (host, route["dnsNames"])
    assert "client auth" in route["usages"] and "server auth" in route["usages"]

    # The pods mount both Secrets; the reloader watches the files; nats.conf uses them.
    custom = ("cert-manager.io/", "jetstream.nats.io/", "monitoring.coreos.com/")
    for obj in objects:
        if not obj["apiVersion"].startswith(custom):
            validate_kubernetes(obj)
    [sts] = [o for o in objects if o["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["client-tls"]["secret"]["secretName"] == "nats-client-tls"
    assert volumes["route-tls"]["secret"]["secretName"] == "nats-route-tls"
    containers = {c["name"]: c for c in pod["containers"]}
    mounts = {m["mountPath"]: m["name"] for m in containers["nats"]["volumeMounts"]}
    assert mounts["/etc/nats-certs/client"] == "client-tls"
    assert mounts["/etc/nats-certs/route"] == "route-tls"
    watched = containers["reloader"]["args"]
    assert (
        "/etc/nats-certs/route/tls.crt" in watched and "/etc/nats-certs/client/tls.key" in watched
    )
    [config_map] = [o for o in objects if o["metadata"]["name"] == "nats-config"]
    text = config_map["data"]["nats.conf"]
    assert 'cert_file: "/etc/nats-certs/client/tls.crt"' in text
    assert 'ca_file: "/etc/nats-certs/route/ca.crt"' in text and "verify: true" in text


def test_an_issuer_of_the_cluster_is_used_as_it_is(loop: asyncio.AbstractEventLoop) -> None:
    result = run(
        "staging",
        {
            "enabled": True,
            "clientSecret": "tax-nats-tls",
            "certManager": {"enabled": True, "issuer": {"kind": "ClusterIssuer", "name": "corp"}},
        },
    )
    cm = [o for o in result.kube_objects() if o["apiVersion"] == "cert-manager.io/v1"]
    assert sorted(o["metadata"]["name"] for o in cm) == ["nats-client-tls", "nats-route-tls"]
    assert all(r["valid"] for r in validate_cert_manager(cm))
    for obj in cm:
        assert obj["spec"]["issuerRef"] == {
            "kind": "ClusterIssuer",
            "name": "corp",
            "group": "cert-manager.io",
        }
    assert {o["spec"]["secretName"] for o in cm} == {"tax-nats-tls", "nats-route-tls"}


def test_tls_from_secrets_made_elsewhere_makes_no_certificate(
    loop: asyncio.AbstractEventLoop,
) -> None:
    result = run("prod", {"enabled": True})
    kinds = {o["apiVersion"] for o in result.kube_objects()}
    assert "cert-manager.io/v1" not in kinds
    [sts] = [o for o in result.kube_objects() if o["kind"] == "StatefulSet"]
    names = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert {"client-tls", "route-tls"} <= names


@pytest.mark.parametrize(
    ("tls", "says"),
    [
        ({"certManager": {"enabled": True}}, "natstopo:cluster.tls.certManager.enabled: needs"),
        (
            {"enabled": True, "certManager": {"enabled": True, "issuer": {"kind": "Vault"}}},
            "'Vault' is not Issuer or ClusterIssuer",
        ),
        (
            {"enabled": True, "certManager": {"enabled": True, "duration": "90d"}},
            "'90d' is not a Go duration",
        ),
        ({"enabled": True, "clientSecret": "Not_A_Name"}, "is not a Secret name"),
        ({"enabled": True, "verify": True}, "natstopo:cluster.tls.verify: unknown key"),
    ],
)
def test_bad_tls_settings_are_refused_with_the_key(
    tls: dict[str, Any], says: str, loop: asyncio.AbstractEventLoop
) -> None:
    result = run_stack("prod", with_tls("prod", tls))
    assert result.error is not None and says in str(result.error)
    assert not result.kube_objects()


# --------------------------------------------------------------------------- real servers


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def write_secret(
    folder: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], client_auth: bool
) -> TlsFiles:
    """tls.crt, tls.key, ca.crt for 127.0.0.1 and localhost, as cert-manager writes them."""
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    folder.mkdir(parents=True)
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(_pem(key))
    (folder / "ca.crt").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    return TlsFiles.in_folder(str(folder))


def _peers(http_port: int) -> set[str]:
    """The servers a node has routes to (num_routes counts pooled connections instead)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/routez", timeout=1) as r:
            return {str(x.get("remote_name")) for x in json.loads(r.read())["routes"] or []}
    except OSError:
        return set()


def _info(port: int) -> dict[str, Any]:
    """The INFO a listener sends first, before any TLS."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        line = sock.makefile("rb").readline().decode()
    assert line.startswith("INFO "), line
    info: dict[str, Any] = json.loads(line[5:])
    return info


def _route_errors(log: Path) -> str:
    lines = log.read_text(errors="replace").lower().splitlines()
    return "\n".join(
        line for line in lines if "route" in line and ("[err]" in line or "error" in line)
    )


async def _tls_round_trip(url: str, ca_file: str) -> bytes:
    ctx = ssl.create_default_context(cafile=ca_file)
    nc = await nats.connect([url], tls=ctx, connect_timeout=5, allow_reconnect=False)
    try:
        sub = await nc.subscribe("tls.check")
        await nc.publish("tls.check", b"over tls")
        msg = await sub.next_msg(timeout=5)
        return bytes(msg.data)
    finally:
        await nc.close()


async def _refused(url: str, ctx: ssl.SSLContext | None) -> str:
    try:
        nc = await nats.connect(
            [url], tls=ctx, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=1
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await nc.close()
    return ""


def _start_node(binary: ServerBinary, folder: Path, conf: Any) -> tuple[Any, Any]:
    (folder / "nats.conf").write_text(render_nats_conf(conf))
    log = open(folder / "log", "wb")  # noqa: SIM115 - closed by _stop
    proc = subprocess.Popen(
        [str(binary.path), "--config", str(folder / "nats.conf")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SERVER_NAME": folder.name},
    )
    return proc, log


def _stop(procs: list[tuple[Any, Any]]) -> None:
    for proc, _log in procs:
        proc.terminate()
    for proc, log in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    procs.clear()


def _start_cluster(
    binary: ServerBinary,
    base: Any,
    tmp_path: Path,
    client_tls: TlsFiles,
    route_tls: TlsFiles,
    procs: list[tuple[Any, Any]],
    attempts: int = 3,
) -> list[tuple[int, int, int]]:
    """Three servers from `base` with only ports, folders and certificate paths changed, their
    routes formed. Ports are picked free a moment before the servers bind them; a port taken
    in between (other tests run beside) starts the cluster again on new ones."""
    for attempt in range(attempts):
        ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
        for i, (client, http, route) in enumerate(ports):
            folder = tmp_path / f"attempt-{attempt}" / f"nats-{i}"
            folder.mkdir(parents=True)
            conf = on_this_machine(
                base,
                name=f"nats-{i}",
                client_port=client,
                http_port=http,
                cluster_port=route,
                route_ports=tuple(p[2] for p in ports),
                folder=str(folder),
            )
            # Only the certificates' paths change, as the pod's mounts would put them.
            procs.append(
                _start_node(
                    binary, folder, dataclasses.replace(conf, tls=client_tls, route_tls=route_tls)
                )
            )
        deadline = time.monotonic() + 30
        taken = False
        names = {f"nats-{i}" for i in range(3)}
        while any(_peers(h) != names - {f"nats-{i}"} for i, (_, h, _) in enumerate(ports)):
            for i, (proc, _) in enumerate(procs):
                if proc.poll() is not None:
                    text = (tmp_path / f"attempt-{attempt}" / f"nats-{i}" / "log").read_text()
                    assert "address already in use" in text, text
                    taken = True
            if taken:
                break
            assert time.monotonic() < deadline, [_peers(h) for _, h, _ in ports]
            time.sleep(0.2)
        if not taken:
            return ports
        _stop(procs)
    raise AssertionError(f"ports taken by other processes {attempts} times")


@pytest.mark.nats
@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("binary", SERVERS, ids=_ids(SERVERS))
def test_the_generated_conf_runs_a_cluster_over_tls(
    binary: ServerBinary, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    settings = read_settings(
        {**read_stack_file(REPO / "Pulumi.prod.yaml"), **with_tls("prod", {"enabled": True})},
        "prod",
        REPO,
    )
    base = nats_conf_for_cluster(settings.cluster)
    assert base.tls is not None and base.route_tls is not None
    ca = make_ca("natstopo test CA")
    client_tls = write_secret(tmp_path / "client-tls", ca, client_auth=False)
    route_tls = write_secret(tmp_path / "route-tls", ca, client_auth=True)
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    try:
        ports = _start_cluster(binary, base, tmp_path, client_tls, route_tls, procs)
        # The client listener requires TLS (its INFO, sent before anything, says so).
        assert _info(ports[0][0])["tls_required"] is True
        # A server whose route certificate comes from another CA does not join: the others
        # refuse its handshake (verify), as its log says, and keep their two routes.
        other = make_ca("another CA")
        intruder = tmp_path / "intruder"
        foreign = write_secret(intruder / "route-tls", other, client_auth=True)
        i_ports = (free_port(), free_port(), free_port())
        conf = on_this_machine(
            base,
            name="intruder",
            client_port=i_ports[0],
            http_port=i_ports[1],
            cluster_port=i_ports[2],
            route_ports=tuple(p[2] for p in ports),
            folder=str(intruder),
        )
        procs.append(
            _start_node(
                binary, intruder, dataclasses.replace(conf, tls=client_tls, route_tls=foreign)
            )
        )
        deadline = time.monotonic() + 20
        while "tls" not in _route_errors(intruder / "log"):
            assert procs[-1][0].poll() is None, (intruder / "log").read_text()
            assert time.monotonic() < deadline, (intruder / "log").read_text()
            time.sleep(0.2)
        members = {f"nats-{i}" for i in range(3)}
        assert all(_peers(http) <= members for _, http, _ in ports)
        assert _peers(i_ports[1]) == set()
        url = f"nats://127.0.0.1:{ports[1][0]}"
        assert loop.run_until_complete(_tls_round_trip(url, client_tls.ca)) == b"over tls"
        # A client without TLS, or that trusts another CA, gets nowhere.
        assert loop.run_until_complete(_refused(url, None))
        other_file = tmp_path / "other-ca.crt"
        other_file.write_bytes(other[0].public_bytes(serialization.Encoding.PEM))
        refused = loop.run_until_complete(
            _refused(url, ssl.create_default_context(cafile=str(other_file)))
        )
        assert "certificate verify failed" in refused.lower() or "ssl" in refused.lower()
    finally:
        _stop(procs)

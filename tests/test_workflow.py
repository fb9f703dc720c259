"""The pull-request workflow: actionlint accepts it, and the natstopo commands it runs work.

actionlint is built from Go modules by tools/go-tools/build.sh (`make go-tools`); the test
skips with the reason when it is absent, and fails instead under NATSTOPO_REQUIRE_TOOLS=1
(which .ci/run sets).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "topology-review.yml"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    done = subprocess.run(
        ["bash", str(REPO / "tools" / "go-tools" / "build.sh"), "--locate"],
        capture_output=True,
        text=True,
        check=False,
    )
    binary = (
        Path(done.stdout.strip().splitlines()[-1]) / "actionlint" if done.returncode == 0 else None
    )
    if binary is None or not binary.is_file():
        reason = "actionlint is not built: run `make go-tools`"
        if os.environ.get("NATSTOPO_REQUIRE_TOOLS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def lint(actionlint: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(actionlint), "-no-color", "-oneline", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=path.parent,
    )


def test_actionlint_accepts_the_workflow(actionlint: Path) -> None:
    done = lint(actionlint, WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_refuses_a_broken_copy(actionlint: Path, tmp_path: Path) -> None:
    broken = WORKFLOW.read_text().replace("${{ github.base_ref }}", "${{ github.base_reff }}", 1)
    broken = broken.replace(
        "runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    timeout-minutes: soon", 1
    )
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    path = tmp_path / ".github" / "workflows" / "broken.yml"
    path.write_text(broken)
    done = lint(actionlint, path)
    assert done.returncode == 1
    assert "base_reff" in done.stdout
    assert "expecting a single ${{...}} expression or float number literal" in done.stdout


def _diff_commands() -> list[list[str]]:
    """The `natstopo diff` command lines of the workflow, with $BASE_REF as `main`."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    runs = [s.get("run", "") for s in doc["jobs"]["review"]["steps"]]
    script = "\n".join(runs).replace("\\\n", " ")
    out = []
    for line in script.splitlines():
        line = line.strip()
        if line.startswith("natstopo diff"):
            line = line.split(">", 1)[0].replace("${BASE_REF}", "main")
            out.append(shlex.split(line)[2:])
    return out


def test_the_workflow_diff_commands_run_against_a_real_base_branch(tmp_path: Path) -> None:
    commands = _diff_commands()
    assert len(commands) == 2
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "topology", repo / "topology")

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
            cwd=repo,
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "base")
    git("update-ref", "refs/remotes/origin/main", "HEAD")  # what checkout's fetch-depth 0 gives
    text = (repo / "topology" / "topology.yaml").read_text()
    lowered = re.sub(r"(TAX_AGENT_EVENTS:\n\s+max_bytes:) 50GiB", r"\1 40GiB", text, count=1)
    assert lowered != text
    (repo / "topology" / "topology.yaml").write_text(lowered)
    markdown, annotations = (
        subprocess.run(
            [sys.executable, "-m", "bus_runtime", "diff", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        for args in commands
    )
    assert markdown.returncode == 2, markdown.stderr  # the gate: a destructive change
    assert markdown.stdout.startswith("<!-- natstopo-diff -->")
    assert "| 🔴 | update stream `TAX_AGENT_EVENTS` | prod | destructive |" in markdown.stdout
    assert annotations.returncode == 2, annotations.stderr
    first = annotations.stdout.splitlines()[0]
    assert first.startswith("::error file=topology/topology.yaml,line=")
    line = int(first.split("line=")[1].split(",")[0])
    assert lowered.splitlines()[line - 1].strip() == "max_bytes: 40GiB"

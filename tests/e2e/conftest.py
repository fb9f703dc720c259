"""Fixtures for the end-to-end tests: a real Kubernetes API server (tests/kube_harness.py).

- `kube_api`: etcd and kube-apiserver built by tools/kube-test-cluster/build.sh, started once
  per session; it yields a `KubeAPI` (`url`, `token`, `ca_file`, `kubeconfig`, `request()`).
  Tests share the server, so each works in a namespace of its own (`kube_namespace`).
  Skips when the binaries are not built, unless NATSTOPO_REQUIRE_KUBE=1 (for CI), which turns
  that skip into a failure.
- `shared_reference`: the folder of reference files shared beside the repository
  (`../shared/reference/`), e.g. the NACK CRDs.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from kube_harness import KubeAPI, locate_binaries, running_kube_api

REPO = Path(__file__).resolve().parents[2]


def _require(reason: str) -> NoReturn:
    """Skip for `reason`, or fail when NATSTOPO_REQUIRE_KUBE=1."""
    if os.environ.get("NATSTOPO_REQUIRE_KUBE") == "1":
        pytest.fail(f"NATSTOPO_REQUIRE_KUBE=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kube_api() -> Iterator[KubeAPI]:
    binaries, reason = locate_binaries()
    if binaries is None:
        _require(reason)
    with running_kube_api(binaries) as api:
        yield api


@pytest.fixture
def kube_namespace(kube_api: KubeAPI) -> Iterator[str]:
    """A fresh namespace on the shared API server, deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    created = kube_api.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    assert created.status == 201, created.text
    yield name
    # Without a controller manager the namespace stays Terminating; that is fine here.
    kube_api.request("DELETE", f"/api/v1/namespaces/{name}")


def _shared_candidates() -> list[Path]:
    """Where `../shared/reference` may be: beside this checkout, or beside the main checkout
    when this is a `git worktree` somewhere else. NATSTOPO_SHARED_REFERENCE wins."""
    explicit = os.environ.get("NATSTOPO_SHARED_REFERENCE")
    if explicit:
        return [Path(explicit)]
    found = [REPO.parent / "shared" / "reference"]
    try:
        common = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        common = ""
    if common:
        found.append(Path(common).parent.parent / "shared" / "reference")
    return found


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    candidates = _shared_candidates()
    for folder in candidates:
        if folder.is_dir():
            return folder
    _require(f"no shared reference folder at {', '.join(map(str, candidates))}")

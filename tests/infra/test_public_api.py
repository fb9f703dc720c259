"""infra/ and the local job use bus_runtime through its public API only (its `__all__`, and
that of `bus_runtime.security`, the public package of credentials and authorization)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bus_runtime
import bus_runtime.security

PUBLIC = {"bus_runtime": bus_runtime.__all__, "bus_runtime.security": bus_runtime.security.__all__}

REPO = Path(__file__).resolve().parents[2]
FILES = sorted([*(REPO / "infra").rglob("*.py"), REPO / "tools" / "local_up.py"])


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(REPO)) for p in FILES])
def test_only_the_public_api(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bus_runtime"):
            assert node.module in PUBLIC, f"{path}:{node.lineno}: from {node.module}"
            for alias in node.names:
                assert alias.name in PUBLIC[node.module], f"{path}:{node.lineno}: {alias.name}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("bus_runtime."), (
                    f"{path}:{node.lineno}: {alias.name}"
                )

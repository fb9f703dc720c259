"""The stacks' config files, read as the program reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack_settings import (
    SettingsError,
    image_version,
    parse_quantity,
    read_settings,
    read_stack_file,
)

REPO = Path(__file__).resolve().parents[2]


def read(stack: str) -> object:
    return read_settings(read_stack_file(REPO / f"Pulumi.{stack}.yaml"), stack, REPO)


def test_the_shipped_stacks() -> None:
    local, dev, staging, prod = (read(s) for s in ("local", "dev", "staging", "prod"))
    assert local.provisioner == "direct"  # type: ignore[attr-defined]
    assert local.kubernetes.render_dir == REPO / "out" / "local" / "manifests"  # type: ignore[attr-defined]
    assert local.protect is False  # type: ignore[attr-defined]
    assert dev.cluster.replicas == 1  # type: ignore[attr-defined]
    assert staging.cluster.replicas == prod.cluster.replicas == 3  # type: ignore[attr-defined]
    assert prod.cluster.volume_size == "128Gi"  # type: ignore[attr-defined]
    assert prod.cluster.spread_zones and prod.cluster.pod_monitor  # type: ignore[attr-defined]
    assert prod.protect and not prod.allow_destructive and not prod.allow_replace  # type: ignore[attr-defined]
    for s in (local, dev, staging, prod):
        assert s.environment == s.stack  # type: ignore[attr-defined]
        assert s.topology == REPO / "topology" / "topology.yaml"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10Gi", 10 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 10**9),
        ("1048576", 2**20),
        ("1.5Gi", 3 * 2**29),
    ],
)
def test_quantities(text: str, size: int) -> None:
    assert parse_quantity(text) == size


def test_a_quantity_without_a_kubernetes_unit() -> None:
    with pytest.raises(ValueError, match="Kubernetes units"):
        parse_quantity("10GiB")


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("nats:2.10.26-alpine", (2, 10, 26)),
        ("registry.example:5000/nats:2.15.1", (2, 15, 1)),
        ("nats:2.11", (2, 11, 0)),
        ("nats:latest", None),
        ("nats@sha256:abc", None),
    ],
)
def test_image_versions(image: str, version: tuple[int, int, int] | None) -> None:
    assert image_version(image) == version


def test_every_problem_is_reported_at_once() -> None:
    config = {
        "natstopo:provisioner": "direct",
        "natstopo:cluster": {"replicas": 0, "volume": {"size": "big"}, "colour": "blue"},
        "natstopo:kubernetes": {"renderDir": "out", "context": "prod"},
    }
    with pytest.raises(SettingsError) as err:
        read_settings(config, "prod", REPO)
    problems = "\n".join(err.value.problems)
    assert "natstopo:cluster.replicas: expected an integer >= 1, got 0" in problems
    assert "natstopo:cluster.volume.size: 'big' is not a size" in problems
    assert "natstopo:cluster.colour: unknown key" in problems
    assert "natstopo:natsUrl: the direct provisioner needs the server URLs" in problems
    assert "renderDir writes files and talks to no cluster" in problems
    assert len(err.value.problems) == 5


def test_other_namespaces_are_not_ours() -> None:
    settings = read_settings(
        {"kubernetes:context": "x", "natstopo:provisioner": "none"}, "prod", REPO
    )
    assert settings.provisioner == "none"

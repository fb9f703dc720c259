"""Valid but likely mistakes come back as warnings, at their place, without refusing the file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bus_runtime import load_topology
from bus_runtime.cli.main import main

TOPOLOGY = textwrap.dedent(
    """\
    version: 1
    name: t
    services: {svc-a: {}}
    streams:
      EVENTS:
        retention: interest
        topics:
          lonely.topic: {publishers: [svc-a]}
          used.topic: {publishers: [svc-a]}
        consumers:
          c1: {service: svc-a, topics: [used.topic]}
    """
)


@pytest.fixture
def topo_file(tmp_path: Path) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    return path


def test_unconsumed_interest_topic_and_missing_dead_letter_warn(topo_file: Path) -> None:
    topology = load_topology(topo_file)
    found = {(w.line, w.column, w.path): w.message for w in topology.warnings}
    assert set(found) == {(5, 3, "streams.EVENTS"), (8, 7, "streams.EVENTS.topics.lonely.topic")}
    assert "drops its events" in found[(8, 7, "streams.EVENTS.topics.lonely.topic")]
    assert "no `dead_letter`" in found[(5, 3, "streams.EVENTS")]
    assert all(w.severity == "warning" for w in topology.warnings)


def test_validate_prints_warnings_and_still_exits_0(
    topo_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(topo_file)]) == 0
    err = capsys.readouterr().err
    assert f"{topo_file}:8:7: warning: streams.EVENTS.topics.lonely.topic:" in err
    assert main(["validate", str(topo_file), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True
    assert [w["line"] for w in out["warnings"]] == [5, 8]


def test_a_consumer_for_every_topic_gives_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        TOPOLOGY.replace("topics: [used.topic]", "topics: [used.topic, lonely.topic]").replace(
            "    retention: interest\n", "    retention: interest\n    dead_letter: DLQ\n"
        )
        + "  DLQ: {}\n"
    )
    assert load_topology(path).warnings == ()


def test_shipped_topology_has_no_warnings() -> None:
    shipped = Path(__file__).resolve().parent.parent / "topology" / "topology.yaml"
    for env in (None, "local", "dev", "staging", "prod"):
        assert load_topology(shipped, env).warnings == (), env


def test_validating_every_environment_reports_their_warnings(tmp_path: Path) -> None:
    # The base keeps limits retention (nothing dropped); dev moves the stream to interest
    # retention, where the unconsumed topic's events would be dropped.
    path = tmp_path / "t.yaml"
    path.write_text(
        TOPOLOGY.replace(
            "    retention: interest\n", "    retention: limits\n    dead_letter: DLQ\n"
        )
        + "  DLQ: {}\nenvironments:\n  dev: {streams: {EVENTS: {retention: interest}}}\n"
    )
    from bus_runtime import check_topology

    topology, errors = check_topology(path, all_environments=True)
    assert errors == [] and topology is not None
    assert [(w.line, w.path) for w in topology.warnings] == [
        (9, "streams.EVENTS.topics.lonely.topic")
    ]
    assert "(in environment `dev`)" in topology.warnings[0].message
    assert load_topology(path).warnings == ()  # the base alone is fine


def test_duplicate_window_0_means_the_server_default(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        TOPOLOGY.replace(
            "    retention: interest\n", "    retention: interest\n    duplicate_window: 0\n"
        )
    )
    stream = load_topology(path).stream("EVENTS")
    assert stream.duplicate_window is None
    assert "duplicate_window" not in stream.to_stream_config()

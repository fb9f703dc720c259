"""`natstopo graph`: every declared relation is an edge, nothing else, in Mermaid and dot alike.

The expected edges are computed here from the model, not by the module under test; each
output is parsed back (Mermaid by Mermaid's own parser, dot by Graphviz) so a syntax slip
or an unescaped name fails, and a deliberately broken graph shows that those checks can.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from review_helpers import (
    SHIPPED,
    assert_one_line_error,
    docs_check,
    dot_path,
    run_natstopo,
    write_hard_topology,
)

from bus_runtime.review.graph import build_graph, mermaid_label, render_dot, render_mermaid
from bus_runtime.topology.loader import load_topology
from bus_runtime.topology.model import Topology

Edge = tuple[str, str, str, str, str]  # (source kind, source name, target kind, target name, kind)


def declared_edges(t: Topology) -> set[Edge]:
    """What the topology declares, straight from the model."""
    out: set[Edge] = set()
    for s in t.streams:
        for topic in s.topics:
            for p in topic.publishers:
                out.add(("service", p, "topic", topic.name, "publishes"))
            out.add(("topic", topic.name, "stream", s.name, "stored_in"))
        for c in s.consumers:
            out.add(("stream", s.name, "consumer", f"{s.name}/{c.name}", "feeds"))
            out.add(("consumer", f"{s.name}/{c.name}", "service", c.service, "delivers_to"))
        if s.dead_letter:
            out.add(("stream", s.name, "stream", s.dead_letter, "dead_letters"))
    return out


_MERMAID_NODE = re.compile(r'^  (\w+)(\(\["|\["|\[\("|\[\[")(.*)("\]\)|"\]|"\)\]|"\]\])$')
_MERMAID_EDGE = re.compile(r"^  (\w+) (-->|-\. dead letters \.->) (\w+)$")
_SHAPES = {'(["': "service", '["': "topic", '[("': "stream", '[["': "consumer"}


def _unescape(label: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m[1])), label)


def parse_mermaid(text: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, str]]]:
    """Node id -> (kind, label) and edges (source id, arrow, target id); other lines ignored."""
    nodes: dict[str, tuple[str, str]] = {}
    edges = []
    for line in text.splitlines():
        if m := _MERMAID_NODE.match(line):
            assert m[1] not in nodes, f"node {m[1]} twice"
            nodes[m[1]] = (_SHAPES[m[2]], _unescape(m[3]))
        elif m := _MERMAID_EDGE.match(line):
            edges.append((m[1], m[2], m[3]))
    return nodes, edges


@pytest.fixture(params=["shipped", "hard"])
def topology(request: pytest.FixtureRequest, tmp_path: Path) -> Topology:
    path = SHIPPED if request.param == "shipped" else write_hard_topology(tmp_path)
    return load_topology(path)


def test_mermaid_has_every_declared_edge_and_nothing_else(topology: Topology) -> None:
    graph = build_graph(topology)
    nodes, edges = parse_mermaid(render_mermaid(graph))
    by_id = {n.id: n for n in graph.nodes}
    assert set(nodes) == set(by_id)
    got: list[Edge] = []
    for src, arrow, dst in edges:
        a, b = by_id[src], by_id[dst]
        assert (arrow == "-->") == (a.kind != "stream" or b.kind != "stream")
        kind = {("service", "topic"): "publishes", ("topic", "stream"): "stored_in",
                ("stream", "consumer"): "feeds", ("consumer", "service"): "delivers_to",
                ("stream", "stream"): "dead_letters"}[(a.kind, b.kind)]  # fmt: skip
        got.append((a.kind, a.name, b.kind, b.name, kind))
    assert len(got) == len(set(got)), "an edge twice"
    assert set(got) == declared_edges(topology)
    # every node is shown with its kind's shape and its name as written
    for node_id, (kind, label) in nodes.items():
        assert (kind, label) == (by_id[node_id].kind, by_id[node_id].label)
    expected_labels = (
        {s.name for s in topology.services}
        | {s.name for s in topology.streams}
        | {t.name for t in topology.topics}
        | {c.name for c in topology.consumers}
    )
    assert {label for _, label in nodes.values()} == expected_labels


def test_dot_has_every_declared_edge_and_nothing_else_as_graphviz_reads_it(
    topology: Topology,
) -> None:
    graph = build_graph(topology)
    proc = subprocess.run(
        [dot_path(), "-Tjson0"], input=render_dot(graph), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)
    by_id = {n.id: n for n in graph.nodes}
    objects = {o["_gvid"]: o for o in parsed["objects"]}
    assert {o["name"] for o in objects.values()} == set(by_id)
    for o in objects.values():  # the label dot shows is the name, unescaped
        assert o["label"] == by_id[o["name"]].label
    got = set()
    for e in parsed.get("edges", []):
        a, b = by_id[objects[e["tail"]]["name"]], by_id[objects[e["head"]]["name"]]
        assert ("style" in e and e["style"] == "dashed") == (a.kind == b.kind == "stream")
        got.add((a.kind, a.name, b.kind, b.name))
    assert len(parsed.get("edges", [])) == len(got)
    assert got == {e[:4] for e in declared_edges(topology)}


def test_mermaid_parser_accepts_ours_and_refuses_a_broken_graph(tmp_path: Path) -> None:
    shipped = render_mermaid(build_graph(load_topology(SHIPPED)))
    hard = render_mermaid(build_graph(load_topology(write_hard_topology(tmp_path))))
    broken_quote = hard.replace(mermaid_label('a"b<c#d&e`f{x}'), 'a"b<c#d&e`f{x}')
    assert broken_quote != hard
    broken_edge = shipped.replace(" --> ", " -> ", 1)
    reports = docs_check("mermaid", [shipped, hard, broken_quote, broken_edge], tmp_path)
    assert [r["valid"] for r in reports] == [True, True, False, False], reports
    assert reports[2]["diagnostics"][0]["line"] is not None


def test_dot_refuses_a_broken_graph() -> None:
    text = render_dot(build_graph(load_topology(SHIPPED)))
    broken = text.replace('label="svc-ocr"', 'label="svc-"ocr"', 1)
    assert broken != text
    proc = subprocess.run([dot_path(), "-Tcanon"], input=broken, capture_output=True, text=True)
    assert proc.returncode != 0 and "syntax error" in proc.stderr


def test_ids_are_unique_and_plain_even_when_names_sanitise_alike(tmp_path: Path) -> None:
    graph = build_graph(load_topology(write_hard_topology(tmp_path)))
    ids = [n.id for n in graph.nodes]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", i) for i in ids)
    # `class.*.def` and `class.def` differ; so do their ids
    assert graph.node("topic", "class.*.def").id != graph.node("topic", "class.def").id


def test_output_is_deterministic_and_environments_are_named() -> None:
    a = run_natstopo("graph", str(SHIPPED), "--env", "prod")
    b = run_natstopo("graph", str(SHIPPED), "--env", "prod")
    assert a.returncode == 0 and a.stdout == b.stdout
    assert a.stdout.splitlines()[1].startswith("  %% topology tax-agent (environment prod)")
    dot = run_natstopo("graph", str(SHIPPED), "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.startswith('digraph "tax-agent" {')
    as_json = json.loads(run_natstopo("graph", str(SHIPPED), "--format", "json").stdout)
    assert {e["kind"] for e in as_json["edges"]} == {
        "publishes", "stored_in", "feeds", "delivers_to", "dead_letters"
    }  # fmt: skip


def test_around_keeps_the_neighbours_and_marks_outline_them() -> None:
    graph = build_graph(load_topology(SHIPPED))
    part = graph.around([("topic", "document.uploaded")])
    assert {n.key for n in part.nodes} == {
        ("topic", "document.uploaded"),
        ("service", "svc-ingestion"),
        ("service", "svc-firm-connectors"),
        ("service", "svc-rpa"),
        ("stream", "TAX_AGENT_EVENTS"),
    }
    assert all(e.source in {n.key for n in part.nodes} for e in part.edges)
    text = render_mermaid(part, marks={("topic", "document.uploaded"): "changed"})
    assert "  class topic_document_uploaded changed" in text
    assert "classDef changed " in text and "classDef added" not in text


def test_errors_are_one_line_or_validate_s(tmp_path: Path) -> None:
    assert_one_line_error(run_natstopo("graph", str(SHIPPED), "--out", str(tmp_path / "no/x.mmd")))
    proc = run_natstopo("graph", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 1 and "missing.yaml:0:0: error: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    unknown_env = run_natstopo("graph", str(SHIPPED), "--env", "qa")
    assert unknown_env.returncode == 1 and "Traceback" not in unknown_env.stderr
    assert "qa" in unknown_env.stderr

"""Graphs of a topology: who publishes which topic, where it is stored, who consumes it.

`build_graph(topology)` gives the nodes and edges: services -> topics (publishes), topics
-> streams (stored in), streams -> consumers, consumers -> services (delivers to), and
streams -> their dead-letter streams. `render_mermaid` and `render_dot` write a Mermaid
flowchart and a Graphviz digraph; `render_json` the same graph as data. Output is
deterministic (nodes and edges in the topology's order) and every name is escaped, so a
topic named `a"b` or `<x>` cannot break the document or inject markup into it.
`Graph.around(keys)` keeps only some nodes and their neighbours, for a graph of the
changed part of a pull request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..topology.model import Topology

NodeKind = Literal["service", "topic", "stream", "consumer"]
EdgeKind = Literal["publishes", "stored_in", "feeds", "delivers_to", "dead_letters"]
Mark = Literal["added", "removed", "changed"]
NodeKey = tuple[NodeKind, str]

NODE_KINDS: tuple[NodeKind, ...] = ("service", "topic", "stream", "consumer")
EDGE_KINDS: tuple[EdgeKind, ...] = (
    "publishes",
    "stored_in",
    "feeds",
    "delivers_to",
    "dead_letters",
)
_ID_PREFIX: dict[NodeKind, str] = {
    "service": "svc_",
    "topic": "topic_",
    "stream": "stream_",
    "consumer": "consumer_",
}
_NOT_ID = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class Node:
    """One box of the graph.

    Attributes:
        kind: What it is.
        name: Unique within its kind: a consumer's is `<stream>/<durable>` (durable names
            are unique per stream only).
        label: What the box shows (a consumer shows its durable name).
        id: The node's identifier in Mermaid and dot: `[A-Za-z0-9_]`, unique in the graph.
        detail: A second fact shown as a tooltip (a topic's subject, a stream's retention,
            a consumer's topics).
    """

    kind: NodeKind
    name: str
    label: str
    id: str
    detail: str = ""

    @property
    def key(self) -> NodeKey:
        return (self.kind, self.name)


@dataclass(frozen=True)
class Edge:
    """One arrow: `source` -> `target`, both node keys."""

    source: NodeKey
    target: NodeKey
    kind: EdgeKind


@dataclass(frozen=True)
class Graph:
    """The nodes and edges of one topology (one environment), in the topology's order."""

    name: str
    environment: str | None
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    _index: dict[NodeKey, Node] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update((n.key, n) for n in self.nodes)

    def node(self, kind: NodeKind, name: str) -> Node:
        return self._index[(kind, name)]

    def around(self, keys: Iterable[NodeKey]) -> Graph:
        """The nodes in `keys`, their direct neighbours, and the edges among them."""
        wanted = set(keys)
        keep = set(wanted)
        for e in self.edges:
            if e.source in wanted:
                keep.add(e.target)
            if e.target in wanted:
                keep.add(e.source)
        return Graph(
            self.name,
            self.environment,
            tuple(n for n in self.nodes if n.key in keep),
            tuple(e for e in self.edges if e.source in keep and e.target in keep),
        )


def build_graph(topology: Topology) -> Graph:
    """The graph of `topology`: every declared relation is one edge, nothing else."""
    ids: set[str] = set()
    nodes: list[Node] = []

    def add(kind: NodeKind, name: str, label: str, detail: str = "") -> None:
        base = _ID_PREFIX[kind] + (_NOT_ID.sub("_", label) or "_")
        node_id, n = base, 1
        while node_id in ids:  # `a.b` and `a_b` both sanitise to `a_b`: number the later one
            n += 1
            node_id = f"{base}_{n}"
        ids.add(node_id)
        nodes.append(Node(kind, name, label, node_id, detail))

    for svc in topology.services:
        add("service", svc.name, svc.name)
    for s in topology.streams:
        add("stream", s.name, s.name, s.retention)
    for t in topology.topics:
        add("topic", t.name, t.name, t.subject)
    for c in topology.consumers:
        add("consumer", f"{c.stream}/{c.name}", c.name, ", ".join(c.topics) or "every subject")

    edges: list[Edge] = []
    for t in topology.topics:
        edges.extend(Edge(("service", p), ("topic", t.name), "publishes") for p in t.publishers)
        edges.append(Edge(("topic", t.name), ("stream", t.stream), "stored_in"))
    for s in topology.streams:
        for c in s.consumers:
            key: NodeKey = ("consumer", f"{s.name}/{c.name}")
            edges.append(Edge(("stream", s.name), key, "feeds"))
            edges.append(Edge(key, ("service", c.service), "delivers_to"))
        if s.dead_letter:
            edges.append(Edge(("stream", s.name), ("stream", s.dead_letter), "dead_letters"))
    return Graph(topology.name, topology.environment, tuple(nodes), tuple(edges))


# -- Mermaid ----------------------------------------------------------------------------
_MERMAID_SHAPE: dict[NodeKind, tuple[str, str]] = {
    "service": ('(["', '"])'),
    "topic": ('["', '"]'),
    "stream": ('[("', '")]'),
    "consumer": ('[["', '"]]'),
}
_MERMAID_ARROW: dict[EdgeKind, str] = {
    "publishes": "-->",
    "stored_in": "-->",
    "feeds": "-->",
    "delivers_to": "-->",
    "dead_letters": "-. dead letters .->",
}
_MERMAID_STYLE: dict[str, str] = {
    "service": "fill:#e8f0fe,stroke:#4a6fa5",
    "topic": "fill:#fff7e0,stroke:#b58900",
    "stream": "fill:#e6f4ea,stroke:#2e7d32",
    "consumer": "fill:#f3e8fd,stroke:#7b1fa2",
    "added": "stroke:#2e7d32,stroke-width:3px",
    "removed": "stroke:#c62828,stroke-width:3px,stroke-dasharray:5 5",
    "changed": "stroke:#ef6c00,stroke-width:3px",
}
# Inside a quoted label `"` ends it, `#name;` and `#123;` are entities, HTML labels pass
# markup through and a backtick starts a Markdown string. Each such character becomes its
# numeric entity, so a label shows exactly the name.
_MERMAID_ESCAPE = {c: f"#{ord(c)};" for c in '"#&<>`'}


def mermaid_label(text: str) -> str:
    """`text` for a Mermaid label in double quotes, shown as written."""
    return "".join(_MERMAID_ESCAPE.get(c, c) for c in text)


def render_mermaid(graph: Graph, *, marks: Mapping[NodeKey, Mark] | None = None) -> str:
    """A Mermaid flowchart (left to right); `marks` outlines added, removed, changed nodes."""
    env = f" (environment {graph.environment})" if graph.environment else ""
    lines = [
        "flowchart LR",
        f"  %% topology {mermaid_label(graph.name)}{env}: "
        "services -> topics -> streams -> consumers -> services",
    ]
    for n in graph.nodes:
        left, right = _MERMAID_SHAPE[n.kind]
        lines.append(f"  {n.id}{left}{mermaid_label(n.label)}{right}")
    index = {n.key: n for n in graph.nodes}
    for e in graph.edges:
        lines.append(f"  {index[e.source].id} {_MERMAID_ARROW[e.kind]} {index[e.target].id}")
    groups: dict[str, list[str]] = {}
    for n in graph.nodes:
        groups.setdefault(n.kind, []).append(n.id)
    for n in graph.nodes:
        mark = (marks or {}).get(n.key)
        if mark:
            groups.setdefault(mark, []).append(n.id)
    for cls, style in _MERMAID_STYLE.items():
        if cls in groups:
            lines.append(f"  classDef {cls} {style}")
    for cls in _MERMAID_STYLE:
        if cls in groups:
            lines.append(f"  class {','.join(groups[cls])} {cls}")
    return "\n".join(lines) + "\n"


# -- Graphviz dot -----------------------------------------------------------------------
_DOT_SHAPE: dict[NodeKind, str] = {
    "service": 'shape=box, style="rounded,filled", fillcolor="#e8f0fe"',
    "topic": 'shape=note, style=filled, fillcolor="#fff7e0"',
    "stream": 'shape=cylinder, style=filled, fillcolor="#e6f4ea"',
    "consumer": 'shape=component, style=filled, fillcolor="#f3e8fd"',
}
_DOT_EDGE: dict[EdgeKind, str] = {
    "publishes": "",
    "stored_in": "",
    "feeds": "",
    "delivers_to": "",
    "dead_letters": ' [style=dashed, color="#c62828", label="dead letters"]',
}


def dot_string(text: str) -> str:
    """`text` as a dot double-quoted string that dot shows as written (no `\\N` escapes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(graph: Graph) -> str:
    """A Graphviz digraph (left to right), one statement per line."""
    title = graph.name + (f" ({graph.environment})" if graph.environment else "")
    lines = [
        f"digraph {dot_string(graph.name)} {{",
        "  rankdir=LR;",
        f"  label={dot_string(title)};",
        '  node [fontname="Helvetica"];',
        '  edge [fontname="Helvetica"];',
    ]
    for n in graph.nodes:
        tooltip = f", tooltip={dot_string(n.detail)}" if n.detail else ""
        lines.append(f"  {n.id} [label={dot_string(n.label)}, {_DOT_SHAPE[n.kind]}{tooltip}];")
    index = {n.key: n for n in graph.nodes}
    for e in graph.edges:
        lines.append(f"  {index[e.source].id} -> {index[e.target].id}{_DOT_EDGE[e.kind]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- data -------------------------------------------------------------------------------
def render_json(graph: Graph) -> str:
    """The graph as JSON: nodes (kind, name, label, id, detail) and edges (by node id)."""
    index = {n.key: n for n in graph.nodes}
    data = {
        "topology": graph.name,
        "environment": graph.environment,
        "nodes": [
            {"kind": n.kind, "name": n.name, "label": n.label, "id": n.id, "detail": n.detail}
            for n in graph.nodes
        ],
        "edges": [
            {"source": index[e.source].id, "target": index[e.target].id, "kind": e.kind}
            for e in graph.edges
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

"""A review in four forms: text for a terminal, JSON for tools (`natstopo.diff/v1`), markdown
for a pull-request comment (summary table, risky changes first, a Mermaid graph of the
changed part), and GitHub workflow annotations at the topology file's lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from ..topology.model import Topology
from .diff import Review, ReviewChange
from .schema_compat import ORDER_WHY

_ICON = {0: "🔴", 1: "🟠", 2: "🟡", 3: "🔵", 4: "🟢"}
_WHAT = {0: "destructive", 1: "breaking", 2: "replace", 3: "permission", 4: "safe"}


def _env(c: ReviewChange) -> str:
    return f"[{c.environment}] " if c.environment else ""


def _details(c: ReviewChange) -> list[str]:
    """Fields, reasons and the deploy order of one change, one line each."""
    out = [f.render() for f in c.fields] + list(c.reasons)
    if c.deploy_order:
        out.append(f"deploy order: {c.deploy_order}: {ORDER_WHY[c.deploy_order]}")
    return out


def render_text(r: Review) -> str:
    lines = []
    for c in r.changes:
        lines.append(f"{_env(c)}{c.kind} {c.name}: {c.action} — {c.judgement()}")
        lines += [f"    {d}" for d in _details(c)]
    lines.append(_summary_line(r))
    return "\n".join(lines)


def _summary_line(r: Review) -> str:
    n = r.counts()
    if not r.changes:
        return f"No changes between {r.base} and {r.head}."
    text = (
        f"{n['changes']} change(s) for nats-server {r.server_version}: {n['destructive']} destructive, "
        f"{n['replace']} replace, {n['breaking']} breaking, {n['permission']} permission"
    )
    gate = ",".join(r.fail_on) or "none"
    verdict = (
        f"FAILS (--fail-on {gate}: {len(r.failing)} change(s))"
        if r.gate_failed
        else f"passes (--fail-on {gate})"
    )
    return f"{text}; the gate {verdict}."


def render_json(r: Review) -> str:
    return json.dumps(r.to_dict(), indent=2, ensure_ascii=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(r: Review, head: Topology | None = None) -> str:
    """A pull-request comment: headline, summary table, then each risky change with why."""
    out = ["<!-- natstopo-diff -->", f"### Topology review: `{r.base}` → `{r.head}`", ""]
    if not r.changes:
        out.append("No changes.")
        return "\n".join(out) + "\n"
    n = r.counts()
    verdict = "❌ **gate fails**" if r.gate_failed else "✅ gate passes"
    out.append(
        f"{verdict} (`--fail-on {','.join(r.fail_on) or 'none'}`) · nats-server {r.server_version} · "
        f"{n['changes']} changes: {n['destructive']} destructive, {n['replace']} replace, "
        f"{n['breaking']} breaking, {n['permission']} permission"
    )
    out += [
        "",
        "| | change | environment | infrastructure | contract | services |",
        "|---|---|---|---|---|---|",
    ]
    for c in r.changes:
        out.append(
            f"| {_ICON[c.risk]} | {_cell(f'{c.action} {c.kind} `{c.name}`')} | {c.environment or '—'} | "
            f"{c.infrastructure or '—'} | {c.contract or ('permission' if c.review else '—')} | "
            f"{_cell(', '.join(c.services)) or '—'} |"
        )
    risky = [c for c in r.changes if c.risk < 4]
    if risky:
        out += ["", "#### Why"]
        for c in risky:
            out.append("")
            out.append(
                f"**{_ICON[c.risk]} {c.action} {c.kind} `{c.name}`**"
                + (f" in `{c.environment}`" if c.environment else "")
                + f": {c.judgement()}"
            )
            out += [f"- `{f.render()}`" for f in c.fields]
            out += [f"- {why}" for why in c.reasons]
            if c.deploy_order:
                out.append(f"- deploy order: **{c.deploy_order}**: {ORDER_WHY[c.deploy_order]}")
    if head is not None:
        graph = mermaid_of_changes(r, head)
        if graph:
            out += ["", "#### Changed part", "", "```mermaid", graph, "```"]
    return "\n".join(out) + "\n"


def _id(kind: str, name: str) -> str:
    return f"{kind}_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def mermaid_of_changes(r: Review, head: Topology) -> str:
    """services -> topics -> streams -> consumers -> services, for what the review touches.

    A changed topic brings its publishers, its stream and the consumers that take it; a
    changed consumer its stream, topics and service; a changed stream its consumers when
    the change is a replace or destructive (they are affected), else the stream alone.
    """
    topics: dict[str, None] = {}
    consumers: dict[tuple[str, str], None] = {}
    streams: dict[str, None] = {}
    risky: set[str] = set()
    declared_topics = {t.name: t for t in head.topics}
    declared_streams = {s.name: s for s in head.streams}
    for c in r.changes:
        names: list[str] = []
        if c.kind in ("topic", "schema"):
            names = [c.name]
        elif c.kind == "permission":
            names = [c.name.split(" ", 2)[-1]]
        elif c.kind == "stream" or c.kind == "consumer":
            names = [c.name]
        for n in names:
            if n in declared_topics:
                topics[n] = None
                t = declared_topics[n]
                streams[t.stream] = None
                for con in declared_streams[t.stream].consumers:
                    if not con.topics or n in con.topics:
                        consumers[(t.stream, con.name)] = None
            elif "/" in n:
                sname, cname = n.split("/", 1)
                if sname in declared_streams and any(
                    x.name == cname for x in declared_streams[sname].consumers
                ):
                    streams[sname] = None
                    consumers[(sname, cname)] = None
            elif n in declared_streams:
                streams[n] = None
                if c.infrastructure in ("replace", "destructive"):
                    for con in declared_streams[n].consumers:
                        consumers[(n, con.name)] = None
            if c.risk < 2:
                risky.add(n)
    if not streams:
        return ""
    lines = ["flowchart LR"]
    edges: list[str] = []
    services: dict[str, None] = {}
    for n in topics:
        t = declared_topics[n]
        lines.append(f'  {_id("t", n)}(["{n}"])')
        for svc in t.publishers:
            services[svc] = None
            edges.append(f"  {_id('svc', svc)} --> {_id('t', n)}")
        edges.append(f"  {_id('t', n)} --> {_id('s', t.stream)}")
    for sname in streams:
        lines.append(f'  {_id("s", sname)}[("{sname}")]')
    for sname, cname in consumers:
        con = declared_streams[sname].consumer(cname)
        services[con.service] = None
        lines.append(f'  {_id("c", sname + "/" + cname)}>"{cname}"]')
        edges.append(f"  {_id('s', sname)} --> {_id('c', sname + '/' + cname)}")
        edges.append(f"  {_id('c', sname + '/' + cname)} --> {_id('svc', con.service)}")
    lines += [f'  {_id("svc", s)}["{s}"]' for s in services]
    lines += _unique(edges)
    marks = [
        (_id("t", n) if n in topics else _id("c", n) if "/" in n else _id("s", n))
        for n in sorted(risky)
        if n in topics or n in streams or tuple(n.split("/", 1)) in consumers
    ]
    if marks:
        lines.append("  classDef risky fill:#fdd,stroke:#c00")
        lines.append(f"  class {','.join(marks)} risky")
    return "\n".join(lines)


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(r: Review, file: str) -> str:
    """`::error file=...,line=...::` annotations: errors for what fails the gate, warnings for
    other risky changes, notices for the rest."""
    out = []
    failing = {id(c) for c in r.failing}
    for c in r.changes:
        level = "error" if id(c) in failing else ("warning" if c.risk < 4 else "notice")
        line = c.location.line if c.location is not None else 1
        title = f"{c.action} {c.kind} {c.name}" + (f" [{c.environment}]" if c.environment else "")
        text = "; ".join([c.judgement(), *_details(c)])
        out.append(
            f"::{level} file={_escape_prop(file)},line={line},title={_escape_prop(title)}::{_escape_data(text)}"
        )
    out.append(_summary_line(r))
    return "\n".join(out)

"""A review in four forms: text for a terminal, JSON for tools (`natstopo.diff/v1`), markdown
for a pull-request comment (summary table, risky changes first, a Mermaid graph of the
changed part), and GitHub workflow annotations at the topology file's lines."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..topology.model import Topology
from .diff import Review, ReviewChange
from .graph import Mark, NodeKey, build_graph, render_mermaid
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


# GitHub refuses a comment over 65,536 characters; the comment stays well below.
MARKDOWN_LIMIT = 60_000


def render_markdown(r: Review, head: Topology | None = None, limit: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment: headline, summary table, each risky change with why, and the
    graph of the changed part; cut (saying how much) to stay under `limit` characters."""
    full = _markdown(r, head, r.changes, r.changes)
    if len(full) <= limit:
        return full
    # Keep the riskiest changes' details, then fewer table rows, until it fits.
    rows = list(r.changes)
    risky = [c for c in r.changes if c.risk < 4]
    while True:
        if len(risky) > 10:
            risky = risky[: len(risky) // 2]
        else:
            rows = rows[: max(len(rows) * 2 // 3, 10)]
        text = _markdown(r, None, rows, risky, cut=(len(r.changes) - len(rows), len(r.changes)))
        if len(text) <= limit or len(rows) <= 10:
            return text


def _markdown(
    r: Review,
    head: Topology | None,
    rows: list[ReviewChange],
    risky_shown: list[ReviewChange],
    cut: tuple[int, int] | None = None,
) -> str:
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
    for c in rows:
        out.append(
            f"| {_ICON[c.risk]} | {_cell(f'{c.action} {c.kind} `{c.name}`')} | {c.environment or '—'} | "
            f"{c.infrastructure or '—'} | {c.contract or ('permission' if c.review else '—')} | "
            f"{_cell(', '.join(c.services)) or '—'} |"
        )
    if cut is not None:
        out += [
            "",
            f"*{cut[0]} of {cut[1]} changes are not listed here (the comment would be too "
            "long for GitHub): the job's `natstopo diff` output has every one.*",
        ]
    risky = [c for c in risky_shown if c.risk < 4]
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


def mermaid_of_changes(r: Review, head: Topology) -> str:
    """The changed part of HEAD's graph (services -> topics -> streams -> consumers ->
    services): what the review touches and its direct neighbours, changed nodes marked."""
    graph = build_graph(head)
    present = {n.key for n in graph.nodes}
    marks: dict[NodeKey, Mark] = {}
    for c in r.changes:
        for key in _graph_keys(c):
            if key in present:
                marks.setdefault(key, "added" if c.action == "create" else "changed")
    if not marks:
        return ""
    return render_mermaid(graph.around(marks), marks=marks).rstrip("\n")


def _graph_keys(c: ReviewChange) -> list[NodeKey]:
    if c.kind in ("topic", "schema"):
        return [("topic", c.name)]
    if c.kind == "stream":
        return [("stream", c.name)]
    if c.kind == "consumer":
        return [("consumer", c.name)]
    if c.kind == "permission":
        svc, _verb, what = c.name.split(" ", 2)
        return [("service", svc), ("consumer" if "/" in what else "topic", what)]
    if c.kind == "service":
        return [("service", c.name)]
    return []


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

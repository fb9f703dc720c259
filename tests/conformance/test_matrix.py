"""The conformance matrix: for every case and every server version, natstopo's planner
verdict equals what the server did (see `matrix.py` for the words).

One server per version runs all single-server cases side by side (unique streams), then
the cases that look again after a restart, together, around one restart. A 3-node
cluster per version runs the replicas cases. Every version runs at once; the whole
matrix takes about two minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from harness import (
    NatsCluster,
    NatsServer,
    ServerBinary,
    available_servers,
    running_cluster,
    running_server,
)

from bus_runtime.jetstream.rules import FIELD_RULES, effective

from .cases import (
    CONSUMER_CASES,
    CONSUMER_CLUSTER_CASES,
    CREATE_CASES,
    STREAM_CASES,
    STREAM_CLUSTER_CASES,
)
from .matrix import (
    EXTRA_CASES,
    INEXPRESSIBLE,
    Case,
    RestartBatch,
    Row,
    check_inexpressible,
    run_case,
)
from .probe import CreateObservation, StreamCase, observe_create

pytestmark = [pytest.mark.nats, pytest.mark.conformance]

ALL_SERVERS = available_servers()  # (tests/e2e has a conftest of its own: not imported)
SINGLE = [*STREAM_CASES, *CONSUMER_CASES, *EXTRA_CASES]
CLUSTER = [*STREAM_CLUSTER_CASES, *CONSUMER_CLUSTER_CASES]
# A cluster answers these while it elects a leader; a case that met one runs again, once.
TRANSIENT = ("err_code 10008", "probe error", "no answer")
CONCURRENCY = 12  # cases at once per server: most of a case is waiting for ages to pass


def _vid(b: ServerBinary) -> str:
    return b.version_str


async def _run_single(
    server: NatsServer, binary: ServerBinary
) -> tuple[dict[str, Row], dict[str, CreateObservation]]:
    """Every single-server case side by side, the create cases, then the restart cases
    together around one restart."""
    rows: dict[str, Row] = {}
    version = binary.version
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(case: Case, restart: RestartBatch | None = None) -> None:
        async with sem:
            rows[case.name] = await run_case(nc, case, version, restart)

    try:
        slow_first = sorted(
            (c for c in SINGLE if not c.restart),
            key=lambda c: -(max([b.age for b in c.messages] + [0.0]) + c.settle),
        )
        await asyncio.gather(*(one(c) for c in slow_first))
        made = {c.name: await observe_create(nc, c) for c in CREATE_CASES}
        restarting = [c for c in SINGLE if c.restart]
        batch = RestartBatch(len(restarting), lambda: asyncio.to_thread(server.restart))
        sem = asyncio.Semaphore(len(restarting))
        await asyncio.gather(*(one(c, batch) for c in restarting))
    finally:
        await nc.close()
    return rows, made


async def _run_cluster(cluster: NatsCluster, binary: ServerBinary) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    nc = await nats.connect(cluster.urls, max_reconnect_attempts=-1)
    sem = asyncio.Semaphore(3)

    async def one(case: Case) -> None:
        async with sem:
            row = await run_case(nc, case, binary.version)
            if not row.agrees and any(t in row.detail for t in TRANSIENT):
                row = await run_case(nc, case, binary.version)  # a leader election, once
            rows[case.name] = row

    try:
        await asyncio.gather(*(one(c) for c in CLUSTER))
    finally:
        await nc.close()
    return rows


def _run_all() -> dict[str, tuple[dict[str, Row], dict[str, CreateObservation]]]:
    out: dict[str, tuple[dict[str, Row], dict[str, CreateObservation]]] = {}
    with contextlib.ExitStack() as stack:
        servers = {b.version_str: stack.enter_context(running_server(b)) for b in ALL_SERVERS}
        # The clusters start one after the other (ports are picked free just before they
        # are bound: clusters starting at once would race for them), while the single
        # servers already run their cases.
        clusters: dict[str, NatsCluster] = {}
        ready = {b.version_str: threading.Event() for b in ALL_SERVERS}
        failures: list[BaseException] = []

        def start_clusters() -> None:
            for b in ALL_SERVERS:
                try:
                    clusters[b.version_str] = stack.enter_context(running_cluster(b))
                except BaseException as exc:  # reported by the test, not lost in a thread
                    failures.append(exc)
                finally:
                    ready[b.version_str].set()

        starter = threading.Thread(target=start_clusters)
        starter.start()

        async def version(b: ServerBinary) -> None:
            rows, made = await _run_single(servers[b.version_str], b)
            await asyncio.to_thread(ready[b.version_str].wait)
            if b.version_str in clusters:
                rows.update(await _run_cluster(clusters[b.version_str], b))
            out[b.version_str] = (rows, made)

        async def main() -> None:
            await asyncio.gather(*(version(b) for b in ALL_SERVERS))

        try:
            asyncio.run(main())
        finally:
            starter.join()
        if failures:
            raise failures[0]
    return out


@pytest.fixture(scope="module")
def matrix() -> Iterator[dict[str, tuple[dict[str, Row], dict[str, CreateObservation]]]]:
    if len(ALL_SERVERS) < 4:
        pytest.fail("the conformance matrix needs at least 4 server versions: run `make servers`")
    results = _run_all()
    out = os.environ.get("NATSTOPO_MATRIX_TABLE")
    if out:
        Path(out).write_text(rules_table(results))
    yield results


Results = dict[str, tuple[dict[str, Row], dict[str, CreateObservation]]]
_WORDS = {
    "in_place": "in place",
    "none": "in place",
    "destructive": "destructive",
    "replace": "replace",
    "invalid": "refused by the loader",
    "error": "plan error",
}


def rules_table(results: Results) -> str:
    """Field x version: natstopo's verdicts, each one the server's (markdown).

    `NATSTOPO_MATRIX_TABLE=FILE pytest tests/conformance` writes it; docs/reconciler.md
    holds a copy.
    """
    versions = sorted(results, key=lambda v: tuple(int(x) for x in v.split(".")))
    every = [*SINGLE, *CLUSTER]
    labels = {c.name: (c.label or c.name) for c in every}
    fields: dict[tuple[str, str], list[str]] = {}
    for c in every:
        kind = "stream" if isinstance(c, StreamCase) else "consumer"
        fields.setdefault((kind, c.field), []).append(c.name)
    lines = ["| field | " + " | ".join(versions) + " |", "|---|" + "---|" * len(versions)]
    for (kind, fld), names in fields.items():
        cells = []
        for v in versions:
            rows = [results[v][0][n] for n in names if n in results[v][0]]
            parts = [
                f"{labels[r.case]}: {_WORDS.get(r.verdict, r.verdict)}"
                for r in rows
                if r.verdict not in ("in_place", "none") and r.truth != "n/a"
            ]
            cells.append("; ".join(parts).replace("|", "/") or "in place")
        lines.append(f"| {kind} `{fld}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CASE_IDS = [c.name for c in [*SINGLE, *CLUSTER]]


@pytest.mark.parametrize("version", ALL_SERVERS, ids=_vid)
@pytest.mark.parametrize("case", CASE_IDS)
def test_verdict_is_the_servers(
    matrix: dict[str, tuple[dict[str, Row], dict[str, CreateObservation]]],
    version: ServerBinary,
    case: str,
) -> None:
    row = matrix[version.version_str][0][case]
    assert row.agrees, (
        f"{case} on {row.version}: natstopo {row.verdict}, server {row.truth}: "
        f"{'; '.join(row.problems)}\n  {row.detail}\n{row.plan_text}"
    )


@pytest.mark.parametrize("version", ALL_SERVERS, ids=_vid)
def test_defaults_are_what_the_server_stores(
    matrix: dict[str, tuple[dict[str, Row], dict[str, CreateObservation]]],
    version: ServerBinary,
) -> None:
    """rules.effective of what was sent equals rules.effective of what was stored."""
    made = matrix[version.version_str][1]
    unknown = {r.key for rules in FIELD_RULES.values() for r in rules.values()}
    unknown = {k for k in unknown if all(
        version.version < r.since for rules in FIELD_RULES.values() for r in rules.values()
        if r.key == k
    )}  # fmt: skip
    wrong = []
    for case in CREATE_CASES:
        o = made[case.name]
        if not o.accepted:
            continue
        for key in case.fields:
            if key in ("metadata", "filter_subject", "filter_subjects", "x_natstopo_probe"):
                continue
            if key in unknown:
                continue  # the version does not know the key (natstopo never sends it)
            sent = effective(case.kind, key, o.config_sent)
            stored = effective(case.kind, key, o.config_stored)
            if sent != stored:
                wrong.append(
                    f"{case.name}: {key}: rules say {sent!r}, the server stored {stored!r}"
                )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("case", sorted(INEXPRESSIBLE))
def test_inexpressible_cases_are_refused(case: str) -> None:
    found = next(c for c in [*SINGLE, *CLUSTER] if c.name == case)
    problem = check_inexpressible(found)
    assert problem is None, f"{case}: {INEXPRESSIBLE[case]}, but {problem}"

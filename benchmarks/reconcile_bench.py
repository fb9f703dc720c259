"""Time plan and apply against real nats-server processes started by the test harness.

Topologies: the shipped one (`--env local` on a single server; the 3-node cluster with
replicas 3) and a generated one of 200 streams and 400 consumers (single server).
Phases per case: plan of an empty server, apply (creates), plan again (in sync, the cost
of a drift check), apply again (a no-op), import.

Side by side (`--versus-raw`, also the default): apply of the generated topology against
raw nats-py (`js.add_stream` / `js.add_consumer`) creating the same configs at the same
concurrency on the same server, in one run, alternating which goes first: R1 on one
server and R3 on the 3-node cluster. The ratio is raw seconds / natstopo seconds (1.0:
as fast as raw nats-py). Prints tables and, last, one JSON line. Nothing here asserts a
time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from generate_topology import generate
from harness import available_servers, running_cluster, running_server
from nats.js.api import ConsumerConfig, StreamConfig

from bus_runtime.jetstream.connect import ConnectOptions, connect
from bus_runtime.reconcile.apply import apply_plan
from bus_runtime.reconcile.importer import import_topology
from bus_runtime.reconcile.planner import plan_changes
from bus_runtime.topology.loader import load_topology
from bus_runtime.topology.model import Topology

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_ENV = """\
  bench-cluster:
    defaults: {stream: {replicas: 3, max_age: 1d}}
    streams:
      TAX_AGENT_JOBS: {max_bytes: 256MiB}
      TAX_AGENT_EVENTS: {max_bytes: 256MiB}
      TAX_AGENT_DLQ: {max_bytes: 64MiB}
"""


async def measure(servers: list[str], topology: Topology, concurrency: int) -> dict[str, float]:
    nc = await connect(ConnectOptions(servers=tuple(servers)))
    out: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        plan = await plan_changes(nc, topology)
        out["plan_empty_s"] = time.perf_counter() - t0
        out["assets"] = len(plan.pending)
        t0 = time.perf_counter()
        await apply_plan(nc, plan, concurrency=concurrency)
        out["apply_create_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = await plan_changes(nc, topology)
        out["plan_in_sync_s"] = time.perf_counter() - t0
        assert not again.has_changes, again.to_text()
        t0 = time.perf_counter()
        noop = await apply_plan(nc, await plan_changes(nc, topology))
        out["apply_noop_s"] = time.perf_counter() - t0
        assert not noop.changed
        t0 = time.perf_counter()
        imported = await import_topology(nc)
        out["import_s"] = time.perf_counter() - t0
        assert not imported.skipped, imported.skipped
    finally:
        await nc.close()
    return out


async def _clean(nc: Any) -> None:
    names = json.loads((await nc.request("$JS.API.STREAM.NAMES", b"", timeout=10)).data)
    await asyncio.gather(
        *(
            nc.request(f"$JS.API.STREAM.DELETE.{n}", b"", timeout=30)
            for n in names.get("streams") or []
        )
    )


async def _natstopo_apply(nc: Any, topology: Topology, concurrency: int) -> float:
    plan = await plan_changes(nc, topology)
    t0 = time.perf_counter()
    await apply_plan(nc, plan, concurrency=concurrency)
    return time.perf_counter() - t0


async def _raw_apply(nc: Any, topology: Topology, concurrency: int) -> float:
    """The same configs natstopo creates, through nats-py's own JetStream API."""
    plan = await plan_changes(nc, topology)
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in plan.changes:
        assert c.config is not None
        groups.setdefault(c.stream, []).append(c.config)
    js = nc.jetstream()
    sem = asyncio.Semaphore(concurrency)

    async def one(stream: str, configs: list[dict[str, Any]]) -> None:
        async with sem:
            await js.add_stream(StreamConfig.from_response(dict(configs[0])))
            for cfg in configs[1:]:
                await js.add_consumer(stream, ConsumerConfig.from_response(dict(cfg)))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s, cfgs) for s, cfgs in groups.items()))
    return time.perf_counter() - t0


async def versus_raw(
    servers: list[str], topology: Topology, levels: list[int], rounds: int
) -> list[dict[str, float]]:
    """natstopo's apply and raw nats-py's creates, each level `rounds` times (alternating
    which goes first), best of each."""
    nc = await connect(ConnectOptions(servers=tuple(servers), connect_timeout=10))
    out = []
    try:
        for conc in levels:
            mine: list[float] = []
            raw: list[float] = []
            for r in range(rounds):
                order = [(_natstopo_apply, mine), (_raw_apply, raw)]
                for fn, into in order if r % 2 == 0 else order[::-1]:
                    await _clean(nc)
                    into.append(await fn(nc, topology, conc))
            out.append(
                {
                    "concurrency": conc,
                    "natstopo_s": min(mine),
                    "raw_nats_py_s": min(raw),
                    "ratio": min(raw) / min(mine),
                }
            )
        await _clean(nc)
    finally:
        await nc.close()
    return out


def _print_versus(title: str, rows: list[dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'concurrency':>12}{'natstopo s':>14}{'raw nats-py s':>16}{'ratio':>8}")
    for r in rows:
        print(
            f"{int(r['concurrency']):>12}{r['natstopo_s']:>14.3f}{r['raw_nats_py_s']:>16.3f}"
            f"{r['ratio']:>8.2f}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--consumers", type=int, default=2, help="consumers per stream")
    ap.add_argument("--topics", type=int, default=2, help="topics per stream")
    ap.add_argument("--no-cluster", action="store_true", help="skip the 3-node cluster case")
    ap.add_argument(
        "--generated-on-cluster",
        action="store_true",
        help="also apply the generated topology with replicas 3 on the 3-node cluster (slow)",
    )
    ap.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="apply concurrency levels"
    )
    ap.add_argument(
        "--versus-levels",
        type=int,
        nargs="+",
        default=[1, 4, 8, 16, 32],
        help="concurrency levels of the side-by-side runs",
    )
    ap.add_argument("--rounds", type=int, default=2, help="side-by-side runs per level")
    ap.add_argument(
        "--versus-only", action="store_true", help="only the side-by-side apply against raw nats-py"
    )
    args = ap.parse_args()
    binary = available_servers()[-1]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "generated.yaml"
        big.write_text(generate(args.streams, args.topics, args.consumers))
        copy = Path(tmp) / "topology"
        shutil.copytree(ROOT / "topology", copy)
        shipped_path = copy / "topology.yaml"
        text = shipped_path.read_text()
        shipped_path.write_text(
            text.replace("\nenvironments:\n", "\nenvironments:\n" + CLUSTER_ENV, 1)
        )
        cases: list[tuple[str, Topology, bool]] = [
            ("shipped local, single server", load_topology(shipped_path, "local"), False),
            (
                f"generated {args.streams} streams / {args.streams * args.consumers} consumers",
                load_topology(big, "local"),
                False,
            ),
        ]
        if not args.no_cluster:
            cases.append(
                ("shipped R3, 3-node cluster", load_topology(shipped_path, "bench-cluster"), True)
            )
        if args.generated_on_cluster:
            big_r3 = Path(tmp) / "generated-r3.yaml"
            big_r3.write_text(
                generate(args.streams, args.topics, args.consumers)
                .replace("replicas: 1, max_age: 7d", "replicas: 3, max_age: 7d")
                .replace("max_bytes: 1GiB", "max_bytes: 1MiB")
            )
            cases.append(
                (
                    f"generated R3 {args.streams} streams, 3-node cluster",
                    load_topology(big_r3, "local"),
                    True,
                )
            )
        generated = load_topology(big, "local")
        versus: dict[str, list[dict[str, float]]] = {}
        with running_server(binary) as server:
            versus["R1, one server"] = asyncio.run(
                versus_raw([server.url], generated, args.versus_levels, args.rounds)
            )
        if not args.no_cluster:
            big_r3 = Path(tmp) / "generated-r3-versus.yaml"
            big_r3.write_text(
                generate(args.streams, args.topics, args.consumers)
                .replace("replicas: 1, max_age: 7d", "replicas: 3, max_age: 7d")
                .replace("max_bytes: 1GiB", "max_bytes: 1MiB")
            )
            with running_cluster(binary) as cluster:
                versus["R3, 3-node cluster"] = asyncio.run(
                    versus_raw(cluster.urls, load_topology(big_r3, "local"), args.versus_levels, 1)
                )
        n = f"{args.streams} streams / {args.streams * args.consumers} consumers"
        for where, rows in versus.items():
            _print_versus(f"apply {n}, {where} (ratio: raw s / natstopo s)", rows)
        if args.versus_only:
            print(json.dumps({"server": binary.version_str, "versus_raw": versus}))
            return 0
        for base, topology, cluster in cases:
            for conc in args.concurrency:
                label = f"{base}, apply x{conc}"
                if cluster:
                    with running_cluster(binary) as c:
                        results[label] = asyncio.run(measure(c.urls, topology, conc))
                else:
                    with running_server(binary) as s:
                        results[label] = asyncio.run(measure([s.url], topology, conc))
    print(f"nats-server {binary.version_str}")
    cols = [
        "assets",
        "plan_empty_s",
        "apply_create_s",
        "plan_in_sync_s",
        "apply_noop_s",
        "import_s",
    ]
    print(f"{'case':<60}" + "".join(f"{c:>15}" for c in cols))
    for label, r in results.items():
        cells = "".join(f"{int(r[c]):>15}" if c == "assets" else f"{r[c]:>15.3f}" for c in cols)
        print(f"{label:<60}{cells}")
    print(json.dumps({"server": binary.version_str, "results": results, "versus_raw": versus}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time plan and apply against real nats-server processes started by the test harness.

Topologies: the shipped one (`--env local` on a single server; the 3-node cluster with
replicas 3) and a generated one of 200 streams and 400 consumers (single server).
Phases per case: plan of an empty server, apply (creates), plan again (in sync, the cost
of a drift check), apply again (a no-op), import. Prints a table and, last, one JSON line.
Nothing here asserts a time.
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
    print(json.dumps({"server": binary.version_str, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The bus against the Go client (`nats bench`, natscli v0.5.0) and raw nats-py, in one run.

One nats-server (started by tests/harness.py on a free 127.0.0.1 port), one file-storage
R1 stream with a 2 m duplicate window (the topology of benchmarks/runtime_bench.py), the
same message for everyone: the bus's own envelope of the benchmark payload (351 bytes of
body, `schema` digest included), which the Go client sends from a `--payload` file.
Every publisher sets a unique Nats-Msg-Id (`--dedup` for the Go client).

Each round alternates, in a rotating order:
- publish: `nats bench js pub async` (500 in flight), `bus.publish_many` (envelope, schema
  check, Msg-Id and traceparent, retries armed), raw nats-py `js.publish_async` + wait;
- consume of one filled stream, each through its own durable: `nats bench js fetch
  --batch 100` (ack each), `bus.subscribe` with a no-op handler, raw nats-py
  `fetch(100)` + `ack`;
- the source document's pattern, `await bus.publish(...)` each vs raw `await js.publish`
  each (fewer messages: one round trip per message).
Per round it prints bus/Go and bus/raw ratios; at the end their medians, then one JSON line.
`--profile [N]` adds a cProfile of the bus's publish_many, consume and publish-each.
`--pin` puts the server on one CPU and the clients on another (as on separate hosts).
The Go client is found by `tools/go-tools/build.sh --locate` (`make go-tools`) or `--nats`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import nats
import runtime_bench as rb
from harness import running_server

from bus_runtime import NATSEventBus, load_topology
from bus_runtime.reconcile.apply import apply_plan
from bus_runtime.reconcile.planner import plan_changes

REPO = Path(__file__).resolve().parent.parent


def locate_nats(explicit: str | None) -> str:
    if explicit:
        return explicit
    out = subprocess.run(
        ["bash", str(REPO / "tools" / "go-tools" / "build.sh"), "--locate"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit("natscli is not built: run `make go-tools` (or pass --nats PATH)")
    return str(Path(out.stdout.strip().splitlines()[-1]) / "nats")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def go_bench(nats_bin: str, url: str, args: list[str], clock: rb.Clock, n: int) -> None:
    """Runs `nats bench ...`; its own measured rate (first to last message) goes in `clock`."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as f:
        cpu0 = children_cpu()
        out = subprocess.run(
            [nats_bin, "bench", *args, "--server", url, "--no-progress", "--csv", f.name],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"nats bench {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        rows = list(csv.DictReader(open(f.name)))  # noqa: SIM115 (closed with the tempfile)
    # One client: one row. (Its MsgCount counts acks and replies too; the rate is of `n`.)
    clock.wall += sum(float(r["DurationSecs"]) for r in rows)
    clock.cpu += children_cpu() - cpu0  # the Go process's CPU (includes its start-up)
    clock.messages += n


async def raw_publish_each(js: Any, bodies: list[bytes], clock: rb.Clock) -> None:
    await rb.doc_publish(js, bodies, clock)


async def run(url: str, nats_bin: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="natstopo-bench-go-"))
    (tmp / "event.json").write_text(json.dumps(rb.SCHEMA))
    (tmp / "bench.yaml").write_text(rb.TOPOLOGY)
    topology = load_topology(tmp / "bench.yaml")
    nc = await nats.connect(url)
    js = nc.jetstream()
    await apply_plan(nc, await plan_changes(nc, topology))
    await rb.add_raw_consumer(js, "raw-100")
    n = args.messages
    n_each = max(200, n // 10)
    bus = NATSEventBus(url, topology=topology, service="svc-bench", startup_check="off")
    await bus.start()
    digest = bus.binding.publish_target("event.happened").schema_stamp
    bodies = [rb.encode_envelope("event.happened", rb.make_payload(i), digest) for i in range(n)]
    payload_file = tmp / "payload.json"
    payload_file.write_bytes(bodies[0])
    size = len(bodies[0])
    print(
        f"message: {size} bytes of body (the bus's envelope) + Nats-Msg-Id; {n} messages per "
        f"variant ({n_each} awaiting each), {args.rounds} rounds; {nats_bin}",
        flush=True,
    )
    go_pub_args = [
        "js", "pub", "async", rb.SUBJECT, "--stream", "BENCH", "--msgs", str(n),
        "--payload", str(payload_file), "--dedup",
    ]  # fmt: skip
    go_fetch_args = [
        "js", "fetch", "--stream", "BENCH", "--msgs", str(n), "--size", str(size),
        "--batch", "100", "--acks", "explicit",
    ]  # fmt: skip

    names = ("go_pub", "bus_pub", "raw_pub", "go_fetch", "bus_consume", "raw_fetch", "bus_each", "raw_each")  # fmt: skip
    rates: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    gcs: dict[str, list[float]] = {
        k: [] for k in ("bus_pub", "bus_consume", "raw_pub", "raw_fetch")
    }
    ratio_names = ("pub_vs_go", "pub_vs_raw", "consume_vs_go", "consume_vs_raw", "each_vs_raw")
    ratios: dict[str, list[float]] = {k: [] for k in ratio_names}
    for r in range(args.rounds):
        c = {k: rb.Clock() for k in names}
        order = ["go", "bus", "raw"]
        order = order[r % 3 :] + order[: r % 3]
        for which in order:
            await js.purge_stream("BENCH")
            if which == "go":
                go_bench(nats_bin, url, go_pub_args, c["go_pub"], n)
                stored = (await js.stream_info("BENCH")).state.messages
                if stored != n:
                    raise RuntimeError(f"the Go client stored {stored} messages, not {n}")
            elif which == "bus":
                await rb.bus_publish(bus, n, c["bus_pub"])
            else:
                await rb.raw_publish_async(js, bodies, c["raw_pub"])
        await rb.fill(js, bodies)
        for which in order:
            if which == "go":
                go_bench(nats_bin, url, go_fetch_args, c["go_fetch"], n)
            elif which == "bus":
                await rb.bus_consume(url, topology, n, c["bus_consume"])
            else:
                await rb.raw_fetch(js, "raw-100", n, 100, c["raw_fetch"])
        for which in order[::-1]:
            if which == "go":
                continue
            await js.purge_stream("BENCH")
            if which == "bus":
                await rb.bus_publish_each(bus, n_each, c["bus_each"])
            else:
                await raw_publish_each(js, bodies[:n_each], c["raw_each"])
        for k, clock in c.items():
            rates[k].append(clock.rate)
            cpu[k].append(clock.cpu_us)
            if k in gcs:
                gcs[k].append(clock.gc_us)
        ratios["pub_vs_go"].append(c["bus_pub"].rate / c["go_pub"].rate)
        ratios["pub_vs_raw"].append(c["bus_pub"].rate / c["raw_pub"].rate)
        ratios["consume_vs_go"].append(c["bus_consume"].rate / c["go_fetch"].rate)
        ratios["consume_vs_raw"].append(c["bus_consume"].rate / c["raw_fetch"].rate)
        ratios["each_vs_raw"].append(c["bus_each"].rate / c["raw_each"].rate)
        last = {k: v[-1] for k, v in rates.items()}
        print(
            f"round {r + 1}: publish go {last['go_pub']:,.0f} bus {last['bus_pub']:,.0f} "
            f"raw {last['raw_pub']:,.0f} msg/s (bus/go {ratios['pub_vs_go'][-1]:.2f}, "
            f"bus/raw {ratios['pub_vs_raw'][-1]:.2f}); consume go {last['go_fetch']:,.0f} "
            f"bus {last['bus_consume']:,.0f} raw {last['raw_fetch']:,.0f} "
            f"(bus/go {ratios['consume_vs_go'][-1]:.2f}, bus/raw "
            f"{ratios['consume_vs_raw'][-1]:.2f}); each bus {last['bus_each']:,.0f} raw "
            f"{last['raw_each']:,.0f} (bus/raw {ratios['each_vs_raw'][-1]:.2f}); bus cpu/msg "
            f"pub {cpu['bus_pub'][-1]:.1f} consume {cpu['bus_consume'][-1]:.1f} us (of which "
            f"the collector {gcs['bus_pub'][-1]:.1f} / {gcs['bus_consume'][-1]:.1f})",
            flush=True,
        )

    if args.profile:
        await js.purge_stream("BENCH")
        prof = cProfile.Profile()
        prof.enable()
        await rb.bus_publish(bus, n, rb.Clock())
        prof.disable()
        rb._profile("bus publish_many", prof, args.profile)
        await rb.fill(js, bodies)
        prof = cProfile.Profile()
        prof.enable()
        await rb.bus_consume(url, topology, n, rb.Clock())
        prof.disable()
        rb._profile("bus consume", prof, args.profile)
        await js.purge_stream("BENCH")
        prof = cProfile.Profile()
        prof.enable()
        await rb.bus_publish_each(bus, n_each, rb.Clock())
        prof.disable()
        rb._profile("bus publish, awaiting each", prof, args.profile)
    await bus.stop()
    await nc.close()
    med_ratios = {k: round(statistics.median(v), 3) for k, v in ratios.items()}
    print(
        "medians: publish bus/go {pub_vs_go} bus/raw {pub_vs_raw}; consume bus/go "
        "{consume_vs_go} bus/raw {consume_vs_raw}; await-each bus/raw {each_vs_raw}".format(
            **med_ratios
        )
    )
    return {
        "messages": n,
        "messages_each": n_each,
        "body_bytes": size,
        "rounds": args.rounds,
        "msg_per_s": {k: round(statistics.median(v)) for k, v in rates.items()},
        "client_cpu_us_per_msg": {k: round(statistics.median(v), 1) for k, v in cpu.items()},
        "collector_us_per_msg": {k: round(statistics.median(v), 2) for k, v in gcs.items()},
        **med_ratios,
        "per_round": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="5,000 messages, 3 rounds")
    ap.add_argument("--nats", help="the natscli `nats` binary (default: tools/go-tools)")
    ap.add_argument(
        "--profile", type=int, nargs="?", const=25, default=0, help="cProfile, top N functions"
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="the server on one CPU, the clients (this process, nats bench) on another: as "
        "on separate hosts, each side's CPU its own",
    )
    args = ap.parse_args()
    if args.quick:
        args.messages = min(args.messages, 5_000)
        args.rounds = min(args.rounds, 3)
    nats_bin = locate_nats(args.nats)
    started = time.perf_counter()
    with running_server() as server:
        if args.pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2 or server.proc is None:
                raise SystemExit("--pin needs two CPUs")
            os.sched_setaffinity(server.proc.pid, {cpus[0]})
            os.sched_setaffinity(0, {cpus[1]})  # nats bench, started from here, inherits it
            print(f"pinned: server on CPU {cpus[0]}, clients on CPU {cpus[1]}", flush=True)
        result = asyncio.run(run(server.url, nats_bin, args))
        result["pinned"] = args.pin
    result["server"] = server.binary.version_str
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

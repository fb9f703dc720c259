"""The event bus against raw nats-py, in one run on one server (started by the test harness).

Publishing 200-byte events to a file-storage R1 stream:
- `raw_publish_async`: nats-py's fastest path, `js.publish_async` with a unique Nats-Msg-Id
  (up to 4,000 pending), then waiting for every ack;
- `bus_publish`: `bus.publish_many` with everything on: EventPayload made (ULID, time),
  envelope encoded, JSON Schema checked, Nats-Msg-Id and traceparent headers, retries armed;
- `doc_publish`: the source document's design, awaiting each `js.publish`;
- `bus_publish_each`: the same calling pattern on the bus (`ok = await bus.publish(...)`).
Consuming the same messages (each consumer its own durable on the stream):
- `raw_fetch100`: `pull_subscribe_bind` + `fetch(100)` + `ack` (nats-py's best);
- `bus_consume`: `bus.subscribe` with a handler that does nothing (decode + schema check + ack);
- `doc_fetch10`: the source document's batches of 10.

The machine is shared and noisy: the variants alternate within each round and the ratios
(bus / raw) are medians over rounds of one run. The last line is JSON.
`--profile` adds a cProfile of the bus's publish and consume (top functions by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import nats
from harness import running_server
from nats.js.api import ConsumerConfig

from bus_runtime import EventPayload, NATSEventBus, load_topology, new_event_id
from bus_runtime.bus.envelope import encode_envelope
from bus_runtime.reconcile.apply import apply_plan
from bus_runtime.reconcile.planner import plan_changes

TOPOLOGY = """\
version: 1
name: bench
services:
  svc-bench: {}
streams:
  BENCH:
    subject_prefix: bench
    retention: limits
    storage: file
    replicas: 1
    duplicate_window: 2m
    topics:
      event.happened:
        publishers: [svc-bench]
        schema: event.json
    consumers:
      bench-worker:
        service: svc-bench
        topics: [event.happened]
        ack_wait: 30s
        max_deliver: 3
        max_ack_pending: 10000
        fetch_batch: 100
        concurrency: 16
"""
SCHEMA = {
    "type": "object",
    "required": ["document_id", "client_id", "size_bytes", "kind"],
    "properties": {
        "document_id": {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"},
        "client_id": {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"},
        "size_bytes": {"type": "integer", "minimum": 1},
        "kind": {"enum": ["p60", "payslip", "other"]},
    },
    "additionalProperties": True,
}
SUBJECT = "bench.event.happened"
DOC = new_event_id()
CLIENT = new_event_id()


def make_payload(i: int) -> EventPayload:
    return EventPayload(
        data={"document_id": DOC, "client_id": CLIENT, "size_bytes": 1000 + i, "kind": "p60"},
        actor="svc-bench",
        tenant_id="tenant-0001",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )


class _Collector:
    """Seconds the cyclic garbage collector ran in this process (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began


COLLECTOR = _Collector()


class Clock:
    """Wall and CPU (this process) seconds of one measured piece of work, and the cyclic
    collector's share of it."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.gc = 0.0
        self.messages = 0

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        self._g = COLLECTOR.seconds
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c
        self.gc += COLLECTOR.seconds - self._g

    @property
    def rate(self) -> float:
        return self.messages / self.wall

    @property
    def cpu_us(self) -> float:
        """Client CPU microseconds per message (robust to a noisy machine)."""
        return self.cpu / self.messages * 1e6

    @property
    def gc_us(self) -> float:
        """Microseconds per message the cyclic collector ran (part of `cpu_us`)."""
        return self.gc / self.messages * 1e6


async def raw_publish_async(js: Any, bodies: list[bytes], clock: Clock) -> None:
    ids = [new_event_id() for _ in bodies]
    with clock:
        futures = [
            await js.publish_async(SUBJECT, b, headers={"Nats-Msg-Id": i})
            for b, i in zip(bodies, ids, strict=True)
        ]
        for f in futures:
            await f
    clock.messages += len(bodies)


async def doc_publish(js: Any, bodies: list[bytes], clock: Clock) -> None:
    ids = [new_event_id() for _ in bodies]
    with clock:
        for b, i in zip(bodies, ids, strict=True):
            await js.publish(SUBJECT, b, headers={"Nats-Msg-Id": i})
    clock.messages += len(bodies)


async def bus_publish(bus: NATSEventBus, n: int, clock: Clock) -> None:
    with clock:
        results = await bus.publish_many("event.happened", [make_payload(i) for i in range(n)])
    clock.messages += n
    assert all(results), "a bus publish failed"


async def bus_publish_each(bus: NATSEventBus, n: int, clock: Clock) -> None:
    """The source document's calling pattern on the bus: `ok = await bus.publish(...)`."""
    with clock:
        for i in range(n):
            assert await bus.publish("event.happened", make_payload(i))
    clock.messages += n


async def raw_fetch(js: Any, durable: str, n: int, batch: int, clock: Clock) -> None:
    sub = await js.pull_subscribe_bind(durable=durable, stream="BENCH")
    got = 0
    with clock:
        while got < n:
            msgs = await sub.fetch(batch, timeout=5)
            for m in msgs:
                await m.ack()
            got += len(msgs)
    clock.messages += n
    await sub.unsubscribe()


async def bus_consume(url: str, topology: Any, n: int, clock: Clock) -> None:
    bus = NATSEventBus(url, topology=topology, service="svc-bench", startup_check="off")
    await bus.start()
    done = asyncio.Event()
    count = 0

    async def handle(topic: str, payload: EventPayload) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    with clock:
        await bus.subscribe("event.happened", handle)
        await asyncio.wait_for(done.wait(), 120)
    clock.messages += n
    await bus.stop()


async def add_raw_consumer(js: Any, name: str) -> None:
    await js.add_consumer(
        "BENCH",
        ConsumerConfig(
            durable_name=name,
            ack_policy="explicit",
            max_ack_pending=10000,
            deliver_policy="all",
            filter_subject=SUBJECT,
        ),
    )


async def fill(js: Any, bodies: list[bytes]) -> None:
    await js.purge_stream("BENCH")
    futures = [
        await js.publish_async(SUBJECT, b, headers={"Nats-Msg-Id": new_event_id()}) for b in bodies
    ]
    for f in futures:
        await f


def _profile(title: str, prof: cProfile.Profile, top: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(f"--- profile: {title} (top {top} by own time)")
    lines = out.getvalue().splitlines()
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    for ln in lines[start : start + top + 1]:
        print("   ", ln[:160])


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="natstopo-bench-"))
    (tmp / "event.json").write_text(json.dumps(SCHEMA))
    (tmp / "bench.yaml").write_text(TOPOLOGY)
    topology = load_topology(tmp / "bench.yaml")
    nc = await nats.connect(url)
    js = nc.jetstream()
    await apply_plan(nc, await plan_changes(nc, topology))
    await add_raw_consumer(js, "raw-100")
    await add_raw_consumer(js, "raw-10")
    n = args.messages
    n_doc = max(500, n // 10)
    bodies = [encode_envelope("event.happened", make_payload(i)) for i in range(n)]
    print(f"message size: {len(bodies[0])} bytes; {n} messages per variant, {args.rounds} rounds")

    bus = NATSEventBus(url, topology=topology, service="svc-bench", startup_check="off")
    await bus.start()
    names = (
        "raw_publish_async",
        "bus_publish",
        "doc_publish",
        "bus_publish_each",
        "raw_fetch100",
        "bus_consume",
        "doc_fetch10",
    )
    rates: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    ratios: dict[str, list[float]] = {
        k: [] for k in ("publish", "consume", "publish_cpu", "consume_cpu")
    }
    slices = args.slices
    per = n // slices
    for r in range(args.rounds):
        clocks = {k: Clock() for k in names}
        # Short alternating slices: load that drifts on a shared machine hits both alike.
        for i in range(slices):
            for which in ("raw", "bus") if (r + i) % 2 == 0 else ("bus", "raw"):
                await js.purge_stream("BENCH")
                if which == "raw":
                    await raw_publish_async(js, bodies[:per], clocks["raw_publish_async"])
                else:
                    await bus_publish(bus, per, clocks["bus_publish"])
        for i in range(slices):
            await fill(js, bodies[:per])
            for which in ("raw", "bus") if (r + i) % 2 == 1 else ("bus", "raw"):
                if which == "raw":
                    await raw_fetch(js, "raw-100", per, 100, clocks["raw_fetch100"])
                else:
                    await bus_consume(url, topology, per, clocks["bus_consume"])
            await raw_fetch(js, "raw-10", per, 10, clocks["doc_fetch10"])
        await js.purge_stream("BENCH")
        await doc_publish(js, bodies[:n_doc], clocks["doc_publish"])
        await js.purge_stream("BENCH")
        await bus_publish_each(bus, n_doc, clocks["bus_publish_each"])
        for k, c in clocks.items():
            rates[k].append(c.rate)
            cpu[k].append(c.cpu_us)
        ratios["publish"].append(clocks["bus_publish"].rate / clocks["raw_publish_async"].rate)
        ratios["consume"].append(clocks["bus_consume"].rate / clocks["raw_fetch100"].rate)
        ratios["publish_cpu"].append(
            clocks["raw_publish_async"].cpu_us / clocks["bus_publish"].cpu_us
        )
        ratios["consume_cpu"].append(clocks["raw_fetch100"].cpu_us / clocks["bus_consume"].cpu_us)
        print(
            f"round {r + 1}: publish raw {rates['raw_publish_async'][-1]:,.0f} "
            f"bus {rates['bus_publish'][-1]:,.0f} doc {rates['doc_publish'][-1]:,.0f} msg/s "
            f"(ratio {ratios['publish'][-1]:.2f}, cpu/msg raw {cpu['raw_publish_async'][-1]:.0f} "
            f"bus {cpu['bus_publish'][-1]:.0f} us); consume raw {rates['raw_fetch100'][-1]:,.0f} "
            f"bus {rates['bus_consume'][-1]:,.0f} doc {rates['doc_fetch10'][-1]:,.0f} msg/s "
            f"(ratio {ratios['consume'][-1]:.2f}, cpu/msg raw {cpu['raw_fetch100'][-1]:.0f} "
            f"bus {cpu['bus_consume'][-1]:.0f} us)",
            flush=True,
        )

    if args.profile:
        await js.purge_stream("BENCH")
        prof = cProfile.Profile()
        prof.enable()
        await bus_publish(bus, n, Clock())
        prof.disable()
        _profile("bus publish_many", prof, args.profile)
        await fill(js, bodies)
        await js.delete_consumer("BENCH", "bench-worker")
        await apply_plan(nc, await plan_changes(nc, topology))
        prof = cProfile.Profile()
        prof.enable()
        await bus_consume(url, topology, n, Clock())
        prof.disable()
        _profile("bus consume", prof, args.profile)
    await bus.stop()
    await nc.close()
    med = {k: round(statistics.median(v)) for k, v in rates.items()}
    med_cpu = {k: round(statistics.median(v), 1) for k, v in cpu.items()}
    return {
        "messages": n,
        "rounds": args.rounds,
        "msg_per_s": med,
        "client_cpu_us_per_msg": med_cpu,
        "publish_ratio": round(statistics.median(ratios["publish"]), 3),
        "consume_ratio": round(statistics.median(ratios["consume"]), 3),
        "publish_cpu_ratio": round(statistics.median(ratios["publish_cpu"]), 3),
        "consume_cpu_ratio": round(statistics.median(ratios["consume_cpu"]), 3),
        "publish_ratios": [round(x, 3) for x in ratios["publish"]],
        "consume_ratios": [round(x, 3) for x in ratios["consume"]],
        "bus_vs_doc_publish": round(med["bus_publish"] / med["doc_publish"], 2),
        "bus_each_vs_doc_publish": round(med["bus_publish_each"] / med["doc_publish"], 2),
        "bus_vs_doc_consume": round(med["bus_consume"] / med["doc_fetch10"], 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slices", type=int, default=4, help="alternations per round")
    ap.add_argument("--quick", action="store_true", help="fewer messages and rounds (< 60 s)")
    ap.add_argument(
        "--profile", type=int, nargs="?", const=25, default=0, help="cProfile, top N functions"
    )
    args = ap.parse_args()
    if args.quick:
        args.messages = min(args.messages, 6_000)
        args.rounds = min(args.rounds, 3)
        args.slices = min(args.slices, 2)
    started = time.perf_counter()
    with running_server() as server:
        result = asyncio.run(run(server.url, args))
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

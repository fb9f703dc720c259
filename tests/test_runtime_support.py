"""Helpers of the runtime tests: a small topology written per test, provisioning, reading streams.

The topology: stream JOBS (interest, dead letters to DLQ) with topics `job.created` (a
payload schema) and `firm.*.synced` (a `*` token), consumer `a-worker` of service svc-a;
svc-b is declared but publishes and consumes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from bus_runtime import Topology, load_topology
from bus_runtime.reconcile.apply import apply_plan
from bus_runtime.reconcile.planner import plan_changes

JOB_SCHEMA = {
    "type": "object",
    "required": ["n"],
    "properties": {"n": {"type": "integer", "minimum": 0}, "fail": {"type": "string"}},
}

TOPOLOGY = """\
version: 1
name: rt-test
defaults:
  stream: {{storage: file, replicas: {replicas}, duplicate_window: 2m}}
  consumer: {{ack_policy: explicit, ack_wait: {ack_wait}, max_deliver: {max_deliver}}}
services:
  svc-a: {{}}
  svc-b: {{}}
streams:
  JOBS:
    subject_prefix: jobs
    retention: interest
    dead_letter: DLQ
    topics:
      job.created:
        publishers: [svc-a]
        schema: job.json
      firm.*.synced:
        publishers: [svc-a]
    consumers:
      a-worker:
        service: svc-a
        topics: [job.created, firm.*.synced]
{backoff}        fetch_batch: {fetch_batch}
        concurrency: {concurrency}
  DLQ:
    subject_prefix: dlq
    retention: limits
"""


def write_topology(
    folder: Path,
    *,
    replicas: int = 1,
    ack_wait: str = "2s",
    max_deliver: int = 3,
    backoff: str | None = "[100ms, 200ms]",
    fetch_batch: int = 10,
    concurrency: int = 4,
    name: str = "topology.yaml",
) -> Path:
    """Write the test topology (and its schema) into `folder`; the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(JOB_SCHEMA))
    path = folder / name
    path.write_text(
        TOPOLOGY.format(
            replicas=replicas,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            backoff=f"        backoff: {backoff}\n" if backoff else "",
            fetch_batch=fetch_batch,
            concurrency=concurrency,
        )
    )
    return path


async def provision(nc: Client, topology: Topology) -> None:
    """Create the topology's streams and consumers on the server (through the reconciler)."""
    plan = await plan_changes(nc, topology)
    if plan.has_changes:
        await apply_plan(nc, plan, allow_destructive=True)


async def provision_url(url: str | list[str], path: Path) -> Topology:
    import nats

    topology = load_topology(path)
    nc = await nats.connect(servers=url if isinstance(url, list) else [url])
    try:
        await provision(nc, topology)
    finally:
        await nc.close()
    return topology


def _headers(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    out: dict[str, str] = {}
    for line in base64.b64decode(raw).decode().split("\r\n")[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


async def stream_messages(nc: Client, stream: str) -> list[dict[str, Any]]:
    """Every message of a stream: dicts with subject, seq, headers, data (bytes)."""
    info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)).data)
    state = info["state"]
    out = []
    seq, last = state["first_seq"], state["last_seq"]
    while seq and seq <= last:
        resp = json.loads(
            (
                await nc.request(
                    f"$JS.API.STREAM.MSG.GET.{stream}",
                    json.dumps({"seq": seq, "next_by_subj": ">"}).encode(),
                    timeout=5,
                )
            ).data
        )
        if "error" in resp:
            break
        m = resp["message"]
        out.append(
            {
                "subject": m["subject"],
                "seq": m["seq"],
                "headers": _headers(m.get("hdrs")),
                "data": base64.b64decode(m.get("data") or ""),
            }
        )
        seq = m["seq"] + 1
    return out


async def eventually(
    predicate: Callable[[], bool], within: float = 15.0, what: str = "condition"
) -> None:
    """Wait until `predicate()` is true; AssertionError naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)

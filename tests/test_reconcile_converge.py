"""Plans converge, against a real server: a property test over topologies and their changes.

Hypothesis draws a sequence of valid topologies (two streams, up to two consumers each,
settings from every field the format knows). Each one is applied to a real server after
messages were published into the streams and some acknowledged; then:

- one apply converges: the next plan is empty;
- no stored message is lost unless the plan said so (a `destructive` or `replace` step,
  or a delete).

Examples are bounded (CI time): every example is a few applies on one server, cleaned in
between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import nats
import pytest
import yaml
from harness import NatsServer, ServerBinary, available_servers, running_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from reconcile_helpers import topology_from_text

from bus_runtime.reconcile.apply import apply_plan
from bus_runtime.reconcile.plan import Plan
from bus_runtime.reconcile.planner import plan_changes

pytestmark = [pytest.mark.nats, pytest.mark.slow]

EXAMPLES = 30
_ALL = available_servers()
SERVERS = sorted({_ALL[0], _ALL[-1]}) if _ALL else []  # the oldest and the newest
STEPS = 3


def _maybe(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([None, *values])


@st.composite
def consumer_doc(
    draw: st.DrawFn, topic: str | None, workqueue: bool, service: str
) -> dict[str, Any]:
    doc: dict[str, Any] = {"service": service}
    if topic is not None:
        doc["topics"] = [topic]
    settings_: dict[str, Any] = {
        "ack_policy": None if workqueue else draw(_maybe(["explicit", "all"])),
        "deliver_policy": None if workqueue else draw(_maybe(["all", "new", "last"])),
        "max_ack_pending": draw(_maybe([10, 0, 5000])),
        "replay_policy": draw(_maybe(["instant", "original"])),
        "max_waiting": draw(_maybe([100, 512])),
        "max_request_batch": draw(_maybe([10])),
        "max_request_expires": draw(_maybe(["5s"])),
        "headers_only": draw(_maybe([False])),  # true: refused (the bus needs bodies)
        "description": draw(_maybe(["one", "two"])),
        "metadata": draw(_maybe([{"k": "v"}, {"k": "w"}])),
    }
    max_deliver = draw(_maybe([3, 5, -1]))
    settings_["max_deliver"] = max_deliver
    if max_deliver is None or max_deliver == -1 or max_deliver >= 2:
        settings_["backoff"] = draw(_maybe([["1s", "2s"], ["1m"]]))
    if not settings_.get("backoff"):
        settings_["ack_wait"] = draw(_maybe(["10s", "1m"]))
    doc.update({k: v for k, v in settings_.items() if v is not None})
    return doc


@st.composite
def stream_doc(draw: st.DrawFn, prefix: str, ttl: bool, batched: bool) -> dict[str, Any]:
    retention = draw(_maybe(["limits", "interest", "workqueue"]))
    t1, t2 = f"{prefix}t1", f"{prefix}t2"  # topic names are unique in a topology
    doc: dict[str, Any] = {"subject_prefix": prefix, "topics": {t1: {}, t2: {}}}
    fields: dict[str, Any] = {
        "retention": retention,
        "storage": draw(_maybe(["file", "memory"])),
        "max_age": draw(_maybe(["1h", "1d", 0])),
        "max_bytes": draw(_maybe(["1MiB", "64MiB", 0, -1])),
        "max_msgs": draw(_maybe([5, 100, 0])),
        "max_msgs_per_subject": draw(_maybe([2, 50, 0])),
        "max_msg_size": draw(_maybe(["1KiB", 0])),
        "max_consumers": draw(_maybe([10, 20, 0])),
        "discard": draw(_maybe(["old", "new"])),
        "duplicate_window": draw(_maybe(["1m", "2m"])),
        "compression": draw(_maybe(["none", "s2"])),
        "allow_direct": draw(_maybe([True, False])),
        "deny_delete": draw(_maybe([True, False])),
        "description": draw(_maybe(["a", "b"])),
        "metadata": draw(_maybe([{"k": "v"}])),
    }
    rollup, purge = draw(_maybe([True, False])), draw(_maybe([True, False]))
    if not (rollup and purge):
        fields["allow_rollup_hdrs"], fields["deny_purge"] = rollup, purge
    if ttl:
        fields["allow_msg_ttl"] = draw(_maybe([True, False]))
    if batched:
        fields["allow_batched"] = draw(_maybe([True, False]))
    doc.update({k: v for k, v in fields.items() if v is not None})
    workqueue = retention == "workqueue"
    n = draw(st.integers(0, 2))
    consumers = {}
    if n >= 1:
        filtered = workqueue or draw(st.booleans())
        consumers["c1"] = draw(consumer_doc(t1 if filtered else None, workqueue, "svc-a"))
    if n == 2:
        consumers["c2"] = draw(consumer_doc(t2, workqueue, "svc-b"))
    if consumers:
        doc["consumers"] = consumers
    return doc


@st.composite
def topology_text(draw: st.DrawFn, ttl: bool, batched: bool) -> str:
    doc = {
        "version": 1,
        "name": "prop",
        "services": {"svc-a": {}, "svc-b": {}},
        "streams": {
            "S1": draw(stream_doc("s1", ttl, batched)),
            "S2": draw(stream_doc("s2", ttl, batched)),
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


async def _clean(nc: Client) -> None:
    names = json.loads((await nc.request("$JS.API.STREAM.NAMES", b"", timeout=5)).data)
    for n in names.get("streams") or []:
        await nc.request(f"$JS.API.STREAM.DELETE.{n}", b"", timeout=5)


async def _stored(nc: Client) -> dict[str, int]:
    out = {}
    for n in ("S1", "S2"):
        data = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{n}", b"", timeout=5)).data)
        if "error" not in data:
            out[n] = int(data["state"]["messages"])
    return out


async def _publish(nc: Client) -> None:
    js = nc.jetstream()
    for prefix in ("s1", "s2"):
        for topic in (f"{prefix}t1", f"{prefix}t2"):
            for i in range(3):
                # No stream yet, discard new, a limit: refusals are fine here.
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await js.publish(f"{prefix}.{topic}", f"{i}".encode(), timeout=2)


async def _ack(nc: Client, count: int) -> None:
    """Consumer c1 of each stream fetches and acknowledges `count` messages (if it exists)."""
    if not count:
        return
    js = nc.jetstream()
    for stream in ("S1", "S2"):
        try:
            sub = await js.pull_subscribe_bind("c1", stream)
        except nats.errors.Error:
            continue
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            for m in await sub.fetch(count, timeout=0.5):
                await m.ack_sync()
        await sub.unsubscribe()


def _allowed_loss(plan: Plan, stream: str) -> bool:
    for c in plan.changes:
        if c.stream != stream or not c.pending:
            continue
        if c.effect in ("destructive", "replace"):
            return True
    return False


async def _check_sequence(url: str, steps: list[tuple[str, int]]) -> None:
    nc = await nats.connect(url)
    try:
        await _clean(nc)
        for step, (text, acks) in enumerate(steps):
            topology = topology_from_text(text, f"step{step}.yaml")
            await _publish(nc)
            await _ack(nc, acks)
            before = await _stored(nc)
            plan = await plan_changes(nc, topology)
            assert not plan.errors, plan.errors
            await apply_plan(nc, plan, allow_destructive=True, concurrency=4)
            again = await plan_changes(nc, topology)
            assert not again.has_changes, (
                f"step {step}: apply did not converge:\n{again.to_text()}\n"
                f"after applying:\n{plan.to_text()}\n--- topology\n{text}"
            )
            after = await _stored(nc)
            for name, count in before.items():
                lost = count - after.get(name, 0)
                if lost > 0:
                    assert _allowed_loss(plan, name), (
                        f"step {step}: stream {name} lost {lost} of {count} messages, but the "
                        f"plan did not say so:\n{plan.to_text()}\n--- topology\n{text}"
                    )
    finally:
        await nc.close()


@pytest.fixture(scope="module", params=SERVERS, ids=[f"nats-{b.version_str}" for b in SERVERS])
def server(request: pytest.FixtureRequest) -> Any:
    binary: ServerBinary = request.param
    with running_server(binary) as s:
        yield s


def test_each_apply_converges_and_loses_only_what_the_plan_said(server: NatsServer) -> None:
    ttl = server.version >= (2, 11, 0)
    batched = server.version >= (2, 14, 0)

    step = st.tuples(topology_text(ttl, batched), st.integers(0, 3))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=False,
    )
    @given(st.lists(step, min_size=STEPS, max_size=STEPS))
    def check(steps: list[tuple[str, int]]) -> None:
        asyncio.run(_check_sequence(server.url, steps))

    check()

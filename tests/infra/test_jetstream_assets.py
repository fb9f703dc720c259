"""The direct provisioner's dynamic provider against real servers (the oldest and the newest).

Its diff must be the reconciler's plan for the asset, its create/update/delete must leave the
server as the reconciler would, and the provider must survive the engine's pickling (dill)
into a process that has only infra/ as its working folder.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dill
import nats
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from bus_runtime import Stream, Topology, load_topology, plan_changes
from jetstream_assets import (
    JetStreamAssetProvider,
    ProvisionerError,
    asset_inputs,
    model_from_json,
)

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
pytestmark = pytest.mark.nats


def topology() -> Topology:
    return load_topology(REPO / "topology" / "topology.yaml", "local")


def inputs_for(
    topo: Topology, url: str, stream: str, consumer: str | None = None, *, allow: bool = False
) -> dict[str, Any]:
    s = topo.stream(stream)
    c = None if consumer is None else s.consumer(consumer)
    props = asset_inputs(topo, s, c, [url], None, allow)
    return json.loads(json.dumps(props))  # what the engine hands the provider: plain data


def with_stream(topo: Topology, name: str, **changes: Any) -> Topology:
    streams = tuple(
        dataclasses.replace(s, **changes) if s.name == name else s for s in topo.streams
    )
    return dataclasses.replace(topo, streams=streams)


async def stream_config(url: str, name: str) -> dict[str, Any] | None:
    nc = await nats.connect(url)
    try:
        msg = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)
        info = json.loads(msg.data)
        return None if "error" in info else info["config"]
    finally:
        await nc.close()


async def consumer_names(url: str, stream: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return sorted(c.name for c in await js.consumers_info(stream))
    finally:
        await nc.close()


async def publish(url: str, subject: str, count: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for i in range(count):
            await js.publish(subject, f"{i}".encode())
    finally:
        await nc.close()


async def reconciler_verdict(url: str, topo: Topology, stream: str, consumer: str | None) -> Any:
    nc = await nats.connect(url)
    try:
        if consumer is None:
            plan = await plan_changes(nc, topo, only_streams=[stream])
        else:
            plan = await plan_changes(nc, topo, only_consumers=[(stream, consumer)])
    finally:
        await nc.close()
    return next(c for c in plan.changes if c.stream == stream and c.consumer == consumer)


def test_the_model_round_trips_through_the_inputs() -> None:
    topo = topology()
    for stream, consumer in topo.iter_assets():
        props = asset_inputs(topo, stream, consumer, ["nats://x"], None, False)
        again, s, c = model_from_json(json.loads(json.dumps(props))["model"])
        assert again.name == topo.name and again.environment == "local"
        assert s.to_stream_config() == stream.to_stream_config()
        assert c == consumer


def test_stream_lifecycle(nats_server_each: Any) -> None:
    url = nats_server_each.url
    provider = JetStreamAssetProvider()
    topo = topology()
    props = inputs_for(topo, url, "TAX_AGENT_DLQ")

    created = provider.create(props)
    assert created.id == "TAX_AGENT_DLQ"
    assert created.outs["last_action"] == "create"
    live = asyncio.run(stream_config(url, "TAX_AGENT_DLQ"))
    assert live is not None
    assert live["max_age"] == topo.stream("TAX_AGENT_DLQ").max_age
    assert live["metadata"]["natstopo.topology"] == "tax-agent"

    # In sync: no change, exactly as the reconciler sees it.
    assert provider.diff("TAX_AGENT_DLQ", created.outs, props).changes is False

    # An in-place change: an update, and update applies it.
    longer = with_stream(topo, "TAX_AGENT_DLQ", max_age=2 * topo.stream("TAX_AGENT_DLQ").max_age)
    news = inputs_for(longer, url, "TAX_AGENT_DLQ")
    diff = provider.diff("TAX_AGENT_DLQ", created.outs, news)
    assert (diff.changes, diff.replaces) == (True, None)
    updated = provider.update("TAX_AGENT_DLQ", created.outs, news)
    assert updated.outs["last_action"] == "update"
    live = asyncio.run(stream_config(url, "TAX_AGENT_DLQ"))
    assert live is not None and live["max_age"] == longer.stream("TAX_AGENT_DLQ").max_age
    assert provider.diff("TAX_AGENT_DLQ", updated.outs, news).changes is False

    # Deleted behind Pulumi's back: the diff sees it, and update recreates it.
    asyncio.run(_delete_stream(url, "TAX_AGENT_DLQ"))
    assert provider.diff("TAX_AGENT_DLQ", updated.outs, news).changes is True
    provider.update("TAX_AGENT_DLQ", updated.outs, news)
    assert asyncio.run(stream_config(url, "TAX_AGENT_DLQ")) is not None

    provider.delete("TAX_AGENT_DLQ", updated.outs)
    assert asyncio.run(stream_config(url, "TAX_AGENT_DLQ")) is None
    provider.delete("TAX_AGENT_DLQ", updated.outs)  # already gone: nothing to do


async def _delete_stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def test_a_replace_is_reported_as_a_replace_and_refused_without_the_flag(
    nats_server_each: Any,
) -> None:
    url = nats_server_each.url
    provider = JetStreamAssetProvider()
    topo = topology()
    created = provider.create(inputs_for(topo, url, "TAX_AGENT_DLQ"))
    asyncio.run(publish(url, "dlq.TAX_AGENT_JOBS.jobs.ocr.requested", 3))
    memory = with_stream(topo, "TAX_AGENT_DLQ", storage="memory")

    with pytest.raises(ProvisionerError) as refused:
        provider.diff("TAX_AGENT_DLQ", created.outs, inputs_for(memory, url, "TAX_AGENT_DLQ"))
    text = str(refused.value)
    assert "-/+ stream TAX_AGENT_DLQ: replace (delete and recreate) (holds 3 messages" in text
    assert "storage: file -> memory" in text
    assert "natstopo:allowDestructive" in text
    with pytest.raises(ProvisionerError):  # and never applied behind the diff's back either
        provider.update("TAX_AGENT_DLQ", created.outs, inputs_for(memory, url, "TAX_AGENT_DLQ"))
    live = asyncio.run(stream_config(url, "TAX_AGENT_DLQ"))
    assert live is not None and live["storage"] == "file"

    allowed = provider.diff(
        "TAX_AGENT_DLQ", created.outs, inputs_for(memory, url, "TAX_AGENT_DLQ", allow=True)
    )
    assert (allowed.changes, allowed.replaces, allowed.delete_before_replace) == (
        True,
        ["storage"],
        True,
    )


def test_lowered_limits_are_refused_without_the_flag(nats_server_each: Any) -> None:
    url = nats_server_each.url
    provider = JetStreamAssetProvider()
    topo = topology()
    created = provider.create(inputs_for(topo, url, "TAX_AGENT_DLQ"))
    # A lowered limit is destructive when it drops stored messages (the reconciler reads
    # the stream's state): 3 stored, at most 1 kept.
    asyncio.run(publish(url, "dlq.TAX_AGENT_JOBS.ocr.requested", 3))
    fewer = with_stream(topo, "TAX_AGENT_DLQ", max_msgs=1)
    with pytest.raises(ProvisionerError, match="destructive: deletes the oldest messages above 1"):
        provider.diff("TAX_AGENT_DLQ", created.outs, inputs_for(fewer, url, "TAX_AGENT_DLQ"))
    allowed = provider.diff(
        "TAX_AGENT_DLQ", created.outs, inputs_for(fewer, url, "TAX_AGENT_DLQ", allow=True)
    )
    assert (allowed.changes, allowed.replaces) == (True, None)  # in place, though destructive
    # Nothing stored is older than 1m: a shorter max_age deletes nothing, it is in place.
    shorter = with_stream(topo, "TAX_AGENT_DLQ", max_age=60 * 10**9)
    in_place = provider.diff(
        "TAX_AGENT_DLQ", created.outs, inputs_for(shorter, url, "TAX_AGENT_DLQ")
    )
    assert (in_place.changes, in_place.replaces) == (True, None)


def test_consumers_follow_their_stream(nats_server_each: Any) -> None:
    url = nats_server_each.url
    provider = JetStreamAssetProvider()
    topo = topology()
    stream = provider.create(inputs_for(topo, url, "TAX_AGENT_JOBS"))
    made = {}
    for c in topo.stream("TAX_AGENT_JOBS").consumers[:2]:
        made[c.name] = provider.create(inputs_for(topo, url, "TAX_AGENT_JOBS", c.name))
    assert asyncio.run(consumer_names(url, "TAX_AGENT_JOBS")) == sorted(made)
    name = topo.stream("TAX_AGENT_JOBS").consumers[0].name
    news = inputs_for(topo, url, "TAX_AGENT_JOBS", name)
    assert provider.diff(name, made[name].outs, news).changes is False
    # While its stream is being created or replaced, the consumer can only follow it.
    assert (
        provider.diff(
            name, made[name].outs, {**news, "stream_ready": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"}
        ).changes
        is True
    )

    provider.delete(name, made[name].outs)
    assert asyncio.run(consumer_names(url, "TAX_AGENT_JOBS")) == sorted(set(made) - {name})
    for other, res in made.items():
        if other != name:
            provider.delete(other, res.outs)
    provider.delete("TAX_AGENT_JOBS", stream.outs)
    assert asyncio.run(stream_config(url, "TAX_AGENT_JOBS")) is None


def test_delete_leaves_what_another_owner_made(nats_server: Any) -> None:
    """A stream of the same name that natstopo did not create is never deleted."""
    url = nats_server.url
    provider = JetStreamAssetProvider()
    topo = topology()

    async def make_foreign() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().add_stream(name="TAX_AGENT_DLQ", subjects=["dlq.>"])
        finally:
            await nc.close()

    asyncio.run(make_foreign())
    props = inputs_for(topo, url, "TAX_AGENT_DLQ")
    provider.delete("TAX_AGENT_DLQ", props)
    assert asyncio.run(stream_config(url, "TAX_AGENT_DLQ")) is not None


def test_the_diff_is_the_reconcilers_verdict(nats_server_each: Any) -> None:
    """For each kind of change, the diff reports what plan_changes says, as it says it."""
    url = nats_server_each.url
    provider = JetStreamAssetProvider()
    topo = topology()
    created = provider.create(inputs_for(topo, url, "TAX_AGENT_EVENTS"))
    base = topo.stream("TAX_AGENT_EVENTS")
    cases: list[dict[str, Any]] = [
        {},
        {"max_bytes": 2 * (base.max_bytes or 1)},
        {"description": "changed"},
        {"retention": "limits"},
        {"storage": "memory"},
        {"max_age": 60 * 10**9},
        {"retention": "workqueue"},
    ]
    for changes in cases:
        changed = with_stream(topo, "TAX_AGENT_EVENTS", **changes)
        verdict = asyncio.run(reconciler_verdict(url, changed, "TAX_AGENT_EVENTS", None))
        news = inputs_for(changed, url, "TAX_AGENT_EVENTS", allow=True)
        diff = provider.diff("TAX_AGENT_EVENTS", created.outs, news)
        replaced = [f.field for f in verdict.fields if f.effect == "replace"]
        assert diff.changes is (verdict.action != "none"), (changes, verdict.describe())
        assert diff.replaces == (replaced or None if verdict.action == "replace" else None), (
            changes,
            verdict.describe(),
        )
        if verdict.needs_flag:
            with pytest.raises(ProvisionerError):
                provider.diff(
                    "TAX_AGENT_EVENTS", created.outs, inputs_for(changed, url, "TAX_AGENT_EVENTS")
                )


def test_the_provider_survives_the_engines_pickling(nats_server: Any, tmp_path: Path) -> None:
    """Pickled as the engine pickles it, then used in a process that, like the engine's
    dynamic-provider process, has infra/ as its working folder and nothing of the tests."""
    pickled = serialize_provider(JetStreamAssetProvider())
    props = inputs_for(topology(), nats_server.url, "TAX_AGENT_DLQ")
    script = tmp_path / "use.py"
    script.write_text(
        "import base64, json, os, sys\n"
        "sys.path[0] = os.getcwd()\n"
        "import dill\n"
        "provider = dill.loads(base64.b64decode(open(sys.argv[1]).read()))\n"
        "props = json.loads(open(sys.argv[2]).read())\n"
        "created = provider.create(props)\n"
        "print(json.dumps({'id': created.id, 'changes': provider.diff(created.id, created.outs, props).changes}))\n"
        "provider.delete(created.id, created.outs)\n"
    )
    (tmp_path / "provider.b64").write_text(pickled)
    (tmp_path / "props.json").write_text(json.dumps(props))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        # As `python -m pulumi.dynamic` in infra/ does: the working folder first on the path.
        [sys.executable, str(script), str(tmp_path / "provider.b64"), str(tmp_path / "props.json")],
        cwd=INFRA,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": "TAX_AGENT_DLQ", "changes": False}
    # And the pickle names the module by what that process can import.
    assert b"jetstream_assets" in base64.b64decode(pickled)
    assert dill.loads(base64.b64decode(pickled)).__class__ is JetStreamAssetProvider


def test_unused_stream_fields_do_not_leak_into_the_model() -> None:
    topo = topology()
    props = asset_inputs(topo, topo.streams[0], None, ["nats://x"], None, False)
    model = json.loads(props["model"])
    assert "topics" not in model["stream"] and "consumers" not in model["stream"]
    assert set(model["stream"]) <= {f.name for f in dataclasses.fields(Stream)}

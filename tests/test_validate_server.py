"""What the validator accepts, a real server accepts: a property test against nats-server.

Stream and consumer settings are drawn from edge values (limits, zero, one below a
minimum, combinations that interact); whenever the validator passes the file, the stream
and consumer configs the model produces are created on a real single server (2.10 and
the newest). A refusal there, or a config stored other than it was sent (a plan that would never
converge), is a check the validator is missing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import nats
import pytest
import yaml
from harness import NatsServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus_runtime.jetstream.rules import Version
from bus_runtime.reconcile.apply import stored_differences
from bus_runtime.topology.loader import parse_topology

pytestmark = pytest.mark.nats

STREAM_VALUES: dict[str, list[Any]] = {
    "retention": ["limits", "interest", "workqueue"],
    "storage": ["file", "memory"],
    "max_age": [0, "100ms", "99ms", "1s", "7d", "100000d"],
    "duplicate_window": ["100ms", "2m", "1h", 0],
    "max_bytes": [-1, 0, 1, "1MiB"],
    "max_msgs": [-1, 0, 1, 2**63 - 1],
    "max_msgs_per_subject": [-1, 0, 1, 5],
    "max_msg_size": [-1, 0, 1, "64KiB"],
    "max_consumers": [-1, 0, 1, 10],
    "discard": ["old", "new"],
    "discard_new_per_subject": [True, False],
    "compression": ["none", "s2"],
    "allow_rollup_hdrs": [True, False],
    "deny_delete": [True, False],
    "deny_purge": [True, False],
    "allow_direct": [True, False],
    "allow_msg_ttl": [True, False],
    "allow_batched": [True, False],
    "subject_delete_marker_ttl": [0, "999ms", "1s", "1h"],
    "description": ["orders", "é" * 2048, "é" * 2049],
}
CONSUMER_VALUES: dict[str, list[Any]] = {
    "ack_policy": ["explicit", "all", "none"],
    "ack_wait": [0, 1, "1ms", "30s"],
    "max_deliver": [-1, 1, 2, 5],
    "backoff": [["1s"], ["1s", "2s", "3s"], ["0s"], ["1ms", "1h"]],
    "max_ack_pending": [-1, 0, 1, 1000],
    "deliver_policy": ["all", "new", "last", "last_per_subject", "by_start_sequence"],
    "opt_start_seq": [1, 5],
    "replay_policy": ["instant", "original"],
    "max_waiting": [1, 512],
    "max_request_batch": [1, 100],
    "max_request_expires": [0, "999us", "1ms", "1s"],
    "mem_storage": [True, False],
    "headers_only": [True, False],
    "topics": [["a"], ["a", "b.*"]],
    "description": ["worker", "é" * 2049],
}


def some_of(values: dict[str, list[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A few settings at a time, so that a fair share of the draws passes the validator."""
    return st.lists(st.sampled_from(sorted(values)), max_size=5, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: st.sampled_from(values[k]) for k in keys})
    )


def topology(stream: dict[str, Any], consumer: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "version": 1,
            "name": "edge",
            "services": {"svc-a": {}},
            "streams": {
                "EDGE": {
                    **stream,
                    "topics": {"a": {}, "b.*": {}},
                    "consumers": {"worker": {"service": "svc-a", **consumer}},
                }
            },
        },
        sort_keys=False,
        allow_unicode=True,
    )


async def create(
    url: str, n: int, stream: dict[str, Any], consumer: dict[str, Any], server: Version
) -> str | None:
    """The server's error creating the stream and its consumer, or what it stored other
    than was sent (a plan would never converge), or None; removes both."""
    nc = await nats.connect(url)
    try:
        name = f"EDGE{n}"
        cfg = {**stream, "name": name, "subjects": [f"e{n}.{s}" for s in ("a", "b.*")]}
        consumer = {**consumer}
        for key in ("filter_subject", "filter_subjects"):
            if key in consumer:
                subjects = consumer[key] if isinstance(consumer[key], list) else [consumer[key]]
                renamed = [f"e{n}.{s.split('.', 1)[1]}" for s in subjects]
                consumer[key] = renamed if isinstance(consumer[key], list) else renamed[0]
        errors = []
        reply = await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(cfg).encode())
        answer = json.loads(reply.data)
        errors.append(answer.get("error"))
        if errors[-1] is None:
            missed = stored_differences("stream", cfg, answer.get("config") or {}, server)
            errors.append(f"stream stored other than sent: {missed}" if missed else None)
            request = {"stream_name": name, "config": consumer}
            reply = await nc.request(
                f"$JS.API.CONSUMER.CREATE.{name}.{consumer['name']}", json.dumps(request).encode()
            )
            answer = json.loads(reply.data)
            errors.append(answer.get("error"))
            if errors[-1] is None:
                missed = stored_differences(
                    "consumer", consumer, answer.get("config") or {}, server
                )
                errors.append(f"consumer stored other than sent: {missed}" if missed else None)
            await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"")
        refused = [e for e in errors if e is not None]
        return str(refused[0]) if refused else None
    finally:
        await nc.close()


def test_what_the_validator_accepts_the_server_accepts(nats_server_each: NatsServer) -> None:
    counter = itertools.count()
    accepted = 0

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(some_of(STREAM_VALUES), some_of(CONSUMER_VALUES))
    def check(stream: dict[str, Any], consumer: dict[str, Any]) -> None:
        nonlocal accepted
        text = topology(stream, consumer)
        model, errors = parse_topology(text, "edge.yaml")
        if errors:
            return
        assert model is not None
        s = model.streams[0]
        refused = asyncio.run(
            create(
                nats_server_each.url,
                next(counter),
                s.to_stream_config(),
                s.consumers[0].to_consumer_config(),
                nats_server_each.binary.version,
            )
        )
        assert refused is None, f"the validator passed it, the server refused: {refused}\n{text}"
        accepted += 1

    check()
    assert accepted >= 50  # the draws are not all refused by the validator

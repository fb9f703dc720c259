"""The conformance matrix: natstopo's planner against what real servers do, case by case.

For each case of `cases.py` the probe sets up the case's *before* state on a real server
(a stream holding messages, consumers that acknowledged some). Then, before the probe
sends its change, natstopo plans the same change: a topology declaring the stream (or
consumer) with the case's *after* value goes through the public `plan_changes`. The
probe then sends the change with the raw JetStream API and observes what the server did.
`compare` holds the two side by side:

- the server's truth: `refused`; `destructive` (accepted, and stored messages, a
  consumer's position or the asset itself were lost: at the update, on the next publish
  beyond what that publish explains, or at a restart); `ignored` (accepted, but the
  server stores another value than sent); `no-op` (accepted, the value did not change);
  `in_place` (accepted, stored as sent, nothing lost);
- natstopo's verdict: `invalid` (the loader refuses the topology), `error` (a plan
  error), `none` (no difference planned), or the field's effect: `in_place`,
  `destructive`, `replace`.

They agree when: `in_place` = in_place; `destructive` = destructive; `replace` =
refused (and natstopo's create config is accepted from scratch, so the replace works);
`none` = no-op; `invalid`/`error` = refused or ignored, or a loss the server only shows at
a restart. A verdict more cautious than the server disagrees like a dangerous one. When
natstopo plans an update, the value it would send for the field must mean what the probe
sent (`rules.effective`), or the observation would not be about natstopo's change.

`INEXPRESSIBLE` lists the cases a topology cannot write (each is checked: the loader
must refuse it, or natstopo must send something else); `KNOWN` the few cases where
natstopo's verdict is deliberately not the probe's, with the evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from nats.aio.client import Client

from bus_runtime.jetstream.api import JetStreamApi
from bus_runtime.jetstream.rules import Kind, effective
from bus_runtime.reconcile.diff import consumer_create_config, stream_create_config
from bus_runtime.reconcile.plan import Change, Plan
from bus_runtime.reconcile.planner import plan_changes
from bus_runtime.topology.loader import parse_topology
from bus_runtime.topology.model import CONSUMER_FIELD_TO_API, STREAM_FIELD_TO_API, Topology

from . import probe
from .probe import UNSET, Batch, ConsumerCase, ConsumerSetup, Observation, StreamCase

Case = StreamCase | ConsumerCase
Version = tuple[int, int, int]

_STREAM_FIELDS = {v: k for k, v in STREAM_FIELD_TO_API.items()}
_CONSUMER_FIELDS = {v: k for k, v in CONSUMER_FIELD_TO_API.items()}
_FILTER_KEYS = ("filter_subject", "filter_subjects")

_ALTERNATING = tuple(Batch("a" if i % 2 == 0 else "b") for i in range(10))
_INTEREST = {"retention": "interest"}

# Changes the catalog does not have yet, found by the property test
# (tests/test_reconcile_converge.py): a consumer's filter on an interest stream.
EXTRA_CASES: tuple[ConsumerCase, ...] = (
    ConsumerCase(
        "x-interest-filter-narrow", "filter_subject", "a", stream=_INTEREST,
        messages=_ALTERNATING, deliver=0, ack=0,
        label="interest stream: unfiltered -> a (5 on a, 5 on b)",
    ),
    ConsumerCase(
        "x-interest-filter-narrow-acked", "filter_subject", "a", stream=_INTEREST,
        messages=_ALTERNATING, deliver=4, ack=2,
        label="interest stream: unfiltered -> a, 2 acked",
    ),
    ConsumerCase(
        "x-interest-filter-narrow-other", "filter_subject", "a", stream=_INTEREST,
        messages=_ALTERNATING, deliver=0, ack=0,
        others=(ConsumerSetup("X", {"filter_subject": "b"}),),
        label="interest stream: unfiltered -> a, consumer X takes b",
    ),
    ConsumerCase(
        "x-interest-filter-change", "filter_subject", "b", before={"filter_subject": "a"},
        stream=_INTEREST, messages=_ALTERNATING, deliver=0, ack=0,
        label="interest stream: a -> b",
    ),
    ConsumerCase(
        "x-interest-filter-widen", "filter_subjects", ["a", "b"],
        before={"filter_subject": "a"}, extra={"filter_subject": UNSET}, stream=_INTEREST,
        messages=_ALTERNATING, deliver=0, ack=0,
        label="interest stream: a -> [a, b]",
    ),
    ConsumerCase(
        "x-interest-filter-unset", "filter_subject", UNSET, before={"filter_subject": "a"},
        stream=_INTEREST, messages=_ALTERNATING, deliver=0, ack=0,
        label="interest stream: a -> unfiltered",
    ),
    ConsumerCase(
        "x-wq-filter-narrow", "filter_subject", "a", stream={"retention": "workqueue"},
        messages=_ALTERNATING, deliver=0, ack=0,
        label="work queue: unfiltered -> a",
    ),
)  # fmt: skip

# Cases a topology cannot write; `check_inexpressible` proves each reason.
INEXPRESSIBLE: dict[str, str] = {
    "replicas-1-0": "replicas: 0 is refused by the schema (the server reads it as 1)",
    "subjects-narrow": "a topic cannot end in `>`",
    "subjects-unset": "a stream without topics is refused by the loader",
    "unknown-field": "the schema refuses unknown keys",
    "c-unknown-field": "the schema refuses unknown keys",
    "filter-both": "a consumer's topics are one list (filter_subject and filter_subjects "
    "together is the server's error 10136)",
    "max_waiting-zero": "max_waiting: 0 is refused by the schema (the server reads it as 512)",
    "max_deliver-zero": "max_deliver: 0 is refused by the schema (the server reads it as -1)",
    "max_age-lower-below-default-window": "natstopo does not send a duplicate_window the "
    "topology does not set: it leaves the key out (= max_age-lower-below-window-omitted)",
    "ack_policy-explicit-unset": "natstopo's default ack_policy is explicit: a consumer "
    "without one is sent `explicit`, never the server's `none`",
}

# Where natstopo's verdict is deliberately not the probe's: (case, first version, last
# version) -> (natstopo's verdict, why).
KNOWN: dict[tuple[str, Version, Version], tuple[str, str]] = {
    ("mem_storage-on", (2, 10, 0), (2, 13, 99)): (
        "replace",
        "2.10-2.12 accept the update but keep the consumer's storage (2.14 refuses it): a "
        "consumer created in memory is gone after a restart even after `mem_storage: false` "
        "(mem_storage-off, mem_storage-on-same), so natstopo recreates it",
    ),
    ("mem_storage-off", (2, 10, 0), (2, 13, 99)): (
        "replace",
        "as mem_storage-on: the update is reported but the storage stays memory",
    ),
    ("mem_storage-unset", (2, 10, 0), (2, 13, 99)): (
        "replace",
        "as mem_storage-off",
    ),
    ("headers_only-on", (2, 10, 0), (99, 0, 0)): (
        "invalid",
        "natstopo's own rule, not the server's (which updates it in place): bus_runtime needs "
        "every message's body, and a headers-only consumer would dead-letter each one",
    ),
    ("mem_storage-on-same", (2, 10, 0), (99, 0, 0)): (
        "none",
        "nothing changes; a consumer with mem_storage is lost at any restart of its server, "
        "change or not (the loader warns about mem_storage: true)",
    ),
}


@dataclass
class Row:
    """One case on one version: what natstopo planned and what the server did."""

    case: str
    field: str
    version: str
    verdict: str
    truth: str
    detail: str = ""
    plan_text: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- topologies


def _value(key: str, value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _absent(value: Any) -> bool:
    """An after value that a topology writes by leaving the field out."""
    return value is UNSET or value is None or (isinstance(value, list) and not value)


def _settings(
    config: Mapping[str, Any], names: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in config.items():
        if key in _FILTER_KEYS or key == "subjects" or _absent(value):
            continue
        if key == "metadata":
            out["metadata"] = dict(value)
        elif key in names:
            out[names[key]] = _value(key, value)
        else:
            unknown.append(key)
    return out, unknown


def _after(case: Case) -> dict[str, Any]:
    """The case's config keys after the change (API names); UNSET values removed."""
    base = dict(case.before)
    changes = {case.api_key: case.after, **case.extra}
    for key, value in changes.items():
        if _absent(value):
            base.pop(key, None)
        else:
            base[key] = value
    return base


def _filters(config: Mapping[str, Any]) -> list[str]:
    if config.get("filter_subjects"):
        return list(config["filter_subjects"])
    return [config["filter_subject"]] if config.get("filter_subject") else []


def case_topology(case: Case, name: str, prefix: str) -> str:
    """The topology (YAML) declaring the case's asset with its after value."""
    doc: dict[str, Any] = {"version": 1, "name": "matrix"}
    if isinstance(case, StreamCase):
        after = _after(case)
        settings, unknown = _settings(after, _STREAM_FIELDS)
        subjects = after.get("subjects") if "subjects" in after else None
        topics = list(subjects) if subjects else ["a", "b", "c"]
        if "subjects" in (case.api_key, *case.extra) and _absent(case.after):
            topics = []
        stream: dict[str, Any] = {"subject_prefix": prefix, **settings}
        if unknown:
            stream.update({k: True for k in unknown})
        if topics:
            stream["topics"] = {t: {} for t in topics}
        doc["streams"] = {name: stream}
        return yaml.safe_dump(doc, sort_keys=False)
    after = _after(case)
    settings, unknown = _settings(after, _CONSUMER_FIELDS)
    consumer: dict[str, Any] = {"service": "svc-c", "max_deliver": -1, **settings}
    if unknown:
        consumer.update({k: True for k in unknown})
    filters = _filters(after)
    if "filter_subject" in after and "filter_subjects" in after:
        filters = [after["filter_subject"], *after["filter_subjects"]]
    if filters:
        consumer["topics"] = filters
    stream_settings, _ = _settings(case.stream, _STREAM_FIELDS)
    stream = {"subject_prefix": prefix, **stream_settings}
    stream["topics"] = {t: {} for t in ("a", "b", "c")}
    stream["consumers"] = {"C": consumer}
    doc["services"] = {"svc-c": {}}
    doc["streams"] = {name: stream}
    return yaml.safe_dump(doc, sort_keys=False)


# --------------------------------------------------------------------------- verdicts


@dataclass
class Planned:
    """natstopo's side of one case."""

    verdict: str
    detail: str = ""
    plan: Plan | None = None
    topology: Topology | None = None
    change: Change | None = None
    sent: dict[str, Any] = field(default_factory=dict)


def _case_fields(case: Case, change: Change) -> list[Any]:
    names = {case.field}
    if case.field in _FILTER_KEYS:
        names = {"filter_subjects"}
    keys = {case.api_key, *case.extra}
    names |= {_STREAM_FIELDS.get(k, _CONSUMER_FIELDS.get(k, k)) for k in keys}
    if "filter_subject" in keys or "filter_subjects" in keys:
        names.add("filter_subjects")
    out = []
    for f in change.fields:
        if f.field in names or (
            case.field == "metadata"
            and f.field.startswith("metadata.")
            and not f.field.startswith("metadata.natstopo.")
        ):
            out.append(f)
    return out


async def plan_case(api: JetStreamApi, case: Case, name: str, prefix: str) -> Planned:
    text = case_topology(case, name, prefix)
    topology, errors = parse_topology(text, f"{case.name}.yaml")
    if errors or topology is None:
        return Planned("invalid", "; ".join(e.message for e in errors))
    if isinstance(case, StreamCase):
        plan = await plan_changes(api, topology, only_streams=[name])
        target = next(c for c in plan.changes if c.kind == "stream")
    else:
        plan = await plan_changes(api, topology, only_consumers=[(name, "C")])
        target = next(c for c in plan.changes if c.kind == "consumer")
    if plan.errors:
        return Planned("error", "; ".join(plan.errors), plan, topology, target)
    fields = _case_fields(case, target)
    if target.action in ("create", "replace") and target.action != "update":
        verdict = "replace"
    elif not fields:
        verdict = "none"
    else:
        order = {"in_place": 0, "destructive": 1, "replace": 2}
        verdict = max((f.effect for f in fields), key=order.__getitem__)
    detail = "; ".join(f.render() for f in fields)
    return Planned(verdict, detail, plan, topology, target, dict(target.config or {}))


def _stream_replicas(case: Case) -> int:
    cfg = case.stream if isinstance(case, ConsumerCase) else case.before
    return int(cfg.get("num_replicas") or 1)


def _eff(kind: Kind, key: str, cfg: Mapping[str, Any], stream_replicas: int = 1) -> Any:
    if key in _FILTER_KEYS:
        return sorted(_filters(cfg))
    if key == "metadata":
        md = cfg.get("metadata") or {}
        return {k: v for k, v in md.items() if not str(k).startswith(("_nats.", "natstopo."))}
    if key == "subjects":
        return sorted(cfg.get("subjects") or [])
    return effective(kind, key, cfg, stream_replicas=stream_replicas)


def truth(case: Case, o: Observation) -> tuple[str, str]:
    """What the server did, in the words of the module's docstring."""
    if not o.accepted:
        return "refused", str(o.error)
    if o.lost:
        return "destructive", f"lost {o.lost} of {len(o.sequences_before)} messages at the update"
    if o.position_lost:
        return "destructive", "the consumer lost its position"
    gone = sorted(set(o.positions_before) - set(o.positions_after))
    if gone:
        return "destructive", f"consumer(s) {', '.join(gone)} deleted"
    published = sum(b.count for b in getattr(case, "publish_after", ()))
    if len(o.lost_after_publish) > published:
        return (
            "destructive",
            f"lost {len(o.lost_after_publish)} messages when {published} more were published",
        )
    if o.restarted:
        if o.after_restart_error is not None:
            return "destructive", f"gone after a restart ({o.after_restart_error})"
        before = (
            o.messages_after_publish if o.messages_after_publish is not None else o.messages_after
        )
        if o.messages_after_restart is not None and o.messages_after_restart < before:
            return "destructive", f"{before - o.messages_after_restart} messages lost at a restart"
    kind: Kind = "stream" if isinstance(case, StreamCase) else "consumer"
    key = case.api_key
    r = _stream_replicas(case)
    after = _eff(kind, key, o.config_after, r)
    created = _eff(kind, key, o.config_created, r)
    sent = _eff(kind, key, o.config_sent, r)
    if after != sent:
        return "ignored", f"sent {sent!r}, stored {after!r}"
    # Another setting the server stored otherwise than sent because of this one (delete
    # markers turn allow_msg_ttl and allow_rollup_hdrs on): a plan would never converge.
    if kind == "stream":
        for other in STREAM_FIELD_TO_API.values():
            if other == key or other in ("metadata", "subjects"):
                continue
            if other not in o.config_sent and other not in o.config_after:
                continue
            was, now = _eff(kind, other, o.config_sent, r), _eff(kind, other, o.config_after, r)
            if was != now:
                return "ignored", f"{other}: sent {was!r}, stored {now!r}"
    if after == created:
        raw_sent, raw_created = _norm(o.config_sent.get(key)), _norm(o.config_created.get(key))
        raw_after = _norm(o.config_after.get(key))
        if case.after is not UNSET and raw_sent != raw_created and raw_after == raw_created:
            # Another value was sent and the server kept its own (ack_wait with a backoff,
            # a field the version does not know).
            return "ignored", f"sent {raw_sent!r}, the server kept {raw_created!r}"
        return "no-op", f"stays {after!r}"
    return "in_place", f"{created!r} -> {after!r}"


def _norm(value: Any) -> Any:
    return None if value in (None, False, "", [], {}) else value


def _dropped_at_create(case: Case, o: Observation) -> list[str]:
    """Keys of the case's before state that the server left out of the created config."""
    return [k for k, v in case.before.items() if _norm(v) is not None and k not in o.config_created]


_AGREE: dict[str, set[str]] = {
    "in_place": {"in_place"},
    "destructive": {"destructive"},
    "replace": {"refused"},
    "none": {"no-op"},
    "invalid": {"refused", "ignored"},
    "error": {"refused", "ignored"},
}


def compare(
    case: Case, version: Version, planned: Planned, o: Observation, replace_ok: str | None
) -> Row:
    verdict = planned.verdict
    what, detail = truth(case, o)
    row = Row(
        case.name,
        case.field,
        ".".join(map(str, version)),
        verdict,
        what,
        f"natstopo: {planned.detail or '-'} | server: {detail}",
        planned.plan.to_text() if planned.plan is not None else "",
    )
    if o.probe_error:
        row.problems.append(f"probe error: {o.probe_error}")
        return row
    if case.name in INEXPRESSIBLE:
        return row  # proven separately (check_inexpressible)
    known = next(
        (v for (n, lo, hi), v in KNOWN.items() if n == case.name and lo <= version <= hi), None
    )
    if known is not None:
        if verdict != known[0]:
            row.problems.append(f"expected natstopo's {known[0]} ({known[1]}), got {verdict}")
        return row
    restart_loss = what == "destructive" and "restart" in detail
    if verdict in ("invalid", "error") and restart_loss:
        return row
    dropped = _dropped_at_create(case, o)
    if (
        verdict == "error"
        and dropped
        and all("brings; the server runs" in e for e in planned.plan.errors if planned.plan)
    ):
        row.detail += f" (the server dropped {', '.join(dropped)} at create: it does not know them)"
        return row
    if what not in _AGREE[verdict]:
        row.problems.append(f"natstopo says {verdict}, the server did {what}")
    if verdict == "replace" and replace_ok is not None:
        row.problems.append(f"the replace would fail: the server refuses the create ({replace_ok})")
    if verdict in ("in_place", "destructive") and planned.sent:
        kind: Kind = "stream" if isinstance(case, StreamCase) else "consumer"
        for key in {case.api_key, *case.extra}:
            r = _stream_replicas(case)
            mine, theirs = _eff(kind, key, planned.sent, r), _eff(kind, key, o.config_sent, r)
            if key in ("subjects", *_FILTER_KEYS):
                mine = [s.split(".", 1)[-1] for s in mine]
                theirs = [s.split(".", 1)[-1] for s in theirs]
            if mine != theirs:
                row.problems.append(
                    f"natstopo would send {key}={mine!r}, the probe measured {theirs!r}"
                )
    return row


# --------------------------------------------------------------------------- running


class RestartBatch:
    """Restarts the server once for every restart case of a batch (they run together).

    Each case either calls `restart` (after its update) or finishes without; when every
    case of the batch has done one or the other, the server restarts once and the
    waiting cases go on.
    """

    def __init__(self, expected: int, do_restart: Callable[[], Awaitable[None]]) -> None:
        self.expected = expected
        self.arrived = 0
        self.done = asyncio.Event()
        self._restart = do_restart
        self._lock = asyncio.Lock()

    async def _maybe_go(self) -> None:
        async with self._lock:
            if self.arrived >= self.expected and not self.done.is_set():
                await self._restart()
                self.done.set()

    async def restart(self) -> None:
        self.arrived += 1
        await self._maybe_go()
        await self.done.wait()

    async def finished_without(self) -> None:
        self.arrived += 1
        await self._maybe_go()


async def run_case(
    nc: Client, case: Case, version: Version, restart: RestartBatch | None = None
) -> Row:
    """Set up the case, plan it with natstopo, let the probe change it, compare."""
    api = JetStreamApi(nc)
    planned: list[Planned] = []

    async def before_update(name: str, prefix: str) -> None:
        planned.append(await plan_case(api, case, name, prefix))

    restarted = False

    async def on_restart() -> None:
        nonlocal restarted
        restarted = True
        assert restart is not None
        await restart.restart()

    try:
        obs, name, _ = await _observe(
            nc, case, before_update, on_restart if restart is not None else None
        )
    finally:
        if restart is not None and not restarted:
            await restart.finished_without()
    p = planned[0] if planned else Planned("not planned")
    replace_ok = None
    if p.verdict == "replace" and p.topology is not None and obs.created:
        replace_ok = await _try_create(api, p.topology, name)
    if not obs.created:
        err = obs.create_error
        return Row(case.name, case.field, ".".join(map(str, version)), p.verdict, "n/a",
                   f"setup refused on this version ({err})")  # fmt: skip
    return compare(case, version, p, obs, replace_ok)


async def _try_create(api: JetStreamApi, topology: Topology, name: str) -> str | None:
    """Create the asset from natstopo's create config on a clean server; the refusal, if any."""
    server = api.server_version
    stream = topology.stream(name)
    try:
        await api.call(f"STREAM.CREATE.{name}", stream_create_config(stream, topology, server))
        for c in stream.consumers:
            body = {"stream_name": name, "config": consumer_create_config(c, topology, server)}
            await api.call(f"CONSUMER.CREATE.{name}.{c.name}", body)
    except Exception as exc:  # the refusal is the finding
        return str(exc)
    finally:
        with contextlib.suppress(Exception):
            await api.call(f"STREAM.DELETE.{name}")
    return None


async def _observe(
    nc: Client,
    case: Case,
    before_update: Callable[[str, str], Awaitable[None]],
    restart: Callable[[], Awaitable[None]] | None,
) -> tuple[Observation, str, str]:
    """The probe's observe functions, with natstopo's plan between setup and update.

    (The probe's own setup, update and follow-up steps, in its order.)
    """
    obs = probe.Observation(
        case=case.name,
        kind="stream" if isinstance(case, StreamCase) else "consumer",
        field=case.field,
        api_key=case.api_key,
    )
    obs.value_sent = case.after
    name, prefix = probe._names(case.name)
    async with probe._api(nc) as papi:
        obs.server_version = papi.server_version
        try:
            if isinstance(case, StreamCase):
                config = probe._stream_config(name, prefix, case.before)
                if not await probe._setup_stream(
                    papi, obs, name, prefix, config, case.consumers, case.messages, case.cluster
                ):
                    return obs, name, prefix
                obs.created = True
                await before_update(name, prefix)
                await probe._observe_stream_update(papi, obs, case, name, prefix)
                if case.publish_after:
                    await probe._publish_after(papi, obs, case, name, prefix)
                if case.restart and restart is not None and obs.accepted:
                    names = [c.name for c in case.consumers]
                    await probe._restart(papi, obs, restart, name, names, None)
            else:
                obs.subject_consumer = "C"
                config = probe._stream_config(name, prefix, case.stream)
                target = ConsumerSetup("C", case.before, ack=case.ack, deliver=case.deliver)
                consumers = (*case.others, target)
                if not await probe._setup_stream(
                    papi, obs, name, prefix, config, consumers, case.messages, case.cluster
                ):
                    return obs, name, prefix
                obs.created = True
                await before_update(name, prefix)
                await probe._observe_consumer_update(papi, obs, case, name, prefix, consumers)
                if case.cluster and obs.accepted:
                    await _reread_after_election(papi, obs, name, [c.name for c in consumers])
                if case.restart and restart is not None and obs.accepted:
                    names = [c.name for c in consumers]
                    await probe._restart(papi, obs, restart, name, names, (case.api_key, prefix))
        except (probe.ApiRefusal, TimeoutError, KeyError, ValueError) as exc:
            obs.probe_error = f"{type(exc).__name__}: {exc}"
        finally:
            await papi.delete_stream(name)
    return obs, name, prefix


async def _reread_after_election(
    papi: probe.Api, obs: Observation, name: str, consumers: list[str]
) -> None:
    """Read the consumers' positions again once each has a leader.

    Right after a consumer's replicas change, CONSUMER.INFO can answer from a replica
    without a leader yet, with delivered and ack floor 0 (measured on 2.10 about one time
    in four); half a second later the position is there. Only a position read from a
    leader counts.
    """
    for _ in range(100):
        infos = []
        for c in consumers:
            with contextlib.suppress(probe.ApiRefusal):
                infos.append(await papi.consumer_info(name, c))
        if all((i.get("cluster") or {}).get("leader") for i in infos):
            break
        await asyncio.sleep(0.1)
    obs.positions_after = await probe._positions(papi, name, consumers)


def check_inexpressible(case: Case) -> str | None:
    """Why the case's reason does not hold (None: it holds)."""
    name, prefix = "CF_x", "cf_x"
    v = (2, 15, 1)
    if case.name == "subjects-narrow":
        text = case_topology(dataclasses.replace(case, after=["a.>"]), name, prefix)
        return None if parse_topology(text, "x.yaml")[1] else "the loader accepts a topic `a.>`"
    text = case_topology(case, name, prefix)
    topology, errors = parse_topology(text, "x.yaml")
    if case.name in (
        "max_age-lower-below-default-window",
        "ack_policy-explicit-unset",
        "filter-both",
    ):
        if errors or topology is None:
            return "; ".join(map(str, errors))
        stream = topology.stream(name)
        if case.name == "max_age-lower-below-default-window":
            cfg = stream_create_config(stream, topology, v)
            return "natstopo sends a duplicate_window" if "duplicate_window" in cfg else None
        ccfg = consumer_create_config(stream.consumer("C"), topology, v)
        if case.name == "ack_policy-explicit-unset":
            return None if ccfg.get("ack_policy") == "explicit" else f"natstopo sends {ccfg}"
        both = "filter_subject" in ccfg and "filter_subjects" in ccfg
        return "natstopo sends both filter keys" if both else None
    if not errors:
        return "the loader accepts it"
    return None

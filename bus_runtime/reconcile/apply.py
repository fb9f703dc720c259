"""`apply_plan`: carry out a plan in an order the server accepts; `reconcile`: plan and apply in one call.

Every create and update is checked against what the server answers with (its stored
config): a field it did not take as sent stops apply with an error that names the field,
so "applied" is never followed by drift. `check_saved_plan` tells whether a plan saved
earlier (`natstopo plan -o`) still matches the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from .._errors import ChangesRefusedError, PlanOutdatedError, ReconcileError
from ..jetstream.api import CONSUMER_NOT_FOUND, STREAM_NOT_FOUND, JetStreamApi
from ..jetstream.connect import ConnectOptions, connect
from ..jetstream.rules import (
    Kind,
    StreamState,
    Version,
    classify,
    effective,
    known,
    needs_subjects,
    version_text,
)
from ..topology.model import Topology
from .marks import MARK_FINGERPRINT, user_metadata
from .plan import AppliedStep, ApplyResult, Change, Plan, format_value
from .planner import plan_changes, snapshot_of

# Streams (each with its consumers) applied at once. Measured (benchmarks/reconcile_bench.py,
# 200 streams / 400 consumers, nats-server 2.15.1, 2 cores): R3 on a 3-node cluster takes
# 42.6 s at 1, 7.0 s at 8, 5.8 s at 16 and 5.8 s at 32; R1 on one server 0.61 s at 1 and
# 0.40-0.49 s from 4 up (noise). 16 is where more stops helping.
DEFAULT_CONCURRENCY = 16
STORE_NOT_READY = 10049  # "error creating store for stream"


async def apply_plan(
    js_or_nc: Client | JetStreamContext | JetStreamApi,
    plan: Plan,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> ApplyResult:
    """Carry out `plan`: streams before their consumers, a replace as delete then create.

    Args:
        js_or_nc: A connection or JetStream context (of the server that was planned).
        plan: A plan from `plan_changes`, applied as it is (no re-read).
        allow_destructive: Needed for any replace, delete or lowered limit.
        progress: Called with one line per asset done (`+ stream X created (0.02s)`).
        concurrency: Streams (each with its consumers) worked on at once (default 16,
            measured). Streams that give up subjects are done before the others, so a
            subject moving from one stream to another is free when it is taken.

    Raises:
        ChangesRefusedError: Replace or destructive steps without `allow_destructive`;
            nothing was changed.
        ReconcileError: The plan has errors or a conflict with another topology (nothing
            changed), or the server refused a step or did not store what was sent (the
            steps before it are done).
    """
    started = time.perf_counter()
    if plan.errors:
        raise ReconcileError(
            "the plan has errors; nothing was changed:\n  " + "\n  ".join(plan.errors)
        )
    if plan.conflicts:
        raise ReconcileError(
            "assets declared here are managed by another topology; nothing was changed:\n  "
            + "\n  ".join(c.describe() for c in plan.conflicts)
        )
    if plan.refused_without_flag and not allow_destructive:
        raise ChangesRefusedError([c.describe() for c in plan.changes if c.needs_flag])
    api = JetStreamApi.of(js_or_nc)
    server = api.server_version
    result = ApplyResult(plan)
    replaced_streams = {
        c.stream for c in plan.changes if c.kind == "stream" and c.action == "replace"
    }
    steps = [
        c
        for c in plan.changes
        if c.pending
        # A consumer deleted with its replaced stream needs no step of its own.
        and not (c.kind == "consumer" and c.action == "delete" and c.stream in replaced_streams)
    ]
    # Stream deletes first (they free subjects), then one group per declared stream:
    # its consumer deletes, the stream, its consumers, in that order. Groups whose stream
    # gives up subjects go before the others, so a topic moved from one stream to
    # another is free when the other stream takes it (else: error 10065, overlap).
    first = [c for c in steps if c.kind == "stream" and c.action == "delete"]
    groups: dict[str, list[Change]] = {}
    first_ids = {id(c) for c in first}
    for c in steps:
        if id(c) not in first_ids:
            groups.setdefault(c.stream, []).append(c)
    for group in groups.values():
        # Likewise inside a stream: a consumer that gives up filter subjects goes before
        # one that takes them (a work-queue stream refuses overlapping filters, 10100).
        group.sort(key=_step_rank)

    def releases(group: list[Change]) -> bool:
        return any(c.kind == "stream" and _gives_up_subjects(c) for c in group)

    releasing = [g for g in groups.values() if releases(g)]
    others = [g for g in groups.values() if not releases(g)]
    failures: list[tuple[Change, ReconcileError]] = []
    sem = asyncio.Semaphore(max(1, concurrency))

    async def run(group: list[Change]) -> None:
        async with sem:
            for change in group:
                if failures:
                    return
                t0 = time.perf_counter()
                try:
                    await _apply_one(api, change, server)
                except ReconcileError as exc:
                    failures.append((change, exc))
                    return
                step = AppliedStep(change, time.perf_counter() - t0)
                result.steps.append(step)
                if progress is not None:
                    progress(step.line())

    for phase in ([[c] for c in first], releasing, others):
        if not failures:
            await asyncio.gather(*(run(g) for g in phase))
    if failures:
        change, exc = failures[0]
        # counted once every running step ended: concurrent groups may finish after it
        done = f"{len(result.steps)} other step(s) done"
        what = (
            f"{change.action} taken by the server, but {exc} ({done})"
            if isinstance(exc, _NotStored)  # the step was taken
            else f"{change.action} failed ({done}): {exc}"
        )
        error = ReconcileError(f"{change.kind} {change.name}: {what}", err_code=exc.err_code)
        raise error from exc
    result.seconds = time.perf_counter() - started
    return result


def _gives_up_subjects(change: Change) -> bool:
    """A stream losing subjects, or a consumer losing filter subjects."""
    if change.action not in ("update", "replace"):
        return False
    name = "subjects" if change.kind == "stream" else "filter_subjects"
    return any(
        f.field == name and bool(set(f.before or ()) - set(f.after or ())) for f in change.fields
    )


def _step_rank(change: Change) -> int:
    """Order inside one stream's group: consumer deletes, the stream, consumers giving
    up filters, other consumers (a stable sort keeps the file's order otherwise)."""
    if change.kind == "stream":
        return 1
    if change.action == "delete":
        return 0
    return 2 if _gives_up_subjects(change) else 3


async def _apply_one(api: JetStreamApi, change: Change, server: Version) -> None:
    s, c = change.stream, change.consumer
    answer: dict[str, Any] | None = None
    if change.kind == "stream":
        if change.action in ("delete", "replace"):
            await api.call(f"STREAM.DELETE.{s}", missing=STREAM_NOT_FOUND)
        if change.action == "replace":
            answer = await _create_after_delete(api, s, change.config)
        elif change.action == "create":
            answer = await api.call(f"STREAM.CREATE.{s}", change.config)
        elif change.action == "update":
            answer = await api.call(f"STREAM.UPDATE.{s}", change.config)
    else:
        if change.action in ("delete", "replace"):
            await api.call(f"CONSUMER.DELETE.{s}.{c}", missing=CONSUMER_NOT_FOUND)
        if change.action in ("create", "replace", "update"):
            body = {"stream_name": s, "config": change.config}
            answer = await api.call(f"CONSUMER.CREATE.{s}.{c}", body)
    if answer is not None and change.config is not None:
        kind: Kind = change.kind
        missed = stored_differences(kind, change.config, answer.get("config") or {}, server)
        if missed:
            raise _NotStored(
                f"the server (nats-server {version_text(server)}) did not store what was "
                f"sent, so a plan would never converge: {'; '.join(missed)}"
            )


class _NotStored(ReconcileError):
    """The server took the step but stored other values than were sent."""


async def _create_after_delete(
    api: JetStreamApi, name: str, config: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Create a stream just deleted: the server may still be removing its store and answer
    10049 ("error creating store for stream") for a moment (seen in the property test);
    it is asked again until the store is gone, for at most about 3 seconds."""
    for attempt in range(12):
        try:
            return await api.call(f"STREAM.CREATE.{name}", config)
        except ReconcileError as exc:
            if exc.err_code != STORE_NOT_READY or attempt == 11:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def stored_differences(
    kind: Kind, sent: dict[str, Any], stored: dict[str, Any], server: Version
) -> list[str]:
    """Fields whose stored value differs from what was sent (`max_age: sent 1d, stored 0`)."""
    out: list[str] = []
    for rule in known(kind, server):
        a, b = effective(kind, rule.key, sent), effective(kind, rule.key, stored)
        if a != b:
            out.append(
                f"{rule.field}: sent {format_value(rule.field, a)}, stored {format_value(rule.field, b)}"
            )
    pairs: list[tuple[str, Any, Any]] = []
    if kind == "stream":
        subjects = (sorted(sent.get("subjects") or []), sorted(stored.get("subjects") or []))
        pairs.append(("subjects", *subjects))
    else:
        pairs.append(("filter_subjects", _filters(sent), _filters(stored)))
    pairs.append(("metadata", _compared_metadata(sent), _compared_metadata(stored)))
    for name, a2, b2 in pairs:
        if a2 != b2:
            out.append(f"{name}: sent {format_value(name, a2)}, stored {format_value(name, b2)}")
    return out


def _compared_metadata(cfg: dict[str, Any]) -> dict[str, str]:
    """The user's metadata and natstopo's marks (not the fingerprint, not `_nats.*`)."""
    md = cfg.get("metadata") or {}
    marks = {k: v for k, v in md.items() if k.startswith("natstopo.") and k != MARK_FINGERPRINT}
    return {**user_metadata(md), **marks}


def _filters(cfg: dict[str, Any]) -> list[str]:
    if cfg.get("filter_subjects"):
        return sorted(cfg["filter_subjects"])
    return [cfg["filter_subject"]] if cfg.get("filter_subject") else []


# --------------------------------------------------------------------------- saved plans


async def check_saved_plan(js_or_nc: Client | JetStreamContext | JetStreamApi, plan: Plan) -> None:
    """Raise unless the server still holds what `plan` was made against.

    Compares the fingerprints of every stream's and consumer's config the plan read, the
    server's version, and, for every in-place change whose verdict depends on what the
    stream holds (a lowered limit, limits -> interest), the verdict with today's state.

    Raises:
        PlanOutdatedError: One line per difference; nothing was changed.
    """
    api = JetStreamApi.of(js_or_nc)
    problems: list[str] = []
    server = api.server_version
    if version_text(server) != plan.server_version:
        problems.append(
            f"the server runs nats-server {version_text(server)}; the plan was made against "
            f"{plan.server_version}"
        )
    streams = {i["config"]["name"]: i for i in await api.list_streams()}
    saved_consumers = [k.split(":", 1)[1] for k in plan.snapshot if k.startswith("consumers:")]
    consumers = await api.consumers_of([n for n in saved_consumers if n in streams])
    now = snapshot_of(streams, consumers)
    for key in sorted(set(plan.snapshot) | {k for k in now if k.startswith("stream:")}):
        kind, _, name = key.partition(":")
        what = f"stream {name}" if kind == "stream" else f"the consumers of stream {name}"
        if key not in now:
            problems.append(f"{what}: gone from the server")
        elif key not in plan.snapshot:
            problems.append(f"{what}: appeared on the server")
        elif now[key] != plan.snapshot[key]:
            problems.append(f"{what}: changed on the server")
    for c in plan.changes:
        if c.kind != "stream" or c.action != "update" or c.stream not in streams:
            continue
        sensitive = [f for f in c.fields if f.effect == "in_place"]
        if not sensitive:
            continue
        subjects = None
        if any(needs_subjects("stream", f.field, f.before, f.after) for f in sensitive):
            subjects = await api.stream_subjects(c.stream)
        state = StreamState.from_info(streams[c.stream], consumers.get(c.stream, []), subjects)
        for f in sensitive:
            effect, reason = classify(
                "stream", f.field, f.before, f.after, server, state, config=c.config
            )
            if effect != "in_place":
                problems.append(f"stream {c.stream}: {f.field} is now {effect}: {reason}")
    if problems:
        raise PlanOutdatedError(problems)


# --------------------------------------------------------------------------- one call


async def reconcile_async(
    options: ConnectOptions,
    topology: Topology,
    *,
    apply: bool = True,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> ApplyResult:
    """Connect, plan, apply (unless `apply` is False: the result then has no steps), plan
    again (anything left is an error naming it), close.

    Raises:
        ReconcileError: As `apply_plan`; or the plan after apply is not empty.
    """
    nc = await connect(options)
    api = JetStreamApi(nc, options.api_prefix)
    try:
        plan = await plan_changes(api, topology)
        if not apply:
            return ApplyResult(plan, seconds=plan.seconds)
        result = await apply_plan(
            api,
            plan,
            allow_destructive=allow_destructive,
            progress=progress,
            concurrency=concurrency,
        )
        if result.changed:
            await check_converged(api, topology, result)
        return result
    finally:
        await nc.close()


async def check_converged(
    js_or_nc: Client | JetStreamContext | JetStreamApi, topology: Topology, result: ApplyResult
) -> None:
    """Plan again after apply; anything left means the server did not converge.

    Raises:
        ReconcileError: Names every asset and field still differing.
    """
    again = await plan_changes(js_or_nc, topology)
    if again.has_changes:
        left = [c.describe() for c in again.changes if c.pending or c.conflict] + again.errors
        raise ReconcileError(
            f"applied {len(result.steps)} change(s), but the server still differs from the "
            "topology:\n  " + "\n  ".join(left)
        )


def reconcile(
    servers: str | Sequence[str] | ConnectOptions,
    topology: Topology,
    *,
    apply: bool = True,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> ApplyResult:
    """Blocking plan-and-apply for callers without an event loop (the Pulumi provider).

    `servers` is a URL, a list of URLs or full `ConnectOptions` (other options then come
    from the NATS_* environment variables).
    """
    options = (
        servers
        if isinstance(servers, ConnectOptions)
        else ConnectOptions.from_env(
            servers=servers if isinstance(servers, str) else tuple(servers)
        )
    )
    work = partial(
        reconcile_async,
        options,
        topology,
        apply=apply,
        allow_destructive=allow_destructive,
        progress=progress,
        concurrency=concurrency,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work())
    # Called from inside an event loop (a Pulumi program, a notebook): asyncio.run would
    # refuse, so the work gets a loop of its own in another thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()

"""`apply_plan`: carry out a plan in an order the server accepts; `reconcile`: plan and apply in one call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from .._errors import ChangesRefusedError, ReconcileError
from ..jetstream.api import CONSUMER_NOT_FOUND, STREAM_NOT_FOUND, JetStreamApi
from ..jetstream.connect import ConnectOptions, connect
from ..topology.model import Topology
from .plan import AppliedStep, ApplyResult, Change, Plan
from .planner import plan_changes


async def apply_plan(
    js_or_nc: Client | JetStreamContext | JetStreamApi,
    plan: Plan,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = 1,
) -> ApplyResult:
    """Carry out `plan`: streams before their consumers, a replace as delete then create.

    Args:
        js_or_nc: A connection or JetStream context (of the server that was planned).
        plan: A plan from `plan_changes`, applied as it is (no re-read).
        allow_destructive: Needed for any replace, delete or lowered limit.
        progress: Called with one line per asset done (`+ stream X created (0.02s)`).
        concurrency: Streams (each with its consumers) worked on at once. 1 keeps the
            file's order, which matters when a subject moves from one stream to another.

    Raises:
        ChangesRefusedError: Replace or destructive steps without `allow_destructive`;
            nothing was changed.
        ReconcileError: A conflict with another topology (nothing changed), or the server
            refused a step (the steps before it are done).
    """
    started = time.perf_counter()
    if plan.conflicts:
        raise ReconcileError(
            "assets declared here are managed by another topology; nothing was changed:\n  "
            + "\n  ".join(c.describe() for c in plan.conflicts)
        )
    if plan.refused_without_flag and not allow_destructive:
        raise ChangesRefusedError([c.describe() for c in plan.changes if c.needs_flag])
    api = JetStreamApi.of(js_or_nc)
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
    failures: list[ReconcileError] = []
    sem = asyncio.Semaphore(max(1, concurrency))

    async def run(group: list[Change]) -> None:
        async with sem:
            for change in group:
                if failures:
                    return
                t0 = time.perf_counter()
                try:
                    await _apply_one(api, change)
                except ReconcileError as exc:
                    failures.append(
                        ReconcileError(
                            f"{change.kind} {change.name}: {change.action} failed "
                            f"({len(result.steps)} step(s) done before): {exc}",
                            err_code=exc.err_code,
                        )
                    )
                    failures[-1].__cause__ = exc
                    return
                step = AppliedStep(change, time.perf_counter() - t0)
                result.steps.append(step)
                if progress is not None:
                    progress(step.line())

    for phase in ([[c] for c in first], releasing, others):
        if not failures:
            await asyncio.gather(*(run(g) for g in phase))
    if failures:
        raise failures[0]
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


async def _apply_one(api: JetStreamApi, change: Change) -> None:
    s, c = change.stream, change.consumer
    if change.kind == "stream":
        if change.action in ("delete", "replace"):
            await api.call(f"STREAM.DELETE.{s}", missing=STREAM_NOT_FOUND)
        if change.action in ("create", "replace"):
            await api.call(f"STREAM.CREATE.{s}", change.config)
        elif change.action == "update":
            await api.call(f"STREAM.UPDATE.{s}", change.config)
        return
    if change.action in ("delete", "replace"):
        await api.call(f"CONSUMER.DELETE.{s}.{c}", missing=CONSUMER_NOT_FOUND)
    if change.action in ("create", "replace", "update"):
        await api.call(f"CONSUMER.CREATE.{s}.{c}", {"stream_name": s, "config": change.config})


# --------------------------------------------------------------------------- one call


async def reconcile_async(
    options: ConnectOptions,
    topology: Topology,
    *,
    apply: bool = True,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = 1,
) -> ApplyResult:
    """Connect, plan, apply (unless `apply` is False: the result then has no steps), close."""
    nc = await connect(options)
    try:
        plan = await plan_changes(nc, topology)
        if not apply:
            return ApplyResult(plan, seconds=plan.seconds)
        return await apply_plan(
            nc,
            plan,
            allow_destructive=allow_destructive,
            progress=progress,
            concurrency=concurrency,
        )
    finally:
        await nc.close()


def reconcile(
    servers: str | Sequence[str] | ConnectOptions,
    topology: Topology,
    *,
    apply: bool = True,
    allow_destructive: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrency: int = 1,
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

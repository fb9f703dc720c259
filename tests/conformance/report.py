"""Run the conformance catalog on every available nats-server version and print tables.

    python tests/conformance/report.py [--json OUT] [--versions 2.10 2.15.1 ...]
                                       [--only SUBSTRING] [--no-cluster] [--concurrency N]

One single server per version runs the single-server cases side by side (unique stream
names and subjects per case, each stream deleted afterwards); a 3-node cluster per
version runs the replicas cases. Progress goes to stderr, the markdown report to stdout.
Every cell is made from an observation; nothing here knows what a server should do.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats
from harness import ServerBinary, available_servers, running_cluster, running_server
from nats.aio.client import Client

from conformance.cases import (
    CONSUMER_CASES,
    CONSUMER_CLUSTER_CASES,
    CREATE_CASES,
    STREAM_CASES,
    STREAM_CLUSTER_CASES,
)
from conformance.probe import (
    NS,
    UNSET,
    ConsumerCase,
    CreateCase,
    CreateObservation,
    Observation,
    StreamCase,
    observe_consumer_change,
    observe_create,
    observe_stream_change,
)

ChangeCase = StreamCase | ConsumerCase
AnyCase = StreamCase | ConsumerCase | CreateCase
T = TypeVar("T")

_DURATION_KEYS = frozenset(
    {
        "max_age",
        "duplicate_window",
        "subject_delete_marker_ttl",
        "ack_wait",
        "backoff",
        "max_expires",
    }
)
# Keys that always differ between a sent config and the stored one, or are not config.
_IGNORED_KEYS = frozenset({"metadata", "created"})


# --------------------------------------------------------------------------- formatting


def fmt_duration(ns: int) -> str:
    """`2m`, `1s`, `500ms`, `1h`, `0` from nanoseconds."""
    if ns == 0:
        return "0"
    for unit, size in (("h", 3600 * NS), ("m", 60 * NS), ("s", NS), ("ms", NS // 1000)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def fmt(key: str, value: Any) -> str:
    """A config value for a table cell (None: absent from the server's config)."""
    if value is UNSET:
        return "key omitted"
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return "true" if value else "false"
    if key in _DURATION_KEYS:
        if isinstance(value, list):
            return "[" + ", ".join(fmt_duration(int(v)) for v in value) + "]"
        if isinstance(value, int):
            return fmt_duration(value)
    if isinstance(value, dict):
        user = {k: v for k, v in value.items() if not str(k).startswith("_nats.")}
        server = sorted(k for k in value if str(k).startswith("_nats."))
        text = json.dumps(user, separators=(",", ":")) if user else "{}"
        return text + (f" (+{', '.join(server)})" if server else "")
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, str):
        return f"'{value}'" if value == "" else value
    return str(value)


def _norm(value: Any) -> Any:
    """Compare values the way the server reports them: empty means absent."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if not str(k).startswith("_nats.")}
    if value in (None, False, "", [], {}):
        return None
    return value


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- verdicts


def side_effects(o: Observation, skip: Iterable[str] = ()) -> list[str]:
    """Other keys the server stored differently from what the update sent."""
    if not o.accepted:
        return []
    out: list[str] = []
    for key in sorted(set(o.config_sent) | set(o.config_after)):
        if key == o.api_key or key in _IGNORED_KEYS or key in skip:
            continue
        sent, after = o.config_sent.get(key), o.config_after.get(key)
        if _norm(sent) != _norm(after):
            out.append(f"{key} {fmt(key, sent)} -> {fmt(key, after)}")
    return out


def watched(o: Observation, keys: Iterable[str]) -> list[str]:
    """The case's watched keys: `key A -> B` (created -> after) or `key stays A`."""
    out = []
    for key in keys:
        before, after = o.config_created.get(key), o.config_after.get(key)
        if _norm(before) == _norm(after):
            out.append(f"{key} stays {fmt(key, after)}")
        else:
            out.append(f"{key} {fmt(key, before)} -> {fmt(key, after)}")
    return out


def verdict(o: Observation, case: ChangeCase | None = None) -> str:
    """One cell: `in place`, `in place, loses N msgs`, `refused (code)`, ... plus facts."""
    if o.probe_error:
        return f"probe error: {o.probe_error[:80]}"
    if not o.created:
        code = o.create_error.err_code if o.create_error else "?"
        return f"setup refused ({code})"
    kept = ""
    if len(o.sequences_before) < len(o.published_sequences):
        kept = f" [{len(o.sequences_before)} of {len(o.published_sequences)} published msgs stored before]"
    if not o.accepted:
        return f"refused ({o.error_code}){kept}"
    parts = ["in place"]
    if o.lost:
        parts.append(f"loses {o.lost} of {len(o.sequences_before)} msgs")
    if o.kind == "consumer":
        if o.recreated:
            parts.append("recreated")
        if o.position_lost:
            parts.append("loses position")
    gone = sorted(set(o.positions_before) - set(o.positions_after))
    if gone:
        parts.append(f"deletes consumer {', '.join(gone)}")
    key = o.api_key
    if o.value_sent is UNSET:
        parts.append(f"now {fmt(key, o.value_after)}")
    elif _norm(o.value_after) != _norm(o.value_sent):
        if _norm(o.value_after) == _norm(o.value_created):
            parts.append(f"not applied: stays {fmt(key, o.value_after)}")
        else:
            parts.append(f"stored {fmt(key, o.value_after)}")
    watch = case.watch if case is not None else ()
    parts += watched(o, watch)
    parts += side_effects(o, watch)
    name = o.subject_consumer
    if name and name in o.positions_before and name in o.positions_after:
        b, a = o.positions_before[name], o.positions_after[name]
        if a.num_pending != b.num_pending:
            parts.append(f"pending {b.num_pending} -> {a.num_pending}")
        if a.num_ack_pending != b.num_ack_pending:
            parts.append(f"ack pending {b.num_ack_pending} -> {a.num_ack_pending}")
    if o.messages_after_publish is not None:
        what = (
            ", ".join(f"{b.count} on {b.subject}" for b in case.publish_after)
            if isinstance(case, StreamCase)
            else "more"
        )
        if o.publish_after_errors:
            parts.append(f"publishing {what} refused ({'; '.join(o.publish_after_errors)})")
        parts.append(
            f"after publishing {what}: {o.messages_after} -> {o.messages_after_publish} msgs"
        )
    if o.restarted:
        if o.after_restart_error is not None:
            what = "stream" if o.kind == "stream" else "consumer"
            parts.append(f"after a restart the {what} is gone ({o.after_restart_error.err_code})")
        else:
            parts.append(
                f"after a restart: {o.messages_after_restart} msgs, "
                f"{o.api_key} {fmt(o.api_key, o.value_after_restart)}"
            )
    if o.delivery_after is not None:
        d = o.delivery_after
        if not d.delivered:
            parts.append("next fetch: nothing")
        elif "Nats-Msg-Size" in d.headers and d.payload_bytes == 0:
            parts.append(f"next fetch: headers only (seq {d.stream_seq})")
        else:
            parts.append(f"next fetch: {d.payload_bytes} B payload (seq {d.stream_seq})")
    return ", ".join(parts) + kept


def _deferred_loss(o: Observation) -> bool:
    """Fewer messages after the follow-up publish, or after the restart, than before it."""
    after_publish = o.messages_after_publish
    if after_publish is not None and after_publish < o.messages_after:
        return True
    settled = after_publish if after_publish is not None else o.messages_after
    return o.messages_after_restart is not None and o.messages_after_restart < settled


def _clean(o: Observation) -> bool:
    return bool(
        not _deferred_loss(o)
        and o.created
        and o.accepted
        and not o.probe_error
        and not o.lost
        and not o.position_lost
        and set(o.positions_before) <= set(o.positions_after)
        and o.after_restart_error is None
        and not (
            o.value_sent is not UNSET
            and _norm(o.value_after) != _norm(o.value_sent)
            and _norm(o.value_after) == _norm(o.value_created)
        )
    )


def field_summary(cases: Sequence[ChangeCase], obs: dict[str, Observation]) -> str:
    """One field on one version, from all its cases: `in place`, `one-way (...)`, ..."""
    present = [c for c in cases if c.name in obs]
    if not present:
        return "-"
    clean = [c for c in present if _clean(obs[c.name])]
    pieces: list[str] = []
    one_way: set[str] = set()
    for c in present:
        o = obs[c.name]
        rev = obs.get(c.reverse_of or "")
        if o.created and not o.accepted and rev is not None and rev.accepted:
            one_way.add(c.name)
            pieces.append(f"one-way: {c.label} refused ({o.error_code})")
    if clean and len(clean) == len(present):
        return "in place"
    if clean:
        pieces.insert(0, "in place")
    for c in present:
        if c in clean or c.name in one_way:
            continue
        pieces.append(f"{c.label}: {verdict(obs[c.name], c)}")
    return "; ".join(pieces)


# --------------------------------------------------------------------------- running


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _run_all(
    url: str,
    items: Sequence[T],
    run: Callable[[Client, T], Any],
    name: Callable[[T], str],
    describe: Callable[[Any, T], str],
    tag: str,
    concurrency: int,
) -> list[Any]:
    nc = await nats.connect(servers=url.split(","), connect_timeout=5)
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def one(item: T) -> Any:
        nonlocal done
        async with sem:
            start = time.monotonic()
            result = await run(nc, item)
            done += 1
            _log(
                f"[{tag}] {done}/{len(items)} {name(item)}: {describe(result, item)} "
                f"({time.monotonic() - start:.1f}s)"
            )
            return result

    try:
        return list(await asyncio.gather(*(one(i) for i in items)))
    finally:
        await nc.drain()


def _slow_first(cases: Iterable[ChangeCase]) -> list[ChangeCase]:
    def cost(c: ChangeCase) -> float:
        return max([b.age for b in c.messages] + [0.0]) + c.settle

    return sorted(cases, key=lambda c: -cost(c))


async def _observe(nc: Client, case: ChangeCase) -> Observation:
    if isinstance(case, StreamCase):
        return await observe_stream_change(nc, case)
    return await observe_consumer_change(nc, case)


def _create_desc(o: CreateObservation, _case: CreateCase) -> str:
    if o.probe_error:
        return f"probe error: {o.probe_error}"
    if not o.accepted:
        return f"refused ({o.error.err_code if o.error else '?'})"
    return ", ".join(f"{k}={fmt(k, v)}" for k, v in o.values.items())


def run_version(
    binary: ServerBinary,
    changes: Sequence[ChangeCase],
    creates: Sequence[CreateCase],
    cluster_changes: Sequence[ChangeCase],
    concurrency: int,
) -> tuple[list[Observation], list[CreateObservation]]:
    """All cases on one version, then the cluster ones.

    The cases that restart the server run one after the other on a second server of
    the same version, beside the others.
    """
    tag = binary.version_str
    together = [c for c in changes if not c.restart]
    alone = [c for c in changes if c.restart]
    obs: list[Observation] = []
    made: list[CreateObservation] = []
    with running_server(binary) as server, running_server(binary, name="restarts") as spare:

        async def restart() -> None:
            await asyncio.to_thread(spare.restart)

        async def observe_alone() -> list[Observation]:
            out = []
            for case in alone:
                start = time.monotonic()
                if isinstance(case, StreamCase):
                    o = await observe_stream_change(spare.url, case, restart=restart)
                else:
                    o = await observe_consumer_change(spare.url, case, restart=restart)
                _log(
                    f"[{tag} restarts] {case.name}: {verdict(o, case)} "
                    f"({time.monotonic() - start:.1f}s)"
                )
                out.append(o)
            return out

        async def observe_together() -> tuple[list[Observation], list[CreateObservation]]:
            changed = await _run_all(
                server.url,
                _slow_first(together),
                _observe,
                lambda c: c.name,
                verdict,
                tag,
                concurrency,
            )
            created = await _run_all(
                server.url,
                list(creates),
                observe_create,
                lambda c: c.name,
                _create_desc,
                tag,
                concurrency,
            )
            return changed, created

        async def both() -> None:
            (changed, created), restarted = await asyncio.gather(
                observe_together(), observe_alone()
            )
            obs.extend([*changed, *restarted])
            made.extend(created)

        asyncio.run(both())
    if cluster_changes:
        with running_cluster(binary) as cluster:
            obs += asyncio.run(
                _run_all(
                    cluster.url,
                    list(cluster_changes),
                    _observe,
                    lambda c: c.name,
                    verdict,
                    f"{tag} cluster",
                    2,
                )
            )
    return obs, made


# --------------------------------------------------------------------------- markdown


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def render(
    versions: Sequence[str],
    cases: Sequence[ChangeCase],
    creates: Sequence[CreateCase],
    results: dict[str, dict[str, Observation]],
    made: dict[str, dict[str, CreateObservation]],
    elapsed: float,
) -> str:
    """The markdown report."""
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Measured: what JetStream does with each config change, per server version",
        "",
        f"Measured {today} with `python tests/conformance/report.py` on nats-server "
        + ", ".join(versions)
        + f" (nats-py {importlib.metadata.version('nats-py')}; single server per version, "
        "replicas cases on a 3-node cluster; "
        f"{sum(len(r) for r in results.values()) + sum(len(m) for m in made.values())} "
        f"observations in {elapsed:.0f}s). Every cell is generated from an observation.",
        "",
        "How a change is sent: the server's own config (STREAM.INFO / CONSUMER.INFO) with "
        'only that field changed, or its key removed ("key omitted"), sent to STREAM.UPDATE '
        "or CONSUMER.CREATE, as a reconciler does. Durations as `1m`, sizes in bytes.",
        "",
        "Cell words: `in place` (accepted); `loses N of M msgs` (stored sequences gone after "
        "the update settled); `loses position` / `recreated` (a consumer's delivered or ack "
        "floor went back, or its creation time changed); `deletes consumer X`; `refused "
        "(err_code)`; `setup refused` (the *before* state cannot be created on that version); "
        "`not applied: stays X` (accepted, the value did not change); `stored X` (accepted, "
        "the server stores another value than sent); `now X` (after the key was omitted); "
        "`K stays X` / `K A -> B` for a related key the case watches; "
        "`[n of m published msgs stored before]` (the stream kept fewer than were published); "
        "`after publishing 1 on a: A -> B msgs` (a follow-up publish once the update settled); "
        "`after a restart` (the server restarted after the update; cases run alone); "
        "`key A -> B` (another key the server changed from what was sent); `pending` "
        "(the changed consumer's num_pending); `next fetch` (one fetch after the update); "
        "`one-way` (one direction refused while the reverse is accepted).",
        "",
        "## Summary: field x version",
        "",
    ]
    groups: dict[tuple[str, str], list[ChangeCase]] = {}
    for c in cases:
        kind = "stream" if isinstance(c, StreamCase) else "consumer"
        groups.setdefault((kind, c.field), []).append(c)
    rows = []
    for (kind, fld), group in groups.items():
        rows.append([f"{kind} `{fld}`"] + [field_summary(group, results[v]) for v in versions])
    lines += _table(["field", *list(versions)], rows)
    sections: list[tuple[str, Callable[[ChangeCase], bool]]] = [
        ("Stream changes (single server)", lambda c: isinstance(c, StreamCase) and not c.cluster),
        (
            "Consumer changes (single server)",
            lambda c: isinstance(c, ConsumerCase) and not c.cluster,
        ),
        ("Replicas on a 3-node cluster", lambda c: c.cluster),
    ]
    for title, pick in sections:
        chosen = [c for c in cases if pick(c)]
        if not chosen:
            continue
        lines += ["", f"## {title}", ""]
        rows = []
        for c in chosen:
            cells = [
                verdict(results[v][c.name], c) if c.name in results[v] else "-" for v in versions
            ]
            rows.append([f"`{c.field}`", c.label or c.name, *cells])
        lines += _table(["field", "change", *list(versions)], rows)
    if creates:
        lines += ["", "## Stored on create (normalisation and defaults)", ""]
        rows = []
        for cc in creates:
            for key in cc.fields:
                cells = []
                for v in versions:
                    co = made[v].get(cc.name)
                    if co is None:
                        cells.append("-")
                    elif co.probe_error:
                        cells.append(f"probe error: {co.probe_error[:60]}")
                    elif not co.accepted:
                        cells.append(f"refused ({co.error.err_code if co.error else '?'})")
                    else:
                        cells.append(fmt(key, co.values.get(key)))
                rows.append([cc.kind, cc.label or cc.name, f"`{key}`", *cells])
        lines += _table(["asset", "created with", "stored key", *list(versions)], rows)
    lines += ["", "## Refusals: the server's text", ""]
    seen: dict[tuple[str, int, str], list[str]] = {}
    for v in versions:
        for name, o in results[v].items():
            err = o.error or o.create_error
            if err is not None:
                seen.setdefault((name, err.err_code, err.description), []).append(v)
        for name, co in made[v].items():
            if co.error is not None:
                seen.setdefault((name, co.error.err_code, co.error.description), []).append(v)
    order = {c.name: i for i, c in enumerate([*cases, *creates])}
    ranked = sorted(seen.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0]))
    rows = [[f"`{n}`", str(code), desc, ", ".join(vs)] for (n, code, desc), vs in ranked]
    lines += _table(["case", "err_code", "description", "versions"], rows)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the catalog and print the markdown report; `--json` also writes every observation."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", metavar="OUT", help="write every observation as JSON")
    ap.add_argument("--versions", nargs="*", help="version prefixes (2.10, 2.15.1); default all")
    ap.add_argument("--only", help="only cases whose name contains this")
    ap.add_argument("--no-cluster", action="store_true", help="skip the 3-node cluster cases")
    ap.add_argument("--concurrency", type=int, default=6, help="cases at once per server")
    args = ap.parse_args(argv)

    binaries = available_servers()
    if args.versions:
        binaries = [
            b
            for b in binaries
            if any(b.version_str == p or b.version_str.startswith(p + ".") for p in args.versions)
        ]
    if not binaries:
        _log("no nats-server binary found")
        return 1

    def keep(c: AnyCase) -> bool:
        return args.only is None or args.only in c.name

    singles: list[ChangeCase] = [*STREAM_CASES, *CONSUMER_CASES]
    clustered: list[ChangeCase] = [*STREAM_CLUSTER_CASES, *CONSUMER_CLUSTER_CASES]
    single = [c for c in singles if keep(c)]
    cluster = [] if args.no_cluster else [c for c in clustered if keep(c)]
    creates = [c for c in CREATE_CASES if keep(c)]

    start = time.monotonic()
    results: dict[str, dict[str, Observation]] = {}
    made: dict[str, dict[str, CreateObservation]] = {}
    versions: list[str] = []
    for b in binaries:
        t0 = time.monotonic()
        obs, mk = run_version(b, single, creates, cluster, args.concurrency)
        reported = {o.server_version for o in obs} | {m.server_version for m in mk}
        v = sorted(reported)[0] if len(reported) == 1 else b.version_str
        versions.append(v)
        results[v] = {o.case: o for o in obs}
        made[v] = {m.case: m for m in mk}
        _log(f"[{v}] done in {time.monotonic() - t0:.0f}s")
    elapsed = time.monotonic() - start
    all_cases = [*single, *cluster]
    print(render(versions, all_cases, creates, results, made, elapsed), end="")
    if args.json:
        data = {
            "measured": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions,
            "observations": {v: [o.to_dict() for o in results[v].values()] for v in versions},
            "creates": {v: [m.to_dict() for m in made[v].values()] for v in versions},
        }
        Path(args.json).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        _log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

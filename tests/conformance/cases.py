"""The catalog of config changes natstopo can make, as cases for `probe`.

Every stream and consumer field of the topology format gets cases: set from the default,
raised, lowered, removed (the key omitted from the update, `UNSET`) and, where it says
something different, set to the default explicitly; toggles both ways (`reverse_of` pairs
them so a table can call a field one-way); every retention transition; storage; replicas
(on a 3-node cluster). Limits whose lowering can delete messages have a case that stays
above what is stored and one that goes below it. `CREATE_CASES` record what the server
stores for a created value (normalisation, defaults).

Values are in API units: durations in nanoseconds, sizes in bytes. Subjects are relative
(the probe prefixes them per run). Nothing here states an expected outcome: the tables
are made from what the servers answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, TypeVar

from .probe import NS, UNSET, Batch, ConsumerCase, ConsumerSetup, CreateCase, StreamCase

MS: Final = NS // 1000
MINUTE: Final = 60 * NS
HOUR: Final = 60 * MINUTE
KIB: Final = 1024
MIB: Final = 1024 * KIB

# Ten messages of 100 bytes on one subject: about 1.4 KiB stored.
TEN: Final = (Batch("a", 10, size=100),)
# Three subjects, four messages each (12 in all).
PER_SUBJECT: Final = (Batch("a", 4), Batch("b", 4), Batch("c", 4))
# Old and fresh messages: 3 that are 4.5 s old, 2 just published.
AGED: Final = (Batch("a", 3, age=4.5), Batch("a", 2))
# Alternating subjects a, b (10 messages: sequences 1,3,5,.. on a; 2,4,.. on b).
ALTERNATING: Final = tuple(Batch("a" if i % 2 == 0 else "b") for i in range(10))
SIX: Final = (Batch("a", 6),)

CaseT = TypeVar("CaseT", bound=StreamCase | ConsumerCase)


def _watching(cases: list[CaseT], *keys: str) -> list[CaseT]:
    """The cases with `keys` added to what their table cells show."""
    out: list[CaseT] = []
    for one in cases:
        watch: tuple[str, ...] = (*one.watch, *keys)
        out.append(dataclasses.replace(one, watch=watch))
    return out


def _toggle(
    fld: str, *, before: dict[str, Any] | None = None, settle: float = 0.3
) -> list[StreamCase]:
    base = dict(before or {})
    on, off = f"{fld}-on", f"{fld}-off"
    return [
        StreamCase(on, fld, True, before={**base, fld: False}, label="off -> on", reverse_of=off),
        StreamCase(off, fld, False, before={**base, fld: True}, label="on -> off", reverse_of=on),
        StreamCase(
            f"{fld}-unset", fld, UNSET, before={**base, fld: True}, label="on -> key omitted"
        ),
    ]


def _limit_cases(
    fld: str,
    *,
    unlimited: int,
    low: int,
    mid: int,
    high: int,
    below: int,
    messages: tuple[Batch, ...],
) -> list[StreamCase]:
    """Cases of a count/size limit: `low < mid < high` are above what is stored."""
    return [
        StreamCase(
            f"{fld}-set-above",
            fld,
            high,
            before={},
            messages=messages,
            label=f"unlimited -> {high} (above stored)",
        ),
        StreamCase(
            f"{fld}-set-below",
            fld,
            below,
            before={},
            messages=messages,
            label=f"unlimited -> {below} (below stored)",
        ),
        StreamCase(
            f"{fld}-raise",
            fld,
            high,
            before={fld: mid},
            messages=messages,
            label=f"{mid} -> {high}",
        ),
        StreamCase(
            f"{fld}-lower-above",
            fld,
            low,
            before={fld: high},
            messages=messages,
            label=f"{high} -> {low} (above stored)",
        ),
        StreamCase(
            f"{fld}-lower-below",
            fld,
            below,
            before={fld: mid},
            messages=messages,
            label=f"{mid} -> {below} (below stored)",
        ),
        StreamCase(
            f"{fld}-lower-below-discard-new",
            fld,
            below,
            before={fld: mid, "discard": "new"},
            messages=messages,
            label=f"{mid} -> {below} (below stored), discard new",
        ),
        StreamCase(
            f"{fld}-unset",
            fld,
            UNSET,
            before={fld: mid},
            messages=messages,
            label=f"{mid} -> key omitted",
        ),
        StreamCase(
            f"{fld}-zero",
            fld,
            0,
            before={fld: mid},
            messages=messages,
            label=f"{mid} -> 0 explicit",
        ),
        StreamCase(
            f"{fld}-unlimited",
            fld,
            unlimited,
            before={fld: mid},
            messages=messages,
            label=f"{mid} -> {unlimited} explicit",
        ),
    ]


def _retention_cases() -> list[StreamCase]:
    li = "retention"
    return [
        StreamCase(
            "retention-limits-interest-none",
            li,
            "interest",
            messages=SIX,
            label="limits -> interest, no consumers",
            settle=1.5,
            reverse_of="retention-interest-limits",
        ),
        StreamCase(
            "retention-limits-interest-ackall",
            li,
            "interest",
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=6),),
            label="limits -> interest, 1 consumer acked all 6",
            settle=1.5,
        ),
        StreamCase(
            "retention-limits-interest-ackhalf",
            li,
            "interest",
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3),),
            label="limits -> interest, 1 consumer acked 3 of 6",
            settle=1.5,
        ),
        StreamCase(
            "retention-limits-interest-pending",
            li,
            "interest",
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3, deliver=6),),
            label="limits -> interest, 1 consumer acked 3, 3 delivered unacked",
            settle=1.5,
        ),
        StreamCase(
            "retention-limits-interest-all-none",
            li,
            "interest",
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=6), ConsumerSetup("Y")),
            label="limits -> interest, 2 consumers: one acked all, one none",
            settle=1.5,
        ),
        StreamCase(
            "retention-limits-interest-filtered-ackall",
            li,
            "interest",
            messages=(Batch("a", 3), Batch("b", 3)),
            consumers=(ConsumerSetup("X", {"filter_subject": "a"}, ack=3),),
            label="limits -> interest, consumer on a (acked all a), 3 on a + 3 on b",
            settle=1.5,
        ),
        StreamCase(
            "retention-limits-interest-filtered-none",
            li,
            "interest",
            messages=(Batch("a", 3), Batch("b", 3)),
            consumers=(ConsumerSetup("X", {"filter_subject": "a"}),),
            label="limits -> interest, consumer on a (acked none), 3 on a + 3 on b",
            settle=1.5,
        ),
        StreamCase(
            "retention-interest-limits",
            li,
            "limits",
            before={"retention": "interest"},
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3),),
            label="interest -> limits, 1 consumer acked 3 of 6",
            reverse_of="retention-limits-interest-none",
            settle=1.5,
        ),
        StreamCase(
            "retention-interest-limits-none",
            li,
            "limits",
            before={"retention": "interest"},
            messages=SIX,
            label="interest -> limits, no consumers",
            settle=1.5,
        ),
        StreamCase(
            "retention-limits-workqueue",
            li,
            "workqueue",
            messages=SIX,
            label="limits -> workqueue",
            reverse_of="retention-workqueue-limits",
        ),
        StreamCase(
            "retention-workqueue-limits",
            li,
            "limits",
            before={"retention": "workqueue"},
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3),),
            label="workqueue -> limits (consumer acked 3 of 6)",
            reverse_of="retention-limits-workqueue",
        ),
        StreamCase(
            "retention-interest-workqueue",
            li,
            "workqueue",
            before={"retention": "interest"},
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3),),
            label="interest -> workqueue",
            reverse_of="retention-workqueue-interest",
        ),
        StreamCase(
            "retention-workqueue-interest",
            li,
            "interest",
            before={"retention": "workqueue"},
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3),),
            label="workqueue -> interest",
            reverse_of="retention-interest-workqueue",
        ),
        StreamCase(
            "retention-interest-unset",
            li,
            UNSET,
            before={"retention": "interest"},
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3),),
            label="interest -> key omitted",
        ),
    ]


def _max_age_cases() -> list[StreamCase]:
    f = "max_age"
    dw = {"duplicate_window": NS}  # below the new max_age, so only max_age is tested
    return _watching(
        [
            StreamCase(
                "max_age-set-above",
                f,
                HOUR,
                messages=AGED,
                label="unlimited -> 1h (messages 0-4.5s old)",
            ),
            StreamCase(
                "max_age-set-below",
                f,
                3 * NS,
                before=dw,
                messages=AGED,
                label="unlimited -> 3s (3 msgs 4.5s old, 2 fresh), duplicate_window 1s",
            ),
            StreamCase(
                "max_age-raise", f, HOUR, before={f: 10 * MINUTE}, messages=AGED, label="10m -> 1h"
            ),
            StreamCase(
                "max_age-lower-above",
                f,
                10 * MINUTE,
                before={f: HOUR},
                messages=AGED,
                label="1h -> 10m (above ages)",
            ),
            StreamCase(
                "max_age-lower-above-close",
                f,
                6 * NS,
                before={f: HOUR, **dw},
                messages=AGED,
                label="1h -> 6s (all messages younger), duplicate_window 1s",
            ),
            StreamCase(
                "max_age-lower-below",
                f,
                3 * NS,
                before={f: HOUR, **dw},
                messages=AGED,
                label="1h -> 3s (3 msgs older, 2 younger), duplicate_window 1s",
            ),
            StreamCase(
                "max_age-lower-below-default-window",
                f,
                3 * NS,
                before={f: HOUR},
                messages=AGED,
                label="1h -> 3s, duplicate_window left at the server's 2m",
            ),
            StreamCase(
                "max_age-lower-below-with-window",
                f,
                3 * NS,
                before={f: HOUR},
                extra={"duplicate_window": NS},
                messages=AGED,
                label="1h -> 3s and duplicate_window 2m -> 1s in the same update",
            ),
            StreamCase(
                "max_age-lower-below-window-omitted",
                f,
                3 * NS,
                before={f: HOUR},
                extra={"duplicate_window": UNSET},
                messages=AGED,
                label="1h -> 3s and duplicate_window key omitted",
            ),
            StreamCase(
                "max_age-unset",
                f,
                UNSET,
                before={f: HOUR},
                messages=AGED,
                label="1h -> key omitted",
            ),
            StreamCase(
                "max_age-zero", f, 0, before={f: HOUR}, messages=AGED, label="1h -> 0 explicit"
            ),
            StreamCase(
                "max_age-tiny",
                f,
                50 * MS,
                before={f: HOUR, **dw},
                messages=AGED,
                label="1h -> 50ms",
            ),
        ],
        "duplicate_window",
    )


def _stream_cases() -> list[StreamCase]:
    cases: list[StreamCase] = []
    d = "description"
    cases += [
        StreamCase("description-set", d, "one", label="absent -> 'one'"),
        StreamCase("description-change", d, "two", before={d: "one"}, label="'one' -> 'two'"),
        StreamCase("description-unset", d, UNSET, before={d: "one"}, label="'one' -> key omitted"),
        StreamCase("description-empty", d, "", before={d: "one"}, label="'one' -> '' explicit"),
    ]
    cases += _retention_cases()
    cases += [
        StreamCase(
            "storage-file-memory",
            "storage",
            "memory",
            label="file -> memory",
            reverse_of="storage-memory-file",
        ),
        StreamCase(
            "storage-memory-file",
            "storage",
            "file",
            before={"storage": "memory"},
            label="memory -> file",
            reverse_of="storage-file-memory",
        ),
        StreamCase(
            "storage-memory-unset",
            "storage",
            UNSET,
            before={"storage": "memory"},
            label="memory -> key omitted",
        ),
        StreamCase("replicas-1-3-single", "replicas", 3, label="1 -> 3 on a single server"),
        StreamCase("replicas-1-0", "replicas", 0, label="1 -> 0 explicit"),
    ]
    cases += _max_age_cases()
    cases += _limit_cases(
        "max_bytes", unlimited=-1, low=64 * KIB, mid=MIB, high=2 * MIB, below=600, messages=TEN
    )
    cases += _limit_cases(
        "max_msgs", unlimited=-1, low=50, mid=100, high=200, below=4, messages=TEN
    )
    cases += _limit_cases(
        "max_msgs_per_subject", unlimited=-1, low=5, mid=10, high=20, below=2, messages=PER_SUBJECT
    )
    s = "max_msg_size"
    cases += [
        StreamCase(f"{s}-set", s, KIB, messages=TEN, label="unlimited -> 1KiB (msgs 100 B)"),
        StreamCase(f"{s}-raise", s, 2 * KIB, before={s: KIB}, messages=TEN, label="1KiB -> 2KiB"),
        StreamCase(f"{s}-lower", s, 512, before={s: KIB}, messages=TEN, label="1KiB -> 512"),
        StreamCase(
            f"{s}-lower-below",
            s,
            50,
            before={s: KIB},
            messages=TEN,
            label="1KiB -> 50 (stored msgs are 100 B)",
        ),
        StreamCase(
            f"{s}-unset", s, UNSET, before={s: KIB}, messages=TEN, label="1KiB -> key omitted"
        ),
        StreamCase(f"{s}-zero", s, 0, before={s: KIB}, messages=TEN, label="1KiB -> 0 explicit"),
    ]
    m = "max_consumers"
    one = (ConsumerSetup("X"),)
    three = (ConsumerSetup("X"), ConsumerSetup("Y"), ConsumerSetup("Z"))
    cases += [
        StreamCase(f"{m}-set", m, 5, consumers=one, label="unlimited -> 5 (1 consumer)"),
        StreamCase(f"{m}-raise", m, 10, before={m: 5}, consumers=one, label="5 -> 10"),
        StreamCase(f"{m}-lower", m, 2, before={m: 5}, consumers=one, label="5 -> 2 (1 consumer)"),
        StreamCase(
            f"{m}-lower-below",
            m,
            1,
            before={m: 5},
            consumers=three,
            label="5 -> 1 (3 consumers exist)",
        ),
        StreamCase(f"{m}-unset", m, UNSET, before={m: 5}, consumers=one, label="5 -> key omitted"),
        StreamCase(f"{m}-zero", m, 0, before={m: 5}, consumers=one, label="5 -> 0 explicit"),
    ]
    cases += [
        StreamCase(
            "discard-old-new", "discard", "new", label="old -> new", reverse_of="discard-new-old"
        ),
        StreamCase(
            "discard-new-old",
            "discard",
            "old",
            before={"discard": "new"},
            label="new -> old",
            reverse_of="discard-old-new",
        ),
        StreamCase(
            "discard-new-unset",
            "discard",
            UNSET,
            before={"discard": "new"},
            label="new -> key omitted",
        ),
    ]
    dn = {"discard": "new", "max_msgs_per_subject": 5}
    cases += _toggle("discard_new_per_subject", before=dn)
    cases += [
        StreamCase(
            "discard_new_per_subject-on-discard-old",
            "discard_new_per_subject",
            True,
            before={"max_msgs_per_subject": 5},
            label="off -> on with discard old",
        ),
    ]
    w = "duplicate_window"
    cases += [
        StreamCase(f"{w}-set", w, MINUTE, label="server default 2m -> 1m"),
        StreamCase(f"{w}-raise", w, 5 * MINUTE, before={w: MINUTE}, label="1m -> 5m"),
        StreamCase(f"{w}-lower", w, MINUTE, before={w: 5 * MINUTE}, label="5m -> 1m"),
        StreamCase(f"{w}-unset", w, UNSET, before={w: 5 * MINUTE}, label="5m -> key omitted"),
        StreamCase(f"{w}-zero", w, 0, before={w: 5 * MINUTE}, label="5m -> 0 explicit"),
        StreamCase(
            f"{w}-above-max_age",
            w,
            5 * MINUTE,
            before={"max_age": MINUTE},
            label="max_age 1m: 1m -> 5m",
        ),
        StreamCase(
            f"{w}-unset-max_age",
            w,
            UNSET,
            before={"max_age": 30 * NS, w: 10 * NS},
            label="max_age 30s: 10s -> key omitted",
        ),
    ]
    c = "compression"
    cases += [
        StreamCase(
            f"{c}-none-s2", c, "s2", messages=TEN, label="none -> s2", reverse_of=f"{c}-s2-none"
        ),
        StreamCase(
            f"{c}-s2-none",
            c,
            "none",
            before={c: "s2"},
            messages=TEN,
            label="s2 -> none",
            reverse_of=f"{c}-none-s2",
        ),
        StreamCase(
            f"{c}-s2-unset", c, UNSET, before={c: "s2"}, messages=TEN, label="s2 -> key omitted"
        ),
    ]
    cases += _toggle("allow_rollup_hdrs")
    cases += [
        StreamCase(
            "allow_rollup_hdrs-on-deny_purge",
            "allow_rollup_hdrs",
            True,
            before={"deny_purge": True},
            label="off -> on while deny_purge",
        ),
    ]
    cases += _toggle("deny_delete")
    cases += _toggle("deny_purge")
    cases += _toggle("allow_direct")
    cases += _toggle("allow_msg_ttl")
    t = "subject_delete_marker_ttl"
    ttl_base = {"allow_msg_ttl": True, "allow_rollup_hdrs": True}
    cases += [
        StreamCase(f"{t}-set", t, MINUTE, before=ttl_base, label="0 -> 1m (ttl, rollup on)"),
        StreamCase(f"{t}-raise", t, 2 * MINUTE, before={**ttl_base, t: MINUTE}, label="1m -> 2m"),
        StreamCase(f"{t}-lower", t, MINUTE, before={**ttl_base, t: 2 * MINUTE}, label="2m -> 1m"),
        StreamCase(
            f"{t}-unset", t, UNSET, before={**ttl_base, t: MINUTE}, label="1m -> key omitted"
        ),
        StreamCase(f"{t}-tiny", t, 500 * MS, before=ttl_base, label="0 -> 500ms"),
        StreamCase(f"{t}-no-ttl", t, MINUTE, label="0 -> 1m without allow_msg_ttl"),
    ]
    cases += _toggle("allow_batched")
    md = "metadata"
    cases += [
        StreamCase(f"{md}-set", md, {"k": "v"}, label="none -> {k: v}"),
        StreamCase(
            f"{md}-change", md, {"k": "w"}, before={md: {"k": "v"}}, label="{k: v} -> {k: w}"
        ),
        StreamCase(
            f"{md}-remove-key",
            md,
            {"k": "v"},
            before={md: {"k": "v", "j": "x"}},
            label="{k: v, j: x} -> {k: v}",
        ),
        StreamCase(
            f"{md}-unset", md, UNSET, before={md: {"k": "v"}}, label="{k: v} -> key omitted"
        ),
    ]
    sj = "subjects"
    cases += [
        StreamCase(
            f"{sj}-add",
            sj,
            ["a", "b"],
            before={sj: ["a"]},
            messages=(Batch("a", 3),),
            label="[a] -> [a, b]",
        ),
        StreamCase(
            f"{sj}-remove",
            sj,
            ["a"],
            before={sj: ["a", "b"]},
            messages=(Batch("a", 3), Batch("b", 3)),
            label="[a, b] -> [a] (3 msgs on each)",
        ),
        StreamCase(
            f"{sj}-replace",
            sj,
            ["c"],
            before={sj: ["a"]},
            messages=(Batch("a", 3),),
            label="[a] -> [c] (3 msgs on a)",
        ),
        StreamCase(
            f"{sj}-narrow",
            sj,
            ["a.*"],
            before={sj: ["a.>"]},
            messages=(Batch("a.x", 2), Batch("a.x.y", 2)),
            label="[a.>] -> [a.*] (msgs on a.x and a.x.y)",
        ),
        StreamCase(
            f"{sj}-unset",
            sj,
            UNSET,
            before={sj: ["a"]},
            messages=(Batch("a", 3),),
            label="[a] -> key omitted",
        ),
    ]
    cases += [
        StreamCase(
            "unknown-field", "x_natstopo_probe", True, label="a key the server does not know"
        ),
    ]
    return cases


def _stream_cluster_cases() -> list[StreamCase]:
    r = "replicas"
    return [
        StreamCase(
            f"{r}-1-3", r, 3, messages=TEN, cluster=True, label="1 -> 3", reverse_of=f"{r}-3-1"
        ),
        StreamCase(
            f"{r}-3-1",
            r,
            1,
            before={"num_replicas": 3},
            messages=TEN,
            cluster=True,
            label="3 -> 1",
            reverse_of=f"{r}-1-3",
        ),
        StreamCase(
            f"{r}-3-unset",
            r,
            UNSET,
            before={"num_replicas": 3},
            messages=TEN,
            cluster=True,
            label="3 -> key omitted",
        ),
        StreamCase(
            f"{r}-3-5",
            r,
            5,
            before={"num_replicas": 3},
            messages=TEN,
            cluster=True,
            label="3 -> 5 on 3 nodes",
        ),
        StreamCase(
            f"{r}-1-3-interest",
            r,
            3,
            before={"retention": "interest"},
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3),),
            cluster=True,
            label="1 -> 3, interest stream, consumer R1 acked 3 of 6",
        ),
        StreamCase(
            f"{r}-3-1-interest",
            r,
            1,
            before={"retention": "interest", "num_replicas": 3},
            messages=SIX,
            consumers=(ConsumerSetup("X", ack=3),),
            cluster=True,
            label="3 -> 1, interest stream, consumer acked 3 of 6",
        ),
    ]


def _consumer_cases() -> list[ConsumerCase]:
    cases: list[ConsumerCase] = []
    d = "description"
    cases += [
        ConsumerCase("c-description-set", d, "one", label="absent -> 'one'"),
        ConsumerCase("c-description-change", d, "two", before={d: "one"}, label="'one' -> 'two'"),
        ConsumerCase(
            "c-description-unset", d, UNSET, before={d: "one"}, label="'one' -> key omitted"
        ),
    ]
    a = "ack_policy"
    cases += [
        ConsumerCase("ack_policy-explicit-none", a, "none", label="explicit -> none"),
        ConsumerCase("ack_policy-explicit-all", a, "all", label="explicit -> all"),
        ConsumerCase(
            "ack_policy-none-explicit",
            a,
            "explicit",
            before={a: "none"},
            ack=0,
            label="none -> explicit",
        ),
        ConsumerCase("ack_policy-explicit-unset", a, UNSET, label="explicit -> key omitted"),
    ]
    w = "ack_wait"
    bo = {"backoff": [NS, 2 * NS], "max_deliver": 5}
    cases += [
        ConsumerCase(f"{w}-set", w, 10 * NS, label="server default 30s -> 10s"),
        ConsumerCase(f"{w}-raise", w, MINUTE, before={w: 10 * NS}, label="10s -> 1m"),
        ConsumerCase(f"{w}-lower", w, 10 * NS, before={w: MINUTE}, label="1m -> 10s"),
        ConsumerCase(f"{w}-unset", w, UNSET, before={w: 10 * NS}, label="10s -> key omitted"),
        ConsumerCase(f"{w}-zero", w, 0, before={w: 10 * NS}, label="10s -> 0 explicit"),
        ConsumerCase(
            f"{w}-with-backoff",
            w,
            5 * NS,
            before=bo,
            watch=("backoff",),
            label="backoff [1s, 2s]: ack_wait 1s -> 5s",
        ),
    ]
    md = "max_deliver"
    cases += [
        ConsumerCase(f"{md}-set", md, 5, label="unlimited -> 5"),
        ConsumerCase(f"{md}-raise", md, 10, before={md: 5}, label="5 -> 10"),
        ConsumerCase(f"{md}-lower", md, 3, before={md: 5}, label="5 -> 3"),
        ConsumerCase(f"{md}-unset", md, UNSET, before={md: 5}, label="5 -> key omitted"),
        ConsumerCase(f"{md}-zero", md, 0, before={md: 5}, label="5 -> 0 explicit"),
        ConsumerCase(
            f"{md}-below-backoff",
            md,
            2,
            before={"backoff": [NS, 2 * NS, 3 * NS], md: 5},
            label="backoff of 3: 5 -> 2",
        ),
    ]
    b = "backoff"
    cases += _watching(
        [
            ConsumerCase(f"{b}-set", b, [NS, 2 * NS], before={md: 5}, label="none -> [1s, 2s]"),
            ConsumerCase(
                f"{b}-change", b, [2 * NS, 4 * NS], before=bo, label="[1s, 2s] -> [2s, 4s]"
            ),
            ConsumerCase(f"{b}-unset", b, UNSET, before=bo, label="[1s, 2s] -> key omitted"),
            ConsumerCase(f"{b}-empty", b, [], before=bo, label="[1s, 2s] -> [] explicit"),
            ConsumerCase(f"{b}-null", b, None, before=bo, label="[1s, 2s] -> null explicit"),
            ConsumerCase(
                f"{b}-unset-ack_wait-unset",
                b,
                UNSET,
                before=bo,
                extra={"ack_wait": UNSET},
                label="[1s, 2s] -> key omitted, ack_wait omitted too",
            ),
            ConsumerCase(
                f"{b}-unset-ack_wait-30s",
                b,
                UNSET,
                before=bo,
                extra={"ack_wait": 30 * NS},
                label="[1s, 2s] -> key omitted, ack_wait 30s explicit",
            ),
        ],
        "ack_wait",
    )
    p = "max_ack_pending"
    cases += [
        ConsumerCase(f"{p}-raise", p, 2000, label="server default 1000 -> 2000"),
        ConsumerCase(f"{p}-lower", p, 10, label="1000 -> 10"),
        ConsumerCase(
            f"{p}-lower-below",
            p,
            1,
            sample_delivery=True,
            label="1000 -> 1 (2 pending now), then fetch",
        ),
        ConsumerCase(f"{p}-unset", p, UNSET, before={p: 10}, label="10 -> key omitted"),
        ConsumerCase(f"{p}-zero", p, 0, before={p: 10}, label="10 -> 0 explicit"),
        ConsumerCase(f"{p}-unlimited", p, -1, before={p: 10}, label="10 -> -1 explicit"),
    ]
    dp = "deliver_policy"
    cases += [
        ConsumerCase(f"{dp}-all-new", dp, "new", label="all -> new"),
        ConsumerCase(f"{dp}-all-last", dp, "last", label="all -> last"),
        ConsumerCase(
            f"{dp}-all-start",
            dp,
            "by_start_sequence",
            extra={"opt_start_seq": 3},
            label="all -> by_start_sequence 3",
        ),
        ConsumerCase(
            f"{dp}-new-unset",
            dp,
            UNSET,
            before={dp: "new"},
            deliver=0,
            ack=0,
            label="new -> key omitted",
        ),
    ]
    o = "opt_start_seq"
    start = {dp: "by_start_sequence", o: 2}
    cases += [
        ConsumerCase(f"{o}-change", o, 5, before=start, label="2 -> 5"),
        ConsumerCase(f"{o}-lower", o, 1, before=start, label="2 -> 1"),
    ]
    rp = "replay_policy"
    cases += [
        ConsumerCase(
            f"{rp}-instant-original",
            rp,
            "original",
            label="instant -> original",
            reverse_of=f"{rp}-original-instant",
        ),
        ConsumerCase(
            f"{rp}-original-instant",
            rp,
            "instant",
            before={rp: "original"},
            label="original -> instant",
            reverse_of=f"{rp}-instant-original",
        ),
    ]
    mw = "max_waiting"
    cases += [
        ConsumerCase(f"{mw}-lower", mw, 100, label="server default 512 -> 100"),
        ConsumerCase(f"{mw}-raise", mw, 512, before={mw: 100}, label="100 -> 512"),
        ConsumerCase(f"{mw}-unset", mw, UNSET, before={mw: 100}, label="100 -> key omitted"),
        ConsumerCase(f"{mw}-zero", mw, 0, before={mw: 100}, label="100 -> 0 explicit"),
        ConsumerCase(f"{mw}-same", mw, 512, label="512 -> 512 (unchanged, resent)"),
    ]
    mb = "max_request_batch"
    cases += [
        ConsumerCase(f"{mb}-set", mb, 10, label="unlimited -> 10"),
        ConsumerCase(f"{mb}-raise", mb, 20, before={"max_batch": 10}, label="10 -> 20"),
        ConsumerCase(f"{mb}-lower", mb, 5, before={"max_batch": 10}, label="10 -> 5"),
        ConsumerCase(f"{mb}-unset", mb, UNSET, before={"max_batch": 10}, label="10 -> key omitted"),
    ]
    me = "max_request_expires"
    cases += [
        ConsumerCase(f"{me}-set", me, 5 * NS, label="unlimited -> 5s"),
        ConsumerCase(f"{me}-raise", me, 10 * NS, before={"max_expires": 5 * NS}, label="5s -> 10s"),
        ConsumerCase(f"{me}-lower", me, 2 * NS, before={"max_expires": 5 * NS}, label="5s -> 2s"),
        ConsumerCase(
            f"{me}-unset", me, UNSET, before={"max_expires": 5 * NS}, label="5s -> key omitted"
        ),
    ]
    r = "replicas"
    cases += [
        ConsumerCase(f"c-{r}-0-1", r, 1, label="0 (follow stream R1) -> 1"),
        ConsumerCase(f"c-{r}-0-3-single", r, 3, label="0 -> 3 on a single server"),
    ]
    ms = "mem_storage"
    cases += [
        ConsumerCase(f"{ms}-on", ms, True, label="off -> on", reverse_of=f"{ms}-off"),
        ConsumerCase(
            f"{ms}-off", ms, False, before={ms: True}, label="on -> off", reverse_of=f"{ms}-on"
        ),
        ConsumerCase(f"{ms}-unset", ms, UNSET, before={ms: True}, label="on -> key omitted"),
        ConsumerCase(
            f"{ms}-on-same", ms, True, before={ms: True}, label="on -> on (unchanged, resent)"
        ),
    ]
    h = "headers_only"
    cases += [
        ConsumerCase(
            f"{h}-on",
            h,
            True,
            sample_delivery=True,
            label="off -> on, then fetch",
            reverse_of=f"{h}-off",
        ),
        ConsumerCase(
            f"{h}-off",
            h,
            False,
            before={h: True},
            sample_delivery=True,
            label="on -> off, then fetch",
            reverse_of=f"{h}-on",
        ),
        ConsumerCase(
            f"{h}-unset",
            h,
            UNSET,
            before={h: True},
            sample_delivery=True,
            label="on -> key omitted, then fetch",
        ),
    ]
    mt = "metadata"
    cases += [
        ConsumerCase(f"c-{mt}-set", mt, {"k": "v"}, label="none -> {k: v}"),
        ConsumerCase(
            f"c-{mt}-change", mt, {"k": "w"}, before={mt: {"k": "v"}}, label="{k: v} -> {k: w}"
        ),
        ConsumerCase(
            f"c-{mt}-unset", mt, UNSET, before={mt: {"k": "v"}}, label="{k: v} -> key omitted"
        ),
    ]
    fs, fss = "filter_subject", "filter_subjects"
    cases += [
        ConsumerCase(
            "filter-set",
            fs,
            "a",
            messages=ALTERNATING,
            label="none -> a (delivered 4 of a/b alternating)",
        ),
        ConsumerCase(
            "filter-change",
            fs,
            "b",
            before={fs: "a"},
            messages=ALTERNATING,
            label="a -> b (delivered 4 of a)",
        ),
        ConsumerCase(
            "filter-unset",
            fs,
            UNSET,
            before={fs: "a"},
            messages=ALTERNATING,
            label="a -> key omitted",
        ),
        ConsumerCase(
            "filter-widen",
            fss,
            ["a", "b"],
            before={fs: "a"},
            extra={fs: UNSET},
            messages=ALTERNATING,
            label="filter_subject a -> filter_subjects [a, b]",
        ),
        ConsumerCase(
            "filter-many-remove",
            fss,
            ["a"],
            before={fss: ["a", "b"]},
            messages=ALTERNATING,
            label="[a, b] -> [a]",
        ),
        ConsumerCase(
            "filter-many-to-one",
            fs,
            "a",
            before={fss: ["a", "b"]},
            extra={fss: UNSET},
            messages=ALTERNATING,
            label="filter_subjects [a, b] -> filter_subject a",
        ),
        ConsumerCase(
            "filter-many-unset",
            fss,
            UNSET,
            before={fss: ["a", "b"]},
            messages=ALTERNATING,
            label="[a, b] -> key omitted",
        ),
        ConsumerCase(
            "filter-both",
            fss,
            ["b"],
            before={fs: "a"},
            messages=ALTERNATING,
            label="filter_subject a + filter_subjects [b] together",
        ),
    ]
    interest = {"retention": "interest"}
    cases += [
        ConsumerCase(
            "interest-filter-narrow",
            fss,
            ["a"],
            before={fss: ["a", "b"]},
            stream=interest,
            messages=ALTERNATING,
            label="interest stream, only consumer: [a, b] -> [a] (acked 2 of 4)",
        ),
        ConsumerCase(
            "interest-filter-set",
            fs,
            "a",
            stream=interest,
            messages=ALTERNATING,
            label="interest stream, only consumer: none -> a (acked 2 of 4)",
        ),
        ConsumerCase(
            "interest-filter-change",
            fs,
            "b",
            before={fs: "a"},
            stream=interest,
            messages=ALTERNATING,
            label="interest stream, only consumer: a -> b (acked 2 of 4 on a)",
        ),
        ConsumerCase(
            "interest-filter-narrow-other",
            fss,
            ["a"],
            before={fss: ["a", "b"]},
            stream=interest,
            messages=ALTERNATING,
            others=(ConsumerSetup("O", {"filter_subject": "b"}),),
            label="interest stream, [a, b] -> [a] while consumer O reads b",
        ),
    ]
    wq = {"retention": "workqueue"}
    cases += [
        ConsumerCase(
            "wq-filter-change",
            fs,
            "b",
            before={fs: "a"},
            stream=wq,
            messages=ALTERNATING,
            label="work queue: a -> b (acked 2 of a)",
        ),
        ConsumerCase(
            "wq-max_ack_pending", "max_ack_pending", 10, stream=wq, label="work queue: 1000 -> 10"
        ),
    ]
    cases += [
        ConsumerCase(
            "c-unknown-field", "x_natstopo_probe", True, label="a key the server does not know"
        ),
    ]
    return cases


def _consumer_cluster_cases() -> list[ConsumerCase]:
    r = "replicas"
    r3 = {"num_replicas": 3}
    return [
        ConsumerCase(
            f"c-{r}-0-1-R3", r, 1, stream=r3, cluster=True, label="stream R3: 0 (follow) -> 1"
        ),
        ConsumerCase(
            f"c-{r}-1-3-R3",
            r,
            3,
            before={"num_replicas": 1},
            stream=r3,
            cluster=True,
            label="stream R3: 1 -> 3",
            reverse_of=f"c-{r}-3-1-R3",
        ),
        ConsumerCase(
            f"c-{r}-3-1-R3",
            r,
            1,
            before={"num_replicas": 3},
            stream=r3,
            cluster=True,
            label="stream R3: 3 -> 1",
            reverse_of=f"c-{r}-1-3-R3",
        ),
        ConsumerCase(
            f"c-{r}-3-unset-R3",
            r,
            UNSET,
            before={"num_replicas": 3},
            stream=r3,
            cluster=True,
            label="stream R3: 3 -> key omitted",
        ),
        ConsumerCase(f"c-{r}-0-3-R1", r, 3, cluster=True, label="stream R1: 0 -> 3"),
        ConsumerCase(
            f"c-{r}-3-1-R3-interest",
            r,
            1,
            before={"num_replicas": 3},
            stream={**r3, "retention": "interest"},
            cluster=True,
            label="interest stream R3: 3 -> 1",
        ),
    ]


def _tuned(cases: list[CaseT], changes: dict[str, dict[str, Any]]) -> list[CaseT]:
    """The cases with some of them changed by name (publish after, restart)."""
    missing = set(changes) - {c.name for c in cases}
    if missing:
        raise ValueError(f"no such cases: {sorted(missing)}")
    return [dataclasses.replace(c, **changes[c.name]) if c.name in changes else c for c in cases]


ONE_MORE: Final = (Batch("a", 1),)
# Follow-ups where the update alone does not tell the whole story: does a limit take
# effect on the next publish, does the asset survive a restart of the server.
_STREAM_FOLLOW_UPS: Final[dict[str, dict[str, Any]]] = {
    "max_msgs_per_subject-set-below": {"publish_after": ONE_MORE, "restart": True},
    "max_msgs_per_subject-lower-below-discard-new": {"publish_after": ONE_MORE},
    "max_msgs-lower-below-discard-new": {"publish_after": ONE_MORE, "restart": True},
    "max_bytes-lower-below-discard-new": {"publish_after": ONE_MORE, "restart": True},
    "max_msg_size-lower-below": {"publish_after": (Batch("a", 1, size=100),)},
    "retention-limits-interest-none": {"publish_after": ONE_MORE, "restart": True},
    "retention-limits-interest-filtered-none": {"publish_after": (Batch("b", 1),)},
    "replicas-1-3-single": {"publish_after": ONE_MORE, "restart": True},
    "subjects-remove": {"publish_after": (Batch("b", 1),)},
    "allow_msg_ttl-on": {"restart": True},
}
_CONSUMER_FOLLOW_UPS: Final[dict[str, dict[str, Any]]] = {
    "mem_storage-on": {"restart": True},
    "mem_storage-off": {"restart": True},
    "mem_storage-on-same": {"restart": True},
}

STREAM_CASES: Final[tuple[StreamCase, ...]] = tuple(_tuned(_stream_cases(), _STREAM_FOLLOW_UPS))
"""Stream changes on a single server."""
STREAM_CLUSTER_CASES: Final[tuple[StreamCase, ...]] = tuple(_stream_cluster_cases())
"""Stream changes on a 3-node cluster (replicas)."""
CONSUMER_CASES: Final[tuple[ConsumerCase, ...]] = tuple(
    _tuned(_consumer_cases(), _CONSUMER_FOLLOW_UPS)
)
"""Consumer changes on a single server."""
CONSUMER_CLUSTER_CASES: Final[tuple[ConsumerCase, ...]] = tuple(_consumer_cluster_cases())
"""Consumer changes on a 3-node cluster (replicas)."""


def _create_cases() -> list[CreateCase]:
    zero_limits = ("max_msgs", "max_bytes", "max_msg_size", "max_consumers", "max_msgs_per_subject")
    stream_fields = (
        *zero_limits,
        "max_age",
        "duplicate_window",
        "num_replicas",
        "discard",
        "retention",
        "storage",
        "compression",
        "allow_direct",
        "metadata",
    )
    c_fields = (
        "ack_wait",
        "max_ack_pending",
        "max_waiting",
        "max_deliver",
        "backoff",
        "num_replicas",
        "max_batch",
        "max_expires",
        "deliver_policy",
        "replay_policy",
        "metadata",
    )
    s: list[CreateCase] = [
        CreateCase("s-minimal", "stream", {}, stream_fields, label="minimal stream"),
        CreateCase(
            "s-zero-limits",
            "stream",
            {k: 0 for k in zero_limits},
            zero_limits,
            label="limits set to 0",
        ),
        CreateCase(
            "s-replicas-0", "stream", {"num_replicas": 0}, ("num_replicas",), label="num_replicas 0"
        ),
        CreateCase(
            "s-dw-max_age-1m",
            "stream",
            {"max_age": MINUTE},
            ("max_age", "duplicate_window"),
            label="max_age 1m, no duplicate_window",
        ),
        CreateCase(
            "s-dw-max_age-10m",
            "stream",
            {"max_age": 10 * MINUTE},
            ("max_age", "duplicate_window"),
            label="max_age 10m, no duplicate_window",
        ),
        CreateCase(
            "s-dw-zero",
            "stream",
            {"duplicate_window": 0},
            ("duplicate_window",),
            label="duplicate_window 0 explicit",
        ),
        CreateCase(
            "s-dw-above-max_age",
            "stream",
            {"max_age": MINUTE, "duplicate_window": 2 * MINUTE},
            ("max_age", "duplicate_window"),
            label="max_age 1m, duplicate_window 2m",
        ),
        CreateCase(
            "s-dw-tiny",
            "stream",
            {"duplicate_window": 50 * MS},
            ("duplicate_window",),
            label="duplicate_window 50ms",
        ),
        CreateCase(
            "s-max_age-tiny",
            "stream",
            {"max_age": 50 * MS},
            ("max_age", "duplicate_window"),
            label="max_age 50ms",
        ),
        CreateCase(
            "s-description-empty",
            "stream",
            {"description": ""},
            ("description",),
            label="description ''",
        ),
        CreateCase(
            "s-metadata-empty", "stream", {"metadata": {}}, ("metadata",), label="metadata {}"
        ),
        CreateCase(
            "s-allow_msg_ttl",
            "stream",
            {"allow_msg_ttl": True},
            ("allow_msg_ttl",),
            label="allow_msg_ttl true",
        ),
        CreateCase(
            "s-sdm-ttl",
            "stream",
            {"allow_msg_ttl": True, "allow_rollup_hdrs": True, "subject_delete_marker_ttl": MINUTE},
            ("allow_msg_ttl", "subject_delete_marker_ttl"),
            label="subject_delete_marker_ttl 1m (ttl, rollup on)",
        ),
        CreateCase(
            "s-sdm-ttl-tiny",
            "stream",
            {
                "allow_msg_ttl": True,
                "allow_rollup_hdrs": True,
                "subject_delete_marker_ttl": 500 * MS,
            },
            ("subject_delete_marker_ttl",),
            label="subject_delete_marker_ttl 500ms",
        ),
        CreateCase(
            "s-allow_batched",
            "stream",
            {"allow_batched": True},
            ("allow_batched",),
            label="allow_batched true",
        ),
        CreateCase(
            "s-allow_batched-memory",
            "stream",
            {"allow_batched": True, "storage": "memory"},
            ("allow_batched", "storage"),
            label="allow_batched true on memory storage",
        ),
        CreateCase(
            "s-allow_batched-workqueue",
            "stream",
            {"allow_batched": True, "retention": "workqueue"},
            ("allow_batched", "retention"),
            label="allow_batched true, retention workqueue",
        ),
        CreateCase(
            "s-allow_batched-interest",
            "stream",
            {"allow_batched": True, "retention": "interest"},
            ("allow_batched", "retention"),
            label="allow_batched true, retention interest",
        ),
        CreateCase(
            "s-unknown",
            "stream",
            {"x_natstopo_probe": True},
            ("x_natstopo_probe",),
            label="an unknown key",
        ),
        CreateCase(
            "s-dnps-discard-old",
            "stream",
            {"discard_new_per_subject": True, "max_msgs_per_subject": 5},
            ("discard_new_per_subject",),
            label="discard_new_per_subject, discard old",
        ),
        CreateCase(
            "s-rollup-deny-purge",
            "stream",
            {"allow_rollup_hdrs": True, "deny_purge": True},
            ("allow_rollup_hdrs", "deny_purge"),
            label="allow_rollup_hdrs + deny_purge",
        ),
        CreateCase(
            "s-s2-memory",
            "stream",
            {"compression": "s2", "storage": "memory"},
            ("compression", "storage"),
            label="compression s2 on memory storage",
        ),
        CreateCase(
            "s-replicas-3-single",
            "stream",
            {"num_replicas": 3},
            ("num_replicas",),
            label="num_replicas 3 on a single server",
        ),
    ]
    c: list[CreateCase] = [
        CreateCase("c-minimal", "consumer", {}, c_fields, label="ack explicit, nothing else"),
        CreateCase(
            "c-ack-none",
            "consumer",
            {"ack_policy": "none"},
            ("ack_wait", "max_ack_pending", "max_deliver"),
            label="ack none",
        ),
        CreateCase(
            "c-ack-all",
            "consumer",
            {"ack_policy": "all"},
            ("ack_wait", "max_ack_pending"),
            label="ack all",
        ),
        CreateCase(
            "c-backoff",
            "consumer",
            {"backoff": [NS, 5 * NS], "max_deliver": 5},
            ("ack_wait", "backoff"),
            label="backoff [1s, 5s], no ack_wait",
        ),
        CreateCase(
            "c-backoff-ack_wait",
            "consumer",
            {"backoff": [NS, 5 * NS], "max_deliver": 5, "ack_wait": 30 * NS},
            ("ack_wait", "backoff"),
            label="backoff [1s, 5s], ack_wait 30s",
        ),
        CreateCase(
            "c-backoff-unlimited",
            "consumer",
            {"backoff": [NS, 5 * NS]},
            ("ack_wait", "backoff", "max_deliver"),
            label="backoff [1s, 5s], max_deliver unlimited",
        ),
        CreateCase(
            "c-backoff-long",
            "consumer",
            {"backoff": [NS, 2 * NS, 3 * NS], "max_deliver": 2},
            ("backoff", "max_deliver"),
            label="backoff of 3, max_deliver 2",
        ),
        CreateCase(
            "c-zeros",
            "consumer",
            {
                "ack_wait": 0,
                "max_ack_pending": 0,
                "max_waiting": 0,
                "max_deliver": 0,
                "num_replicas": 0,
            },
            ("ack_wait", "max_ack_pending", "max_waiting", "max_deliver", "num_replicas"),
            label="ack_wait, max_ack_pending, max_waiting, max_deliver 0",
        ),
        CreateCase(
            "c-filter-both",
            "consumer",
            {"filter_subject": "a", "filter_subjects": ["b"]},
            ("filter_subject", "filter_subjects"),
            label="filter_subject and filter_subjects",
        ),
        CreateCase(
            "c-filter-one-list",
            "consumer",
            {"filter_subjects": ["a"]},
            ("filter_subject", "filter_subjects"),
            label="filter_subjects [a]",
        ),
        CreateCase(
            "c-metadata-empty", "consumer", {"metadata": {}}, ("metadata",), label="metadata {}"
        ),
        CreateCase(
            "c-replicas-3-single",
            "consumer",
            {"num_replicas": 3},
            ("num_replicas",),
            label="num_replicas 3 on a single server",
        ),
        CreateCase(
            "c-unknown",
            "consumer",
            {"x_natstopo_probe": True},
            ("x_natstopo_probe",),
            label="an unknown key",
        ),
        CreateCase(
            "c-interest-replicas",
            "consumer",
            {"num_replicas": 1},
            ("num_replicas",),
            stream={"retention": "interest"},
            label="interest stream R1: consumer R1",
        ),
    ]
    return s + c


CREATE_CASES: Final[tuple[CreateCase, ...]] = tuple(_create_cases())
"""What the server stores on create (single server)."""


def _names_unique() -> None:
    every: list[StreamCase | ConsumerCase | CreateCase] = [
        *STREAM_CASES,
        *STREAM_CLUSTER_CASES,
        *CONSUMER_CASES,
        *CONSUMER_CLUSTER_CASES,
        *CREATE_CASES,
    ]
    names = [c.name for c in every]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"duplicate case names: {sorted(dupes)}")


_names_unique()

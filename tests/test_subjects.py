"""NATS subjects: validity, matching, overlap, and the trie index against the pairwise rule."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus_runtime.topology.subjects import (
    SubjectIndex,
    is_valid_name,
    subject_matches,
    subject_problem,
    subjects_overlap,
)


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "a", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        (">", "a", True),
        (">", "a.b", True),
        ("*", "a", True),
        ("*", "a.b", False),
        ("*.b.>", "x.b.c", True),
        ("*.b.>", "x.c.c", False),
        ("a.b", "a.b.c", False),
        ("a.b.c", "a.b", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.*", "*.b", True),
        ("a.*", "b.*", False),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.>", "a.*", True),
        ("a.>", "*.>", True),
        ("a.>", "b.>", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("*", "a.b", False),
        ("*.*", "a.>", True),
        ("a.*.c", "a.b.*", True),
        ("a.*.c", "a.b.d", False),
        ("a", "a.b", False),
        ("dlq.A.>", "dlq.A", False),
        ("dlq.A.>", "dlq.A.x.y.z", True),
    ],
)
def test_subjects_overlap(a: str, b: str, overlap: bool) -> None:
    assert subjects_overlap(a, b) is overlap
    assert subjects_overlap(b, a) is overlap


@pytest.mark.parametrize(
    ("subject", "kwargs", "problem"),
    [
        ("a.b", {}, None),
        ("a.*.c", {}, None),
        ("a.>", {}, None),
        ("", {}, "a subject cannot be empty"),
        ("a..b", {}, "empty token in 'a..b'"),
        (".a", {}, "empty token"),
        ("a.", {}, "empty token"),
        ("a.>.b", {}, "'>' must be the last token in 'a.>.b'"),
        ("a.*", {"allow_wildcards": False}, "may not contain the wildcard '*'"),
        ("a.>", {"allow_gt": False}, "may not contain the wildcard '>'"),
        ("a b", {}, "contains whitespace or a wildcard character"),
        ("a.b*", {}, "token 'b*' of 'a.b*'"),
        ("a.b>", {}, "token 'b>' of 'a.b>'"),
        ("a\tb", {}, "whitespace"),
    ],
)
def test_subject_problem(subject: str, kwargs: dict[str, bool], problem: str | None) -> None:
    found = subject_problem(subject, **kwargs)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("ORDERS", True),
        ("orders-v2_x", True),
        ("X" * 255, True),
        ("X" * 256, False),
        ("", False),
        ("A.B", False),
        ("A B", False),
        ("A*", False),
        ("A>", False),
        ("A/B", False),
        ("A\\B", False),
        ("A\tB", False),
        ("A\nB", False),
    ],
)
def test_is_valid_name(name: str, valid: bool) -> None:
    assert is_valid_name(name) is valid


def test_index_finds_overlaps_with_owners() -> None:
    index: SubjectIndex[str] = SubjectIndex()
    index.add("tax.user.created", "EVENTS")
    index.add("tax.firm.*.sync_completed", "EVENTS")
    index.add("dlq.EVENTS.>", "DLQ")
    assert sorted(index.overlapping("tax.*.created")) == [("tax.user.created", "EVENTS")]
    assert sorted(index.overlapping("tax.firm.iris.sync_completed")) == [
        ("tax.firm.*.sync_completed", "EVENTS")
    ]
    assert sorted(index.overlapping("dlq.EVENTS.tax.user.created")) == [("dlq.EVENTS.>", "DLQ")]
    assert list(index.overlapping("dlq.EVENTS")) == []
    assert sorted(index.overlapping(">")) == [
        ("dlq.EVENTS.>", "DLQ"),
        ("tax.firm.*.sync_completed", "EVENTS"),
        ("tax.user.created", "EVENTS"),
    ]
    assert list(index.overlapping("jobs.>")) == []


def test_index_keeps_every_owner_of_one_subject() -> None:
    index: SubjectIndex[int] = SubjectIndex()
    index.add("a.b", 1)
    index.add("a.b", 2)
    assert sorted(index.overlapping("a.*")) == [("a.b", 1), ("a.b", 2)]


# -- the index agrees with the pairwise rule ---------------------------------------------

# A small alphabet makes overlaps frequent; wildcards appear in every position.
tokens = st.sampled_from(["a", "b", "c", "*"])
subjects = st.builds(
    lambda toks, gt: ".".join([*toks, ">"] if gt else toks) or ">",
    st.lists(tokens, min_size=0, max_size=4),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(subjects, min_size=1, max_size=25), subjects)
def test_index_overlapping_agrees_with_subjects_overlap(added: list[str], query: str) -> None:
    index: SubjectIndex[int] = SubjectIndex()
    for i, subject in enumerate(added):
        index.add(subject, i)
    found = sorted(owner for _, owner in index.overlapping(query))
    expected = [i for i, subject in enumerate(added) if subjects_overlap(query, subject)]
    assert found == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), subjects), min_size=1, max_size=30))
def test_index_agrees_with_subjects_overlap_between_adds(steps: list[tuple[bool, str]]) -> None:
    # Queries between adds: literal and wildcard subjects are kept apart, the literals' trie
    # made on the first wildcard query, so what is added after it must be found too.
    index: SubjectIndex[int] = SubjectIndex()
    added: list[str] = []
    for is_query, subject in steps:
        if is_query:
            found = sorted(owner for _, owner in index.overlapping(subject))
            expected = [i for i, s in enumerate(added) if subjects_overlap(subject, s)]
            assert found == expected, (added, subject)
        else:
            index.add(subject, len(added))
            added.append(subject)


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens.filter(lambda t: t != "*") | st.just("d"), min_size=1, max_size=4))
def test_overlap_means_a_concrete_subject_matches_both(concrete_tokens: list[str]) -> None:
    # Every pattern that matches a concrete subject overlaps every other such pattern.
    concrete = ".".join(concrete_tokens)
    patterns = set()
    for mask in itertools.product([False, True], repeat=len(concrete_tokens)):
        toks = ["*" if star else t for star, t in zip(mask, concrete_tokens, strict=True)]
        patterns.add(".".join(toks))
        for cut in range(len(toks)):
            patterns.add(".".join([*toks[:cut], ">"]))
    for p in patterns:
        assert subject_matches(p, concrete), (p, concrete)
    for p, q in itertools.combinations(sorted(patterns), 2):
        assert subjects_overlap(p, q), (p, q)


CONCRETE = [
    ".".join(toks)
    for n in range(1, 6)
    for toks in itertools.product(["a", "b", "c", "z"], repeat=n)
]


@settings(max_examples=300, deadline=None)
@given(subjects, subjects)
def test_overlap_is_exactly_a_shared_concrete_subject(a: str, b: str) -> None:
    # Brute force over every concrete subject of up to 5 tokens (the generated patterns
    # have at most 5) from the alphabet plus a token no pattern names.
    shared = any(subject_matches(a, c) and subject_matches(b, c) for c in CONCRETE)
    assert subjects_overlap(a, b) is shared

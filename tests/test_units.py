"""Durations and sizes with units: parsing, formatting, round trips and errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus_runtime.topology.units import (
    DAY,
    DURATION_PATTERN,
    HOUR,
    MINUTE,
    MS,
    SECOND,
    SIZE_PATTERN,
    US,
    WEEK,
    UnitError,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("500ms", 500 * MS),
        ("30s", 30 * SECOND),
        ("5m", 5 * MINUTE),
        ("2h", 2 * HOUR),
        ("7d", 7 * DAY),
        ("1w", WEEK),
        ("1h30m", 90 * MINUTE),
        ("1.5s", 1500 * MS),
        ("1.5h", 90 * MINUTE),
        ("0.1ms", 100 * US),
        ("10us", 10 * US),
        ("10µs", 10 * US),
        ("7ns", 7),
        ("0", 0),
        ("0s", 0),
        ("1d2h3m4s5ms6us7ns", DAY + 2 * HOUR + 3 * MINUTE + 4 * SECOND + 5 * MS + 6 * US + 7),
        ("400d1ns", 400 * DAY + 1),
        (0, 0),
        (1_000_000, MS),
    ],
)
def test_parse_duration(text: str | int, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("value", "essence"),
    [
        ("7x", "'7x' is not a duration: expected a number and a unit"),
        ("30", "did you mean '30s'?"),
        ("1.5", "did you mean '1.5s'?"),
        ("-5s", "'-5s' is not a duration"),
        ("s", "'s' is not a duration"),
        ("1S", "'1S' is not a duration"),
        ("1 s", "'1 s' is not a duration"),
        ("", "got an empty string"),
        ("  ", "got an empty string"),
        (-1, "a duration cannot be negative; got -1"),
        (True, "expected a duration such as 30s, 5m, 7d; got True"),
        (1.5, "got 1.5"),
        (None, "got None"),
        ([1], "got [1]"),
    ],
)
def test_parse_duration_errors(value: object, essence: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_duration(value)
    assert essence in str(info.value)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (1, "1ns"),
        (1500 * MS, "1s500ms"),
        (90 * MINUTE, "1h30m"),
        (WEEK, "7d"),
        (30 * DAY, "30d"),
        (2 * MINUTE, "2m"),
        (-5 * SECOND, "-5s"),
        (SECOND + 1, "1s1ns"),
    ],
)
def test_format_duration(ns: int | None, text: str) -> None:
    assert format_duration(ns) == text


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * MIB),
        ("10GiB", 10 * GIB),
        ("10 GiB", 10 * GIB),
        ("1GB", 10**9),
        ("64KB", 64_000),
        ("1TiB", TIB),
        ("1TB", 10**12),
        ("1.5KiB", 1536),
        ("1.005KB", 1005),
        ("1K", KIB),
        ("100", 100),
        ("100B", 100),
        ("0", 0),
        (0, 0),
        (-1, -1),
        (5 * GIB, 5 * GIB),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "essence"),
    [
        ("10 GiBs", "'10 GiBs' is not a size"),
        ("5XB", "'5XB' is not a size"),
        ("lots", "'lots' is not a size"),
        ("-5", "'-5' is not a size"),
        ("", "'' is not a size"),
        (-2, "a size cannot be negative (use -1 for no limit); got -2"),
        (False, "expected a size such as 512MiB, 10GiB, 1GB; got False"),
        (1.5, "got 1.5"),
        (None, "got None"),
    ],
)
def test_parse_size_errors(value: object, essence: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_size(value)
    assert essence in str(info.value)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (-1, "unlimited"),
        (0, "0B"),
        (1, "1B"),
        (1000, "1KB"),
        (1536, "1536B"),
        (5 * GIB, "5GiB"),
        (64 * MIB, "64MiB"),
        (2 * 10**9, "2GB"),
        (10**12, "1TB"),
        (TIB, "1TiB"),
    ],
)
def test_format_size(size: int | None, text: str) -> None:
    assert format_size(size) == text


# -- round trips -------------------------------------------------------------------------

durations = st.one_of(
    st.integers(min_value=0, max_value=10**20),
    st.sampled_from([MS, SECOND, MINUTE, HOUR, DAY, WEEK]).flatmap(
        lambda unit: st.integers(min_value=0, max_value=10**6).map(lambda n: n * unit)
    ),
)
sizes = st.one_of(
    st.integers(min_value=0, max_value=10**18),
    st.sampled_from([KIB, MIB, GIB, TIB, 10**3, 10**6, 10**9, 10**12]).flatmap(
        lambda unit: st.integers(min_value=0, max_value=10**6).map(lambda n: n * unit)
    ),
)


@given(durations)
def test_duration_format_parse_round_trip(ns: int) -> None:
    text = format_duration(ns)
    assert parse_duration(text) == ns
    # What natstopo writes, the schema accepts.
    assert re.match(DURATION_PATTERN, text), text


@given(sizes)
def test_size_format_parse_round_trip(n: int) -> None:
    text = format_size(n)
    assert parse_size(text) == n
    assert re.match(SIZE_PATTERN, text), text


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**4),
            st.sampled_from(["ns", "us", "µs", "ms", "s", "m", "h", "d", "w"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_parse_duration_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    factor = {"ns": 1, "us": US, "µs": US, "ms": MS, "s": SECOND, "m": MINUTE}
    factor |= {"h": HOUR, "d": DAY, "w": WEEK}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == sum(n * factor[unit] for n, unit in parts)
    assert re.match(DURATION_PATTERN, text)


@settings(max_examples=300)
@given(st.text(max_size=12))
def test_parse_never_raises_anything_but_unit_error(text: str) -> None:
    for parse in (parse_duration, parse_size):
        try:
            value = parse(text)
        except UnitError:
            continue
        assert isinstance(value, int)


@settings(max_examples=100)
@given(st.from_regex(SIZE_PATTERN, fullmatch=True))
def test_every_size_the_schema_accepts_parses(text: str) -> None:
    assert parse_size(text) >= 0


@settings(max_examples=100)
@given(st.from_regex(DURATION_PATTERN, fullmatch=True))
def test_every_duration_the_schema_accepts_parses(text: str) -> None:
    assert parse_duration(text) >= 0

"""Durations and sizes with units, as the topology file writes them.

Durations: `500ms`, `30s`, `5m`, `2h`, `7d`, `1h30m`, `1w` (or a plain integer of
nanoseconds, as the JetStream API takes them). Sizes: `512MiB`, `10GiB`, `1GB`, `64KB`,
or a plain number of bytes. Formatting goes the other way so that plans and diffs speak
the topology's own units (`7d`, not `604800000000000`).
"""

from __future__ import annotations

import re
from fractions import Fraction

NS = 1
US = 1_000
MS = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY

_DURATION_UNITS = {
    "ns": NS,
    "us": US,
    "µs": US,
    "ms": MS,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
    "d": DAY,
    "w": WEEK,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_DURATION_FULL = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w))+$")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$")

# Pattern strings for the JSON Schema, so editors flag a bad unit as the user types.
DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w))+)$"
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*([KMGT]i?B|[KMGT]|B|[kmgt]i?b)?$"


class UnitError(ValueError):
    """A duration or size that cannot be parsed; the message says what is expected."""


_known_durations: dict[str, int] = {}  # a topology writes the same few durations thousands of times


def parse_duration(value: object) -> int:
    """Nanoseconds of a duration written with units, or an integer of nanoseconds.

    Raises:
        UnitError: The value is neither an integer nor a string like `30s` or `1h30m`.
    """
    if type(value) is str:
        ns = _known_durations.get(value)
        if ns is None:
            ns = _parse_duration(value)  # a refusal raises and is not kept
            if len(_known_durations) < 4096:
                _known_durations[value] = ns
        return ns
    return _parse_duration(value)


def _parse_duration(value: object) -> int:
    if isinstance(value, bool):
        raise UnitError(f"expected a duration such as 30s, 5m, 7d; got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise UnitError(f"a duration cannot be negative; got {value}")
        return value
    if not isinstance(value, str):
        raise UnitError(f"expected a duration such as 30s, 5m, 7d; got {value!r}")
    text = value.strip()
    if text in ("0", ""):
        if text == "0":
            return 0
        raise UnitError("expected a duration such as 30s, 5m, 7d; got an empty string")
    if not _DURATION_FULL.match(text):
        hint = ""
        if re.fullmatch(r"\d+(\.\d+)?", text):
            hint = f" (did you mean '{text}s'? a bare number is nanoseconds only as an integer)"
        raise UnitError(
            f"'{value}' is not a duration: expected a number and a unit "
            f"(ns, us, ms, s, m, h, d, w), e.g. 500ms, 30s, 1h30m, 7d{hint}"
        )
    total: int | Fraction = 0
    for number, unit in _DURATION_PART.findall(text):
        # Exact arithmetic: with floats, `400d1ns` lost its 1ns (beyond 2**53 ns, 104 days).
        total += _exact(number) * _DURATION_UNITS[unit]
    return round(total)


def _exact(number: str) -> int | Fraction:
    return Fraction(number) if "." in number else int(number)


def format_duration(ns: int | None) -> str:
    """The shortest exact spelling of a duration in the topology's units (`7d`, `1h30m`)."""
    if ns is None:
        return "-"
    if ns == 0:
        return "0s"
    if ns < 0:
        return f"-{format_duration(-ns)}"
    parts = []
    rest = ns
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)):
        if rest >= size:
            count, rest = divmod(rest, size)
            parts.append(f"{count}{unit}")
    if rest:
        for unit, size in (("ms", MS), ("us", US), ("ns", NS)):
            if rest % size == 0:
                parts.append(f"{rest // size}{unit}")
                rest = 0
                break
    return "".join(parts)


def parse_size(value: object) -> int:
    """Bytes of a size written with units (`512MiB`, `1GB`) or a plain integer.

    `-1` (no limit, as the server writes it) is accepted as an integer.

    Raises:
        UnitError: The value is not an integer nor a number with a known unit.
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a size such as 512MiB, 10GiB, 1GB; got {value!r}")
    if isinstance(value, int):
        if value < -1:
            raise UnitError(f"a size cannot be negative (use -1 for no limit); got {value}")
        return value
    if not isinstance(value, str):
        raise UnitError(f"expected a size such as 512MiB, 10GiB, 1GB; got {value!r}")
    m = _SIZE_RE.match(value.strip())
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise UnitError(
            f"'{value}' is not a size: expected a number of bytes or a number with a unit "
            "(KB, MB, GB, TB for powers of 1000; KiB, MiB, GiB, TiB for powers of 1024)"
        )
    return int(_exact(m.group(1)) * _SIZE_UNITS[unit])  # exact: with floats 1.005KB was 1004


def format_size(n: int | None) -> str:
    """A size in the unit that divides it exactly with the smallest count (`5GiB`, `1TB`)."""
    if n is None:
        return "-"
    if n < 0:
        return "unlimited"
    exact = [(n // size, unit) for unit, size in _FORMAT_SIZE_UNITS if n >= size and n % size == 0]
    if exact:
        # The smallest count: 1TB, not 976562500KiB (10**12 is a multiple of 1024 too).
        count, unit = min(exact, key=lambda c: c[0])
        return f"{count}{unit}"
    return f"{n}B"


_FORMAT_SIZE_UNITS = (
    ("TiB", 1024**4),
    ("GiB", 1024**3),
    ("MiB", 1024**2),
    ("KiB", 1024),
    ("TB", 1000**4),
    ("GB", 1000**3),
    ("MB", 1000**2),
    ("KB", 1000),
)

"""The checks of a bus's constructor arguments, shared by both buses: every mistake is a
`SetupError` naming the argument and what was expected, raised before any connection."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._errors import SetupError
from ..topology.model import Topology

# The source document's arguments, which the topology replaces.
REPLACED = ("stream_name", "consumer_group")


def replaced_arguments(kind: str, args: Sequence[object], kwargs: Mapping[str, object]) -> None:
    """Refuse the source document's `(servers, stream_name, consumer_group)` form."""
    replaced = [k for k in REPLACED if k in kwargs]
    if args or replaced:
        given = ", ".join(replaced) if replaced else f"{len(args)} more positional argument(s)"
        raise SetupError(
            f"{kind}: {given}: streams and consumers come from the topology now; pass "
            "topology=<file> and service=<name> instead (servers is the only positional "
            "argument)"
        )


def unknown_arguments(kind: str, kwargs: Iterable[str], known: Iterable[str]) -> None:
    from difflib import get_close_matches

    unknown = sorted(set(kwargs) - set(REPLACED))
    if not unknown:
        return
    names = sorted(known)
    hints = []
    for name in unknown:
        close = get_close_matches(name, names, n=1)
        hints.append(f"`{name}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    raise SetupError(
        f"{kind}: unknown argument(s) {', '.join(hints)}; expected: {', '.join(names)}"
    )


def seconds(name: str, value: object, *, minimum: float = 0.0, allow_equal: bool = False) -> float:
    """`value` as seconds, greater than `minimum` (or equal when `allow_equal`)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise SetupError(f"`{name}` must be a number of seconds, got {value!r}")
    if math.isinf(value):
        raise SetupError(
            f"`{name}` must be a finite number of seconds, got {value!r} (a bound that never "
            "ends would let a stop or a start hang)"
        )
    ok = value >= minimum if allow_equal else value > minimum
    if not ok:
        relation = "at least" if allow_equal else "more than"
        raise SetupError(f"`{name}` must be {relation} {minimum:g} seconds, got {value!r}")
    return float(value)


def count(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SetupError(f"`{name}` must be an integer of at least {minimum}, got {value!r}")
    return value


def topology_argument(kind: str, value: object) -> Topology | str | os.PathLike[str]:
    if isinstance(value, Topology | str | os.PathLike):
        return value
    raise SetupError(
        f"{kind}: `topology` must be a topology file's path or a loaded Topology, "
        f"got {type(value).__name__}"
    )


def service_argument(kind: str, value: object) -> str:
    if isinstance(value, str) and value:
        return value
    raise SetupError(f"{kind}: `service` must be the name of a declared service, got {value!r}")


def servers_argument(value: object) -> str | list[str]:
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, str) and v.strip() for v in value)
    ):
        return list(value)
    raise SetupError(
        "`servers` must be a NATS URL, a comma-separated string of URLs or a list of URLs, "
        f"got {value!r}"
    )


def mapping_argument(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise SetupError(f"`{name}` must be a dict of keyword arguments, got {type(value).__name__}")


def tokens_argument(tokens: Sequence[str]) -> tuple[str, ...]:
    """`tokens` of a publish as a tuple; a bare string is a mistake (it would be split)."""
    if isinstance(tokens, str):
        raise SetupError(
            f"`tokens` must be a list of subject tokens, got the string {tokens!r} "
            f"(write tokens=[{tokens!r}])"
        )
    try:
        return tuple(tokens)
    except TypeError:
        raise SetupError(f"`tokens` must be a list of strings, got {tokens!r}") from None


def incomplete_consumer_text(consumer: str, missing: Sequence[str]) -> str:
    return (
        f"consumer `{consumer}` also takes topic(s) {', '.join(f'`{t}`' for t in missing)}, "
        "which have no handler: the bus reads a consumer once each of its topics has one (a "
        "message of a topic without a handler could only be retried and dead-lettered)"
    )

"""The exception tree of bus_runtime: one root, `BusError`.

Errors in a topology file are objects that know their place (`TopologyError`); loading
reports all of them at once in a `TopologyValidationError`, sorted by line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class BusError(Exception):
    """Root of every error raised by bus_runtime (the original NATS error is `__cause__`)."""


@dataclass(frozen=True, order=True)
class TopologyError(BusError):
    """One problem in a topology file, at its place.

    Attributes:
        file: The file as given by the caller (kept relative when it was given so).
        line: 1-based line of the offending key or value (0 when the file has no lines).
        column: 1-based column.
        path: Dotted key path, e.g. `streams.ORDERS.retention`.
        message: What is wrong, what was expected, and a suggestion where one exists.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: error: {where}{self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


class TopologyValidationError(BusError):
    """A topology file has one or more errors; `errors` holds every one, sorted by line."""

    def __init__(self, errors: Iterable[TopologyError]) -> None:
        self.errors: tuple[TopologyError, ...] = tuple(sorted(set(errors)))
        super().__init__("\n".join(str(e) for e in self.errors))

    def to_json(self) -> str:
        return json.dumps([e.to_dict() for e in self.errors], indent=2)


class SetupError(BusError):
    """Something is declared or called wrong, found before any connection is made."""


class TopicNotDeclaredError(SetupError):
    """A topic that the topology does not declare, or that this service may not use."""


class PayloadValidationError(SetupError):
    """An event's `data` does not satisfy its topic's JSON Schema."""

    def __init__(self, topic: str, message: str, path: Sequence[str | int] = ()) -> None:
        self.topic = topic
        self.path = tuple(path)
        where = "/".join(str(p) for p in self.path) or "(root)"
        super().__init__(f"payload of topic `{topic}` fails its schema at {where}: {message}")

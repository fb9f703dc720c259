"""The exception tree of bus_runtime: one root, `BusError`.

Errors in a topology file are objects that know their place (`TopologyError`); loading
reports all of them at once in a `TopologyValidationError`, sorted by line.
"""

from __future__ import annotations

import json
import operator
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
        severity: `error` (the file is refused) or `warning` (valid, but likely a mistake).
    """

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {where}{self.message}"

    def __reduce__(self) -> tuple[type[TopologyError], tuple[str, int, int, str, str, str]]:
        # An exception pickles through its args, which a dataclass does not set.
        return (
            type(self),
            (self.file, self.line, self.column, self.path, self.message, self.severity),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
        }


# A TopologyError's fields in their order: what its generated `__eq__`, `__hash__` and
# `__lt__` compare, as one tuple made in C (equal keys: equal errors).
error_key = operator.attrgetter("file", "line", "column", "path", "message", "severity")


def unique_sorted(errors: Iterable[TopologyError]) -> list[TopologyError]:
    """Each distinct error once, sorted: `sorted(set(errors))`, without a Python-level hash
    and comparison per error (a generated file has thousands of warnings)."""
    by_fields = {error_key(e): e for e in errors}
    return [by_fields[k] for k in sorted(by_fields)]


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
    """An event cannot be published as it is: its `data` fails the topic's JSON Schema, or
    it is not an `EventPayload` whose fields JSON can carry.

    Attributes:
        topic: The topic published to.
        path: Where in `data` the schema refused it (empty for the root or a non-schema problem).
    """

    def __init__(
        self, topic: str, message: str, path: Sequence[str | int] = (), *, schema: bool = True
    ) -> None:
        self.topic = topic
        self.path = tuple(path)
        if schema:
            where = "/".join(str(p) for p in self.path) or "(root)"
            super().__init__(f"payload of topic `{topic}` fails its schema at {where}: {message}")
        else:
            super().__init__(f"payload of topic `{topic}`: {message}")


class PayloadTooLargeError(PayloadValidationError):
    """An event (envelope plus headers) is larger than the server or its stream accepts.

    Attributes:
        size: The message's size in bytes (body and headers, as the server counts it).
        limit: The limit in bytes.
        limit_name: `max_payload` (the server's) or `streams.<NAME>.max_msg_size`.
    """

    def __init__(self, topic: str, size: int, limit: int, limit_name: str) -> None:
        self.size = size
        self.limit = limit
        self.limit_name = limit_name
        super().__init__(
            topic,
            f"the message is {size} bytes (envelope and headers), more than the {limit} bytes "
            f"of {limit_name}; nothing was sent",
            schema=False,
        )


class ConnectError(BusError):
    """No connection to any of the given NATS servers; the message is one line with the reason."""

    def __init__(self, servers: Sequence[str], reason: str) -> None:
        self.servers = tuple(servers)
        self.reason = reason
        super().__init__(f"cannot connect to {', '.join(self.servers)}: {reason}")


class ReconcileError(BusError):
    """The JetStream API refused or failed a request of plan, apply or import.

    Attributes:
        err_code: The server's `err_code` (e.g. 10065), or None when the failure was not
            an API error (a timeout, no JetStream).
    """

    def __init__(self, message: str, err_code: int | None = None) -> None:
        self.err_code = err_code
        super().__init__(message)


class UnsupportedFeatureError(ReconcileError):
    """The topology sets a field whose feature the connected server does not have.

    Attributes:
        field: The topology field, e.g. `streams.EVENTS.allow_msg_ttl`.
        feature: What the field needs, e.g. `per-message TTL`.
        version: The first server version with the feature, e.g. `2.11.0`.
        server_version: The connected server's version.
    """

    def __init__(self, field: str, feature: str, version: str, server_version: str) -> None:
        self.field = field
        self.feature = feature
        self.version = version
        self.server_version = server_version
        super().__init__(
            f"`{field}` needs {feature}, which nats-server {version} brings; "
            f"the server runs {server_version}"
        )


class ChangesRefusedError(ReconcileError):
    """Apply found replace or destructive steps and `allow_destructive` was not given.

    Nothing was changed. `steps` holds the one-line description of every refused step.
    """

    def __init__(self, steps: Sequence[str]) -> None:
        self.steps = tuple(steps)
        super().__init__(
            f"refusing {len(self.steps)} replace or destructive step(s) without "
            "--allow-destructive; nothing was changed:\n  " + "\n  ".join(self.steps)
        )


class PlanOutdatedError(ChangesRefusedError):
    """A saved plan no longer matches the server it was made against; nothing was changed.

    `steps` holds one line per difference (an asset changed, appeared or went away, or a
    change that would now delete messages).
    """

    def __init__(self, differences: Sequence[str]) -> None:
        self.steps = tuple(differences)
        ReconcileError.__init__(
            self,
            "the server changed since the plan was made; nothing was changed (plan again "
            "and review):\n  " + "\n  ".join(self.steps),
        )


class InvalidEnvelopeError(BusError):
    """A received message body is not an event envelope of the topic it arrived on.

    Attributes:
        reason: A short machine-readable reason (`not-json`, `missing-field`, `schema` ...).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class StartupCheckError(SetupError):
    """The server's streams or consumers differ from what the topology declares.

    Attributes:
        differences: One line per differing stream, consumer or field.
    """

    def __init__(self, service: str, differences: Sequence[str]) -> None:
        self.service = service
        self.differences = tuple(differences)
        lines = "\n  ".join(self.differences)
        super().__init__(
            f"service `{service}`: the server differs from the topology; refusing to start "
            f"(apply the topology with `natstopo apply`, or pass startup_check='warn'):\n  {lines}"
        )


class BusClosedError(BusError):
    """The bus is not started, or is stopping or stopped."""


class PermissionViolationError(BusError):
    """The server refused this connection a publish or a subscription (its permissions).

    Attributes:
        operation: `publish` or `subscribe`.
        subject: The refused subject.
        service: The service the connection runs as, when known.
        queue: The queue group of a refused queue subscription, else None.
    """

    def __init__(
        self, operation: str, subject: str, service: str | None = None, queue: str | None = None
    ) -> None:
        self.operation = operation
        self.subject = subject
        self.service = service
        self.queue = queue
        who = f"service `{service}`" if service else "this connection"
        verb = "publish to" if operation == "publish" else "subscribe to"
        group = f" (queue group `{queue}`)" if queue else ""
        hint = (
            f" (`natstopo auth show --service {service}` lists what it may use; is the "
            "server's authorization rendered from the same topology?)"
            if service
            else ""
        )
        if service and subject.upper().startswith("$JS.API."):
            # natstopo's authorization gives a service JetStream's API under another prefix
            hint = (
                f" (a service reaches JetStream's API under `$NATSTOPO.API` in its own "
                "account: set NATS_JS_API_PREFIX=$NATSTOPO.API, as the env file of "
                f"`natstopo auth render` and the service's Secret do; `natstopo auth show "
                f"--service {service}` lists what it may use)"
            )
        super().__init__(
            f"the server refused {who} to {verb} `{subject}`{group}: its credentials do not "
            f"allow it{hint}"
        )

"""Permission violations reported by the server, as `PermissionViolationError`.

The server answers a refused publish or subscription with an asynchronous
`-ERR 'Permissions Violation for Publish to "<subject>"'` (or `for Subscription to`, with
`using queue "<group>"` for a queue subscription) and keeps the connection open; nats-py
hands it to the `error_cb` as a plain `nats.errors.Error`. The refused message is dropped,
so a request to it only times out: the error callback is where the reason is.
"""

from __future__ import annotations

import re

from .._errors import PermissionViolationError

_VIOLATION = re.compile(
    r'permissions violation for (publish|subscription) to "([^"]*)"(?: using queue "([^"]*)")?',
    re.IGNORECASE,
)


def permission_violation(
    exc: BaseException | str, service: str | None = None
) -> PermissionViolationError | None:
    """The `PermissionViolationError` that `exc` reports, or None when it is something else.

    Args:
        exc: The error given to nats-py's `error_cb` (or its text).
        service: The service the connection runs as, named in the message.
    """
    m = _VIOLATION.search(str(exc))
    if m is None:
        return None
    operation = "publish" if m.group(1).lower() == "publish" else "subscribe"
    err = PermissionViolationError(operation, m.group(2), service, m.group(3))
    if isinstance(exc, BaseException):
        err.__cause__ = exc
    return err

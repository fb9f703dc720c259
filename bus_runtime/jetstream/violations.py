"""Permission violations reported by the server, as `PermissionViolationError`.

The server answers a refused publish or subscription with an asynchronous
`-ERR 'Permissions Violation for Publish to "<subject>"'` (or `for Subscription to`, with
`using queue "<group>"` for a queue subscription) and keeps the connection open; nats-py
hands it to the `error_cb` as a plain `nats.errors.Error`, lower-cased (2.16 lower-cases
every `-ERR` text, so `$JS.API.CONSUMER.INFO.ORDERS.c` arrives as `$js.api.consumer.info.
orders.c`). The refused message is dropped, so a request to it only times out: the error
callback is where the reason is.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from typing import Any

from .._errors import PermissionViolationError

_VIOLATION = re.compile(
    r'permissions violation for (publish|subscription) to "([^"]*)"(?: using queue "([^"]*)")?',
    re.IGNORECASE,
)


def permission_violation(
    exc: BaseException | str, service: str | None = None, subjects: Iterable[str] = ()
) -> PermissionViolationError | None:
    """The `PermissionViolationError` that `exc` reports, or None when it is something else.

    Args:
        exc: The error given to nats-py's `error_cb` (or its text).
        service: The service the connection runs as, named in the message.
        subjects: Subjects the caller may have used (its topics, its consumers' API
            subjects); the one equal to the reported subject but for case is named
            instead, as nats-py lower-cases the server's text.
    """
    m = _VIOLATION.search(str(exc))
    if m is None:
        return None
    operation = "publish" if m.group(1).lower() == "publish" else "subscribe"
    reported = m.group(2)
    subject = next((s for s in subjects if s.lower() == reported.lower()), reported)
    err = PermissionViolationError(operation, subject, service, m.group(3))
    if isinstance(exc, BaseException):
        err.__cause__ = exc
    return err


# Violations seen on connections made by `connect` (whose error callback records them), so
# that a request that only timed out can say the server refused it.
_REFUSED: weakref.WeakKeyDictionary[Any, list[PermissionViolationError]] = (
    weakref.WeakKeyDictionary()
)


def record_violation(client: Any, exc: BaseException) -> bool:
    """Keep `exc` for `client` when it is a permission violation; True when it was one."""
    err = permission_violation(exc)
    if err is None:
        return False
    seen = _REFUSED.setdefault(client, [])
    if len(seen) < 100:
        seen.append(err)
    return True


def refused(client: Any, subject: str) -> PermissionViolationError | None:
    """The server's refusal of a publish to `subject` seen on `client`, or None."""
    wanted = subject.lower()
    for err in _REFUSED.get(client, ()):
        if err.operation == "publish" and err.subject.lower() == wanted:
            return err
    return None

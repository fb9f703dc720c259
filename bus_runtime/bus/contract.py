"""What application code may rely on, whichever bus `create_event_bus` made: the `EventBus`
protocol, the two handler forms, and the `Delivery` a handler may ask for."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .._errors import SetupError
from .envelope import EventPayload

HANDLING: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "bus_runtime_handling", default=None
)
"""The bus whose handler is running here; tasks a handler starts (`asyncio.wait_for`,
`gather`, `create_task`) inherit it, so `stop()` called from any of them knows it is inside
a handler and must not wait for it."""


def stop_outside_handlers(stop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """Run `stop()` in a task of its own that is not inside any handler."""
    context = contextvars.copy_context()
    context.run(HANDLING.set, None)
    return asyncio.get_running_loop().create_task(stop(), context=context)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message, for a handler that takes a third argument.

    Attributes:
        topic: The declared topic name (as the handler's first argument).
        subject: The concrete subject the message was published on (a `*` token filled).
        stream: The stream that stores it.
        consumer: The durable consumer it was delivered through.
        stream_seq: Its sequence in the stream.
        num_delivered: This delivery's number (1 the first time; the last allowed one is
            the consumer's `max_deliver`).
        max_deliver: The consumer's `max_deliver` (-1: unlimited).
        headers: The message's headers (`Nats-Msg-Id`, `traceparent`, ...).
        replayed_from: `<dead-letter stream>:<seq>` when `natstopo dlq replay` sent it again.
        schema_error: Why this consumer's payload schema refuses `data`, when the publisher
            checked it against another version of the schema (a rolling deploy); None when
            `data` satisfies this consumer's schema. A payload that fails the very schema
            its publisher claims is dead-lettered before any handler sees it.
    """

    topic: str
    subject: str
    stream: str
    consumer: str
    stream_seq: int
    num_delivered: int
    max_deliver: int
    headers: Mapping[str, str] = field(default_factory=dict)
    replayed_from: str | None = None
    schema_error: str | None = None

    @property
    def is_last(self) -> bool:
        """True on the last allowed delivery: a failure now goes to the dead letters."""
        return 0 < self.max_deliver <= self.num_delivered


Handler = Callable[[str, EventPayload], Awaitable[None]]
"""`async def handle(topic, payload)`: return = done (ack); raise = failed (retry)."""
ContextHandler = Callable[[str, EventPayload, Delivery], Awaitable[None]]
"""`async def handle(topic, payload, delivery)`: the same, with the `Delivery`."""


def handler_arity(handler: object, topic: str) -> int:
    """2 for `(topic, payload)`, 3 for `(topic, payload, delivery)`.

    Raises:
        SetupError: Not callable, not an async function (a sync handler's side effects
            would run before the bus could tell), or a signature taking neither form.
    """
    if not callable(handler):
        raise SetupError(
            f"handler for topic `{topic}` is a {type(handler).__name__}, not a function: "
            "pass `async def handle(topic, payload)`"
        )
    if not _is_async(handler):
        name = getattr(handler, "__qualname__", type(handler).__name__)
        raise SetupError(
            f"handler `{name}` for topic `{topic}` is not an async function: define it with "
            "`async def` (the bus awaits each call; a plain function would run its side "
            "effects and then fail)"
        )
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        return 2  # a builtin or C callable without a signature: the documented form
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    takes_two = _binds(sig, 2)
    if takes_two and len(positional) < 3:
        return 2
    if _binds(sig, 3):
        return 3
    if takes_two:
        return 2
    raise SetupError(
        f"handler for topic `{topic}` takes {sig}: expected (topic, payload) or "
        "(topic, payload, delivery)"
    )


def _binds(sig: inspect.Signature, n: int) -> bool:
    try:
        sig.bind(*([None] * n))
    except TypeError:
        return False
    return True


def _is_async(handler: object) -> bool:
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target) or asyncio.iscoroutinefunction(target):
        return True
    # an object whose class defines `async def __call__`
    call = inspect.getattr_static(type(target), "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


class EventBus(Protocol):
    """What application code may rely on, whichever bus `create_event_bus` made."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(
        self, topic: str, payload: EventPayload, *, tokens: Sequence[str] = ()
    ) -> bool: ...

    async def publish_many(
        self, topic: str, payloads: Iterable[EventPayload], *, tokens: Sequence[str] = ()
    ) -> list[bool]: ...

    async def subscribe(self, topic: str, handler: Handler | ContextHandler) -> None: ...

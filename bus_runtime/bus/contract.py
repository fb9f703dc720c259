"""What application code may rely on, whichever bus `create_event_bus` made."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from .envelope import EventPayload

Handler = Callable[[str, EventPayload], Awaitable[None]]


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

    async def subscribe(self, topic: str, handler: Handler) -> None: ...

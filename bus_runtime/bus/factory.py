"""`create_event_bus`: the source document's factory, for either bus."""

from __future__ import annotations

from typing import Any, Literal, overload

from .._errors import SetupError
from .contract import EventBus
from .memory import MemoryEventBus
from .nats_bus import NATSEventBus


@overload
def create_event_bus(kind: Literal["nats"] = "nats", **kwargs: Any) -> NATSEventBus: ...
@overload
def create_event_bus(kind: Literal["memory"], **kwargs: Any) -> MemoryEventBus: ...
@overload
def create_event_bus(kind: str, **kwargs: Any) -> EventBus: ...
def create_event_bus(kind: str = "nats", **kwargs: Any) -> EventBus:
    """The source document's factory: `create_event_bus("nats", servers=..., topology=...,
    service=..., environment=...)` or `create_event_bus("memory", topology=..., service=...)`.

    Raises:
        SetupError: Unknown kind, or arguments of the source document's design that the
            topology replaces (`stream_name`, `consumer_group`).
    """
    replaced = [k for k in ("stream_name", "consumer_group") if k in kwargs]
    if replaced:
        raise SetupError(
            f"{', '.join(replaced)}: streams and consumers come from the topology now; pass "
            "topology=<file> and service=<name> instead"
        )
    if kind == "nats":
        return NATSEventBus(**kwargs)
    if kind == "memory":
        return MemoryEventBus(**kwargs)
    raise SetupError(f"unknown event bus kind {kind!r}: use 'nats' or 'memory'")

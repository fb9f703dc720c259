"""bus_runtime: the topology model of natstopo, its validator, and the event bus runtime.

Application code publishes and consumes only what the topology declares. The public API
is what `__all__` lists; everything else lives in `_`-prefixed modules.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    BusClosedError,
    BusError,
    ChangesRefusedError,
    ConnectError,
    InvalidEnvelopeError,
    PayloadValidationError,
    ReconcileError,
    SetupError,
    StartupCheckError,
    TopicNotDeclaredError,
    TopologyError,
    TopologyValidationError,
    UnsupportedFeatureError,
)
from ._loader import check_topology, load_topology, topology_schema
from ._model import Consumer, Service, Stream, Topic, Topology
from ._units import format_duration, format_size, parse_duration, parse_size

if TYPE_CHECKING:
    from ._bus import EventBus, Handler, NATSEventBus, create_event_bus
    from ._connect import ConnectOptions
    from ._envelope import EventPayload, new_event_id
    from ._memory import MemoryBroker, MemoryEventBus
    from ._observe import BusMetrics
    from ._reconcile import (
        ApplyResult,
        Change,
        FieldChange,
        Plan,
        apply_plan,
        plan_changes,
        reconcile,
        reconcile_async,
    )

# What needs the NATS client is imported on first use, so loading or validating a
# topology (the CLI's `validate`, a Pulumi program) does not pay for it.
_LAZY = {
    "EventBus": "_bus",
    "Handler": "_bus",
    "NATSEventBus": "_bus",
    "create_event_bus": "_bus",
    "ConnectOptions": "_connect",
    "EventPayload": "_envelope",
    "new_event_id": "_envelope",
    "MemoryBroker": "_memory",
    "MemoryEventBus": "_memory",
    "BusMetrics": "_observe",
    "ApplyResult": "_reconcile",
    "Change": "_reconcile",
    "FieldChange": "_reconcile",
    "Plan": "_reconcile",
    "apply_plan": "_reconcile",
    "plan_changes": "_reconcile",
    "reconcile": "_reconcile",
    "reconcile_async": "_reconcile",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bus_runtime' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"bus_runtime.{module}"), name)
    globals()[name] = value
    return value


__all__ = [  # noqa: RUF022 - grouped by concern, not sorted
    # errors
    "BusError",
    "PayloadValidationError",
    "SetupError",
    "TopicNotDeclaredError",
    "TopologyError",
    "TopologyValidationError",
    # the topology model
    "Consumer",
    "Service",
    "Stream",
    "Topic",
    "Topology",
    "check_topology",
    "load_topology",
    "topology_schema",
    # units
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
    # the event bus
    "BusClosedError",
    "BusMetrics",
    "EventBus",
    "EventPayload",
    "Handler",
    "InvalidEnvelopeError",
    "MemoryBroker",
    "MemoryEventBus",
    "NATSEventBus",
    "StartupCheckError",
    "create_event_bus",
    "new_event_id",
    # the live reconciler
    "ApplyResult",
    "Change",
    "ChangesRefusedError",
    "ConnectError",
    "ConnectOptions",
    "FieldChange",
    "Plan",
    "ReconcileError",
    "UnsupportedFeatureError",
    "apply_plan",
    "plan_changes",
    "reconcile",
    "reconcile_async",
]

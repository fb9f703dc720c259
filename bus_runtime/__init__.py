"""bus_runtime: the topology model of natstopo, its validator, the reconciler and the event bus.

Application code publishes and consumes only what the topology declares. The public API
is what `__all__` lists, imported from here; the subpackages are internal and may change:

- `topology`: the model, loading and the semantic checks;
- `jetstream`: connecting, the one JetStream API client, the server's defaults and rules;
- `reconcile`: plan, apply, drift and import against a live server;
- `bus`: the event bus (envelope, delivery policy, the NATS bus, the memory bus);
- `cli`: the `natstopo` command line.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    BusClosedError,
    BusError,
    ChangesRefusedError,
    ConnectError,
    InvalidEnvelopeError,
    PayloadTooLargeError,
    PayloadValidationError,
    PermissionViolationError,
    ReconcileError,
    SetupError,
    StartupCheckError,
    TopicNotDeclaredError,
    TopologyError,
    TopologyValidationError,
    UnsupportedFeatureError,
)
from .topology.loader import check_topology, load_topology, topology_schema
from .topology.model import Consumer, Service, Stream, Topic, Topology
from .topology.units import format_duration, format_size, parse_duration, parse_size

if TYPE_CHECKING:
    from .bus.contract import ContextHandler, Delivery, EventBus, Handler
    from .bus.envelope import EventPayload, new_event_id
    from .bus.factory import create_event_bus
    from .bus.memory import MemoryBroker, MemoryEventBus
    from .bus.nats_bus import NATSEventBus
    from .bus.observability import BusMetrics
    from .jetstream.connect import ConnectOptions
    from .reconcile.apply import apply_plan, reconcile, reconcile_async
    from .reconcile.plan import ApplyResult, Change, FieldChange, Plan
    from .reconcile.planner import plan_changes

# What needs the NATS client is imported on first use, so loading or validating a
# topology (the CLI's `validate`, a Pulumi program) does not pay for it.
_LAZY = {
    "ContextHandler": "bus.contract",
    "Delivery": "bus.contract",
    "EventBus": "bus.contract",
    "Handler": "bus.contract",
    "NATSEventBus": "bus.nats_bus",
    "create_event_bus": "bus.factory",
    "ConnectOptions": "jetstream.connect",
    "EventPayload": "bus.envelope",
    "new_event_id": "bus.envelope",
    "MemoryBroker": "bus.memory",
    "MemoryEventBus": "bus.memory",
    "BusMetrics": "bus.observability",
    "ApplyResult": "reconcile.plan",
    "Change": "reconcile.plan",
    "FieldChange": "reconcile.plan",
    "Plan": "reconcile.plan",
    "apply_plan": "reconcile.apply",
    "plan_changes": "reconcile.planner",
    "reconcile": "reconcile.apply",
    "reconcile_async": "reconcile.apply",
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
    "PayloadTooLargeError",
    "PayloadValidationError",
    "PermissionViolationError",
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
    "ContextHandler",
    "Delivery",
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

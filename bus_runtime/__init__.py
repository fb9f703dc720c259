"""bus_runtime: the topology model of natstopo, its validator, and the event bus runtime.

Application code publishes and consumes only what the topology declares. The public API
is what `__all__` lists; everything else lives in `_`-prefixed modules.
"""

from ._errors import (
    BusError,
    PayloadValidationError,
    SetupError,
    TopicNotDeclaredError,
    TopologyError,
    TopologyValidationError,
)
from ._loader import check_topology, load_topology, topology_schema
from ._model import Consumer, Service, Stream, Topic, Topology
from ._units import format_duration, format_size, parse_duration, parse_size

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
]

"""Permission violations reported by the server: see `bus_runtime.jetstream.violations`
(where the connection's error callback meets them); re-exported here with the rest of
the security API."""

from __future__ import annotations

from ..jetstream.violations import permission_violation

__all__ = ["permission_violation"]

"""The `natstopo` command line (also `python -m bus_runtime`), one module per command group.

- `main`: the parser and entry point; the list of command modules;
- `common`: exit codes (0 ok / nothing to do; 1 invalid input or error; 2 changes or
  drift found, or a gate refused), the topology arguments, connecting;
- `validate`, `reconcile` (plan, apply, drift, import), `dlq`.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]

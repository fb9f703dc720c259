"""natstopo's policy pack (see data_safety.py): started by the engine for `--policy-pack infra/policy`."""

from __future__ import annotations

import sys
from pathlib import Path

# The checks plan assets with the direct provisioner's own code (infra/jetstream_assets.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_safety import policy_pack

policy_pack()

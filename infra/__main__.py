"""The natstopo Pulumi program: one stack per topology environment (stack name = environment).

Reads the stack's config, loads and checks the topology, refuses what the cluster cannot
hold or what only a replace could change, then wires the components: the NATS cluster,
the topology's ConfigMap for application pods, and the streams and consumers (through the
reconciler, `direct`, or as NACK resources, `nack`). See docs/infra.md.
"""

from __future__ import annotations

import pulumi

from stack_program import build

build(pulumi.get_stack(), pulumi.get_project())

"""Runs the Pulumi program under `pulumi.runtime.Mocks` and records what it registers.

`run_stack` reads a stack file (`Pulumi.<stack>.yaml`) as the engine would pass it, lets a
test override keys, runs `stack_program.build` and returns every registered resource with
its inputs (integers that the protobuf round trip turned into floats are ints again) and
the stack's outputs, or the `pulumi.RunError` that stopped the program.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

REPO = Path(__file__).resolve().parents[2]
DYNAMIC = "pulumi-python:dynamic:Resource"


# How a secret value reaches the mocks: {SECRET_SIG: SECRET_VALUE_SIG, "value": ...}.
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def normal(value: Any) -> Any:
    if isinstance(value, dict) and SECRET_SIG in value:
        return normal(value.get("value"))
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    protect: bool | None = None


@dataclass
class StackRun:
    resources: list[Registered] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, [r.name for r in found]
        return found[0]

    def kube_objects(self) -> list[dict[str, Any]]:
        """The Kubernetes objects as they would be sent (apiVersion, kind, metadata, ...)."""
        return [
            r.inputs
            for r in self.resources
            if r.typ.startswith("kubernetes:") and r.typ != "pulumi:providers:kubernetes"
        ]


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, run: StackRun, previous: dict[str, Any]) -> None:
        self.run = run
        self.previous = previous

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        inputs = normal(dict(args.inputs))
        if args.typ == DYNAMIC and "generation" in inputs and "identity" in inputs:
            # A credential: its own provider's create (a real password and bcrypt hash; the
            # lowest cost bcrypt takes, to keep the tests fast), as the engine would call it.
            from stack_credentials import CredentialProvider

            made = CredentialProvider().create({**inputs, "cost": 4})
            self.run.resources.append(Registered(args.typ, args.name, dict(made.outs)))
            return made.id, dict(made.outs)
        self.run.resources.append(Registered(args.typ, args.name, inputs))
        return f"{args.name}-id", dict(args.inputs)

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "pulumi:pulumi:readStackOutputs":
            return {
                "name": args.args["name"],
                "outputs": self.previous,
                "secretOutputNames": [],
            }, []
        return {}, []


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The config the engine passes the program: every value a string, objects as JSON."""
    data = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = dict(data.get("config") or {})
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def run_stack(
    stack: str,
    overrides: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
    preview: bool = True,
) -> StackRun:
    """Run the program for `stack` under mocks (call inside a test with a fresh event loop)."""
    from pulumi.runtime.settings import SETTINGS

    import stack_program

    # What pulumi.runtime.test does before each test: no RPC of an earlier run is awaited.
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    run = StackRun()
    pulumi.runtime.set_mocks(
        RecordingMocks(run, previous or {}), project="natstopo", stack=stack, preview=preview
    )
    pulumi.runtime.set_all_config(stack_config(stack, overrides))

    exports: dict[str, Any] = {}
    real_export = pulumi.export

    def export(name: str, value: Any) -> None:
        exports[name] = value
        real_export(name, value)

    async def resolve() -> None:
        for key, value in exports.items():
            run.outputs[key] = normal(await pulumi.Output.from_input(value).future())

    pulumi.export = export  # type: ignore[assignment]
    loop = asyncio.get_event_loop()
    try:
        try:
            stack_program.build(stack, "natstopo")
        except pulumi.RunError as exc:
            run.error = exc
        else:
            loop.run_until_complete(resolve())
        # Let the mocked registrations (the root stack's, at least) finish.
        loop.run_until_complete(pulumi.runtime.stack.wait_for_rpcs())
    finally:
        pulumi.export = real_export  # type: ignore[assignment]
    return run

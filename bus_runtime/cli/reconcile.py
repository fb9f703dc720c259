"""`natstopo plan | apply | drift | import`: the live reconciler on the command line.

Exit codes: 0 nothing to do / in sync / applied; 1 error (one line, no traceback);
2 changes planned, drift found, or apply refused replace/destructive steps (nothing changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nats.aio.client import Client

from .._errors import ChangesRefusedError, ReconcileError
from ..jetstream.connect import add_connect_args, options_from_args
from ..reconcile.apply import apply_plan
from ..reconcile.importer import import_topology
from ..reconcile.plan import Plan
from ..reconcile.planner import plan_changes
from .common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    add_topology_args,
    load_args_topology,
    run_connected,
)


def _print_plan(plan: Plan, fmt: str, *, drift: bool = False) -> None:
    if fmt == "json":
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(plan.to_text(drift=drift))


def cmd_plan(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)
    plan = run_connected(options_from_args(args), lambda nc: plan_changes(nc, topology))
    _print_plan(plan, args.format)
    return EXIT_CHANGES if plan.has_changes else EXIT_OK


def cmd_drift(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)
    plan = run_connected(options_from_args(args), lambda nc: plan_changes(nc, topology))
    _print_plan(plan, args.format, drift=True)
    return EXIT_CHANGES if plan.has_changes else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)

    async def work(nc: Client) -> int:
        plan = await plan_changes(nc, topology)
        if not plan.has_changes:
            print(plan.to_text())
            return EXIT_OK
        try:
            result = await apply_plan(
                nc,
                plan,
                allow_destructive=args.allow_destructive,
                progress=lambda line: print(line, flush=True),
                concurrency=args.concurrency,
            )
        except ChangesRefusedError as exc:
            print(plan.to_text())
            print(f"natstopo apply: {exc}", file=sys.stderr)
            return EXIT_CHANGES
        print(f"Applied {len(result.steps)} change(s) in {result.seconds:.2f}s.")
        return EXIT_OK

    return run_connected(options_from_args(args), work)


def cmd_import(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    source = ",".join(options.servers)
    imported = run_connected(options, lambda nc: import_topology(nc, name=args.name, source=source))
    if args.output:
        try:
            Path(args.output).write_text(imported.text, encoding="utf-8")
        except OSError as exc:
            raise ReconcileError(f"cannot write {args.output}: {exc}") from exc
        print(
            f"wrote {args.output}: topology `{imported.name}`, {imported.streams} streams, "
            f"{imported.consumers} consumers",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(imported.text)
    for line in imported.skipped:
        print(f"natstopo import: left out {line}", file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `plan`, `apply`, `drift` and `import` to the `natstopo` parser."""
    p = sub.add_parser(
        "plan", help="show what apply would change on a live server (exit 2: changes)"
    )
    add_topology_args(p)
    add_connect_args(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "apply", help="converge a live server to the topology (replace/destructive need a flag)"
    )
    add_topology_args(p)
    add_connect_args(p)
    p.add_argument(
        "--allow-destructive",
        action="store_true",
        help="carry out replaces (delete and recreate), deletes and lowered limits",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="streams (each with its consumers) applied at once (default 1: the file's order)",
    )
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("drift", help="compare a live server with the topology (exit 2: drift)")
    add_topology_args(p)
    add_connect_args(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("import", help="write a topology file of a server's streams and consumers")
    add_connect_args(p)
    p.add_argument(
        "-o", "--output", default=None, metavar="FILE", help="write here (default: stdout)"
    )
    p.add_argument(
        "--name", default=None, help="topology name (default: the assets' mark, else `imported`)"
    )
    p.set_defaults(func=cmd_import)


__all__ = ["EXIT_ERROR", "register"]

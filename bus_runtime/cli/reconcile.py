"""`natstopo plan | apply | drift | import`: the live reconciler on the command line.

Exit codes: 0 nothing to do / in sync / applied; 1 error (one line each, no traceback;
`FILE:LINE:COL: error: ...` where the topology is at fault); 2 changes planned, drift
found, apply refused replace/destructive steps, or a saved plan no longer matches the
server (nothing changed).

`natstopo plan -o plan.json` saves the plan with what the server held; `natstopo apply
plan.json` applies exactly that plan, and refuses when the server changed since.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .._errors import ChangesRefusedError, ReconcileError
from ..jetstream.api import JetStreamApi
from ..jetstream.connect import add_connect_args, options_from_args
from ..reconcile.apply import (
    DEFAULT_CONCURRENCY,
    apply_plan,
    check_converged,
    check_saved_plan,
)
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


def _exit_of(plan: Plan) -> int:
    if plan.errors:
        return EXIT_ERROR
    return EXIT_CHANGES if plan.has_changes else EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)
    plan = run_connected(options_from_args(args), lambda api: plan_changes(api, topology))
    _print_plan(plan, args.format)
    if args.output:
        try:
            Path(args.output).write_text(json.dumps(plan.to_saved(), indent=1) + "\n")
        except OSError as exc:
            raise ReconcileError(f"cannot write {args.output}: {exc}") from exc
        print(f"wrote the plan to {args.output}; apply it with `natstopo apply {args.output}`",
              file=sys.stderr)  # fmt: skip
    return _exit_of(plan)


def cmd_drift(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)
    plan = run_connected(options_from_args(args), lambda api: plan_changes(api, topology))
    _print_plan(plan, args.format, drift=True)
    return _exit_of(plan)


def _saved_plan(path: str | None) -> Plan | None:
    """The saved plan in `path`, or None when `path` is a topology file."""
    if path is None or not path.endswith(".json"):
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not a readable JSON plan: the topology loader reports it
    if not isinstance(data, dict) or "natstopo_plan" not in data:
        return None
    try:
        return Plan.from_saved(data)
    except ValueError as exc:
        raise ReconcileError(f"{path}: {exc}") from exc


def cmd_apply(args: argparse.Namespace) -> int:
    saved = _saved_plan(args.file)
    topology = None if saved is not None else load_args_topology(args)

    async def work(api: JetStreamApi) -> int:
        if saved is not None:
            plan = saved
            try:
                await check_saved_plan(api, plan)
            except ChangesRefusedError as exc:
                print(f"natstopo apply: {exc}", file=sys.stderr)
                return EXIT_CHANGES
        else:
            assert topology is not None
            plan = await plan_changes(api, topology)
        if plan.errors:
            for line in plan.errors:
                print(line if ": error: " in line else f"natstopo apply: error: {line}",
                      file=sys.stderr)  # fmt: skip
            return EXIT_ERROR
        if not plan.has_changes:
            print(plan.to_text())
            return EXIT_OK
        try:
            result = await apply_plan(
                api,
                plan,
                allow_destructive=args.allow_destructive,
                progress=lambda line: print(line, flush=True),
                concurrency=args.concurrency,
            )
        except ChangesRefusedError as exc:
            print(plan.to_text())
            print(f"natstopo apply: {exc}", file=sys.stderr)
            return EXIT_CHANGES
        if topology is not None and result.changed:
            await check_converged(api, topology, result)
        print(f"Applied {len(result.steps)} change(s) in {result.seconds:.2f}s.")
        return EXIT_OK

    return run_connected(options_from_args(args), work)


def cmd_import(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    source = ",".join(options.shown_servers)
    imported = run_connected(
        options, lambda api: import_topology(api, name=args.name, source=source)
    )
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
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="PLAN.json",
        help="also save the plan, with what the server holds, for `natstopo apply PLAN.json`",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "apply",
        help="converge a live server to the topology, or apply a saved plan (PLAN.json) "
        "exactly; replace/destructive steps need a flag",
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
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"streams (each with its consumers) applied at once (default {DEFAULT_CONCURRENCY})",
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

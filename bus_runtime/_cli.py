"""The `natstopo` command line (also `python -m bus_runtime`).

Exit codes: 0 ok / nothing to do; 1 invalid input or error; 2 changes or drift found, or
a gate failed. Subcommands live in their own modules and register here; a user-facing
error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ._errors import BusError
from ._loader import check_topology, default_topology_path

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2

# Modules that add subcommands: each has `register(subparsers) -> None` and sets
# `func(args) -> int` on its parsers. Missing ones (not built yet) are skipped.
_SUBCOMMAND_MODULES = (
    "bus_runtime._cli_reconcile",
    "bus_runtime._cli_dlq",
    "bus_runtime._cli_diff",
    "bus_runtime._cli_docs",
)
# Commands whose module is known: only that module is imported (the NATS client costs
# half a second at start-up, which `validate` in a pull-request check should not pay).
_COMMAND_MODULE = {
    "validate": None,
    "plan": "bus_runtime._cli_reconcile",
    "apply": "bus_runtime._cli_reconcile",
    "drift": "bus_runtime._cli_reconcile",
    "import": "bus_runtime._cli_reconcile",
    "dlq": "bus_runtime._cli_dlq",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 (invalid input), not argparse's 2, which means "changes" here."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def add_topology_args(p: argparse.ArgumentParser, *, env: bool = True) -> None:
    """The topology file argument and `--env`, the same for every subcommand."""
    p.add_argument(
        "file",
        nargs="?",
        default=None,
        help="topology file (default: $BUS_TOPOLOGY, else topology/topology.yaml)",
    )
    if env:
        p.add_argument("--env", dest="env", default=None, help="apply this environment's overrides")


def cmd_validate(args: argparse.Namespace) -> int:
    file = args.file or default_topology_path()
    topology, errors = check_topology(file, args.env, all_environments=args.env is None)
    if args.format == "json":
        out: dict[str, object] = {
            "valid": not errors,
            "errors": [e.to_dict() for e in errors],
            "warnings": [w.to_dict() for w in (topology.warnings if topology else ())],
        }
        if topology is not None and not errors:
            out["summary"] = {
                "name": topology.name,
                "environment": topology.environment,
                "streams": len(topology.streams),
                "topics": len(topology.topics),
                "consumers": len(topology.consumers),
                "services": len(topology.services),
                "fingerprint": topology.fingerprint,
            }
        print(json.dumps(out, indent=2))
        return EXIT_ERROR if errors else EXIT_OK
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        n = len(errors)
        print(f"{file}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return EXIT_ERROR
    assert topology is not None
    for w in topology.warnings:
        print(w, file=sys.stderr)
    envs = (
        f"env {topology.environment}"
        if topology.environment
        else (
            f"base and {len(topology.environments)} environments"
            if topology.environments
            else "base"
        )
    )
    print(
        f"{file}: valid: topology `{topology.name}` ({envs}): {topology.summary()}; "
        f"fingerprint {topology.fingerprint}"
    )
    return EXIT_OK


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv`, only the module of the command named there is imported."""
    parser = _Parser(
        prog="natstopo",
        description="Infrastructure as code for NATS JetStream: one topology file for "
        "Pulumi, pull-request review and the runtime.",
    )
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    p = sub.add_parser("validate", help="check a topology file; every error at FILE:LINE:COL")
    add_topology_args(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_validate)
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    modules: tuple[str | None, ...] = _SUBCOMMAND_MODULES
    if command in _COMMAND_MODULE:
        modules = (_COMMAND_MODULE[command],)
    for name in modules:
        if name is None:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
        register = module.register
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except BusError as exc:
        print(f"natstopo {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("natstopo: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`natstopo`'s entry point: the parser built from the command modules, and `main`.

Each module of `COMMAND_MODULES` has `register(subparsers) -> None` and sets
`func(args) -> int` on its parsers. Only the named command's module is imported (the NATS
client costs half a second at start-up, which `validate` in a pull-request check should
not pay). A user-facing error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from .._errors import BusError
from .common import EXIT_ERROR, Parser, error_line

# Every command module, in the order `natstopo --help` lists them.
COMMAND_MODULES = ("validate", "diff", "reconcile", "dlq", "docs", "auth")
_MODULE_OF = {
    "validate": "validate",
    "diff": "diff",
    "plan": "reconcile",
    "apply": "reconcile",
    "drift": "reconcile",
    "import": "reconcile",
    "dlq": "dlq",
    "asyncapi": "docs",
    "graph": "docs",
    "codegen": "docs",
    "auth": "auth",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv`, only the module of the command named there is imported."""
    parser = Parser(
        prog="natstopo",
        description="Infrastructure as code for NATS JetStream: one topology file for "
        "Pulumi, pull-request review and the runtime.",
    )
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    modules: tuple[str, ...] = COMMAND_MODULES
    if command in _MODULE_OF:
        modules = (_MODULE_OF[command],)
    for name in modules:
        # A module missing from this list's package is a broken install: let it raise.
        module = importlib.import_module(f"bus_runtime.cli.{name}")
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
        print(error_line(args.command, exc), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("natstopo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`natstopo diff ... | head`): nothing more to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())

"""What every command shares: exit codes, the parser class, the topology arguments, the
one way a command opens a connection and loads the topology."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

from ..topology.loader import default_topology_path, load_topology
from ..topology.model import Topology

if TYPE_CHECKING:
    # The NATS client is imported by the commands that connect, not by `validate`.
    from ..jetstream.api import JetStreamApi
    from ..jetstream.connect import ConnectOptions

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2


class Parser(argparse.ArgumentParser):
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


def load_args_topology(args: argparse.Namespace) -> Topology:
    """The topology named by the command's file argument and `--env`."""
    return load_topology(args.file or default_topology_path(), args.env)


def error_line(command: str, exc: BaseException) -> str:
    """The one line a failed command prints: `natstopo plan: error: ...`, secrets masked.

    A message that starts with the topology's place (`FILE:LINE:COL: error: ...`) keeps
    that form; a message of several lines (every error of a plan) keeps its lines.
    """
    from ..jetstream.connect import redact

    text = redact(str(exc))
    return f"natstopo {command}: error: {text}"


def run_connected(options: ConnectOptions, work: Callable[[JetStreamApi], Awaitable[T]]) -> T:
    """Connect, run `work` with the JetStream API of the connection (the options' domain or
    prefix), close: one event loop per command."""

    import asyncio

    from ..jetstream.api import JetStreamApi
    from ..jetstream.connect import connect

    async def main() -> T:
        nc = await connect(options)
        try:
            return await work(JetStreamApi(nc, options.api_prefix))
        finally:
            await nc.close()

    return asyncio.run(main())

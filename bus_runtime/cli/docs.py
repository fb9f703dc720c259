"""`natstopo asyncapi`, `natstopo graph`, `natstopo codegen`: documents and code from the model.

Each loads the topology once (an invalid one prints validate's `FILE:LINE:COL` errors and
exits 1), renders, and writes to standard output or `--out FILE`. `codegen --check`
compares instead of writing: exit 0 when FILE is current, 2 when it is out of date.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .._errors import TopologyValidationError
from ..topology.loader import default_topology_path, load_topology
from ..topology.model import Topology
from .common import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, add_topology_args


def _load(args: argparse.Namespace, *, env: str | None) -> Topology | None:
    """The topology, or None after printing every error as validate does."""
    file = args.file or default_topology_path()
    try:
        return load_topology(file, env)
    except TopologyValidationError as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        n = len(exc.errors)
        print(f"{file}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return None


def _warn(command: str, warnings: tuple[str, ...] | list[str]) -> None:
    for w in warnings:
        print(f"natstopo {command}: warning: {w}", file=sys.stderr)


def _emit(command: str, text: str, out: str | None) -> int:
    """Write `text` to `out` (atomically: a failed write leaves the old file) or stdout."""
    if out is None or out == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(out)
    try:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
            os.chmod(tmp, mode)  # mkstemp's 0600 would hide a shared file from its readers
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        print(
            f"natstopo {command}: error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr
        )
        return EXIT_ERROR
    return EXIT_OK


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from ..review.asyncapi import build_asyncapi

    topology = _load(args, env=args.env)
    if topology is None:
        return EXIT_ERROR
    doc = build_asyncapi(topology, servers=args.server, doc_version=args.doc_version)
    _warn("asyncapi", doc.warnings)
    return _emit("asyncapi", doc.to_json() if args.format == "json" else doc.to_yaml(), args.out)


def cmd_graph(args: argparse.Namespace) -> int:
    from ..review.graph import build_graph, render_dot, render_json, render_mermaid

    topology = _load(args, env=args.env)
    if topology is None:
        return EXIT_ERROR
    graph = build_graph(topology)
    renderers = {"mermaid": render_mermaid, "dot": render_dot, "json": render_json}
    return _emit("graph", renderers[args.format](graph), args.out)


def cmd_codegen(args: argparse.Namespace) -> int:
    from ..review.codegen import generate_module

    topology = _load(args, env=None)
    if topology is None:
        return EXIT_ERROR
    if args.check and args.out == "-":
        print(
            "natstopo codegen: error: --check compares with a FILE: give --out FILE",
            file=sys.stderr,
        )
        return EXIT_ERROR
    module = generate_module(topology)
    _warn("codegen", module.warnings)
    if not args.check:
        return _emit("codegen", module.text, args.out)
    try:
        # A checkout with CRLF line endings (git's autocrlf) holds the same module.
        current = Path(args.out).read_text(encoding="utf-8").replace("\r\n", "\n")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as exc:
        print(f"natstopo codegen: error: cannot read {args.out}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if current == module.text:
        print(f"{args.out}: up to date with topology `{topology.name}`")
        return EXIT_OK
    why = "does not exist" if current is None else "is out of date"
    command = " ".join(
        ["natstopo", "codegen", *([args.file] if args.file else []), "--out", args.out]
    )
    print(f"{args.out} {why}: run `{command}`", file=sys.stderr)
    return EXIT_CHANGES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "asyncapi",
        help="write the AsyncAPI 3.0 document of a topology (channels, messages, operations)",
    )
    add_topology_args(p)
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="a server of the document (repeatable), e.g. prod=nats://nats.prod:4222",
    )
    p.add_argument(
        "--doc-version",
        default=None,
        help="info.version of the document (default: the topology's fingerprint)",
    )
    p.add_argument("-o", "--out", default=None, help="write to FILE instead of standard output")
    p.set_defaults(func=cmd_asyncapi)

    p = sub.add_parser(
        "graph",
        help="draw services -> topics -> streams -> consumers -> services (Mermaid, dot, JSON)",
    )
    add_topology_args(p)
    p.add_argument("--format", choices=["mermaid", "dot", "json"], default="mermaid")
    p.add_argument("-o", "--out", default=None, help="write to FILE instead of standard output")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser(
        "codegen",
        help="write a typed Python module of the topics and payload schemas (for mypy)",
        description="Topic names and payload schemas do not vary by environment, so there "
        "is no --env.",
    )
    add_topology_args(p, env=False)
    p.add_argument(
        "--out", required=True, metavar="FILE", help="the module to write (or check); - for stdout"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 2 when FILE differs from what would be written",
    )
    p.set_defaults(func=cmd_codegen)

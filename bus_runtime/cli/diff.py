"""`natstopo diff BASE HEAD`: what a topology change does, for pull-request review.

Exit codes: 0 nothing reaches `--fail-on`; 2 something does; 1 invalid input (with
validate's errors, at `REF:path:line:col` for a version read from git).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from contextlib import ExitStack
from pathlib import Path

from .._errors import TopologyError
from ..jetstream.rules import feature_errors, version_text
from ..review.diff import DEFAULT_FAIL_ON, LEVELS, parse_version, review, settings_locator
from ..review.diff_render import render_github, render_json, render_markdown, render_text
from ..review.sources import open_source
from ..topology.loader import load_every_environment
from ..topology.model import Topology
from ..topology.yaml_source import Locations
from .common import EXIT_CHANGES, EXIT_ERROR, EXIT_OK


def _fail_on(text: str) -> tuple[str, ...]:
    if text.strip() in ("", "none"):
        return ()
    levels = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in levels if x not in LEVELS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown level {bad[0]!r}: use a comma-separated list of {', '.join(LEVELS)}, or none"
        )
    return levels


# Below this size both versions load faster one after the other than with a second process.
_PARALLEL_FROM_BYTES = 256 * 1024

Loaded = tuple[dict[str | None, Topology], list[TopologyError]]


def _load_both(first: Path, second: Path, places: list[Locations]) -> tuple[Loaded, Loaded]:
    """Both versions' models (and `second`'s key places); the first in a forked child when
    the files are large (each version is a full load of every environment, and the machine
    has more than one core)."""
    big = first.stat().st_size + second.stat().st_size >= _PARALLEL_FROM_BYTES
    if not big or not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return load_every_environment(first), load_every_environment(second, places)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: load, send, leave without running the parent's cleanup
        os.close(read_end)
        code = 0
        try:
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(load_every_environment(first), out, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_end)
    second_loaded = load_every_environment(second, places)
    with os.fdopen(read_end, "rb") as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        return load_every_environment(first), second_loaded  # the child failed: do it here
    first_loaded: Loaded = pickle.loads(data)
    return first_loaded, second_loaded


def _relabel(error: TopologyError | str, tmp: str, label: str) -> str:
    text = str(error)
    return label + text[len(tmp) :] if text.startswith(tmp) else text


def cmd_diff(args: argparse.Namespace) -> int:
    version = None
    if args.server_version:
        try:
            version = parse_version(args.server_version)
        except ValueError as exc:
            print(f"natstopo diff: error: --server-version: {exc}", file=sys.stderr)
            return EXIT_ERROR
    with ExitStack() as stack:
        sources = [stack.enter_context(open_source(spec)) for spec in (args.base, args.head)]
        models = []
        failed = False
        places: list[Locations] = []
        both = _load_both(sources[0].path, sources[1].path, places)
        for src, (loaded, errors) in zip(sources, both, strict=True):
            for e in errors:
                print(_relabel(e, str(src.path), src.label), file=sys.stderr)
            failed = failed or bool(errors)
            models.append(loaded)
        if failed:
            print("natstopo diff: error: fix the topology errors above first", file=sys.stderr)
            return EXIT_ERROR
        base, head = models
        if version is not None:
            lacking: list[str] = []
            for topology in head.values():  # an environment inheriting a setting: once
                for text in feature_errors(topology, version, "the target is"):
                    line = _relabel(text, str(sources[1].path), sources[1].label)
                    if line not in lacking:
                        lacking.append(line)
            for line in lacking:
                print(line, file=sys.stderr)
            if lacking:
                print(
                    f"natstopo diff: error: HEAD cannot be deployed to nats-server "
                    f"{version_text(version)} (--server-version); a plan against it would refuse",
                    file=sys.stderr,
                )
                return EXIT_ERROR
        envs: list[str | None] | None = None
        if args.env is not None:
            missing = [side for side, m in (("BASE", base), ("HEAD", head)) if args.env not in m]
            if missing:
                declared = sorted(e for e in head if e is not None)
                print(
                    f"natstopo diff: error: --env {args.env}: not declared in {' and '.join(missing)} "
                    f"(HEAD declares: {', '.join(declared) or 'none'})",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            envs = [args.env]
        result = review(
            base,
            head,
            base_label=args.base,
            head_label=args.head,
            environments=envs,
            server_version=version,
            fail_on=args.fail_on,
            locate=settings_locator(places[0], sources[1].display) if places else None,
            head_file=sources[1].display,
        )
        if args.format == "json":
            print(render_json(result))
        elif args.format == "markdown":
            print(render_markdown(result, head[None]), end="")
        elif args.format == "github":
            print(render_github(result, sources[1].display))
        else:
            print(render_text(result))
    return EXIT_CHANGES if result.gate_failed else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        help="what a topology change does: safe, replace, destructive; compatible or breaking",
        description="Compare two topology versions (files, or REF:path read from git).",
    )
    p.add_argument("base", metavar="BASE", help="the topology before: a file or REF:path")
    p.add_argument("head", metavar="HEAD", help="the topology after: a file or REF:path")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--env", default=None, help="only this environment")
    where.add_argument("--all-envs", action="store_true", help="every environment (the default)")
    p.add_argument(
        "--server-version",
        default=None,
        help="target nats-server (default: the oldest BASE's and HEAD's features allow; a "
        "version HEAD's settings need more than is an error)",
    )
    p.add_argument("--format", choices=["text", "json", "markdown", "github"], default="text")
    p.add_argument(
        "--fail-on",
        type=_fail_on,
        default=DEFAULT_FAIL_ON,
        help=f"comma-separated levels that fail the gate: {', '.join(LEVELS)}, or none "
        f"(default: {','.join(DEFAULT_FAIL_ON)})",
    )
    p.set_defaults(func=cmd_diff)

"""`natstopo validate`: every error of a topology file at its FILE:LINE:COL."""

from __future__ import annotations

import argparse
import json
import sys

from ..topology.loader import check_topology, default_topology_path, gc_paused
from .common import EXIT_ERROR, EXIT_OK, add_topology_args


def cmd_validate(args: argparse.Namespace) -> int:
    # The whole command without the cyclic collector (as the loader): the model and its
    # summary are hundreds of thousands of acyclic objects a collection would only rescan.
    with gc_paused():
        return _validate(args)


def _validate(args: argparse.Namespace) -> int:
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check a topology file; every error at FILE:LINE:COL")
    add_topology_args(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_validate)

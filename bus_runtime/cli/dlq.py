"""`natstopo dlq list | replay | purge`: inspect dead letters, send them back to the consumer
that failed them, delete them."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .._errors import BusError
from ..bus.dead_letters import (
    DeadLetter,
    Selection,
    parse_when,
    purge_dead_letters,
    read_dead_letters,
    replay_dead_letters,
)
from ..jetstream.connect import add_connect_args, connect, options_from_args
from ..topology.model import Topology
from .common import EXIT_ERROR, EXIT_OK, add_topology_args, load_args_topology


def _selection(args: argparse.Namespace, topology: Topology) -> Selection:
    seqs = getattr(args, "seq", None)
    if args.consumer is not None:
        declared = {c.name for c in topology.consumers}
        if args.consumer not in declared:
            raise BusError(
                f"consumer `{args.consumer}` is not declared in topology `{topology.name}`"
            )
    return Selection(
        stream=args.stream,
        origin=args.origin,
        consumer=args.consumer,
        reasons=tuple(args.reason or ()),
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
        seqs=frozenset(seqs) if seqs and not getattr(args, "all", False) else None,
        limit=getattr(args, "limit", None),
    )


def _plural(n: int, word: str = "dead letter") -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def cmd_list(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)

    async def main() -> int:
        selection = _selection(args, topology)
        options = options_from_args(args)
        nc = await connect(options)
        try:
            letters = await read_dead_letters(
                nc, topology, selection=selection, api_prefix=options.api_prefix
            )
        finally:
            await nc.close()
        if args.format == "json":
            print(json.dumps([d.to_dict() for d in letters], indent=2))
        else:
            for d in letters:
                print(d.to_text())
            print(_plural(len(letters)))
        return EXIT_OK

    return asyncio.run(main())


def _positive(text: str) -> int:
    """A count of at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _require_scope(args: argparse.Namespace, action: str) -> bool:
    if args.all and args.seq:
        print(
            f"natstopo dlq {action}: error: --seq and --all exclude each other (--seq: those "
            "dead letters; --all: every one the filters select)",
            file=sys.stderr,
        )
        return False
    if not args.all and not args.seq:
        print(
            f"natstopo dlq {action}: error: give --seq N (repeatable) or --all (with the filters, "
            "every dead letter they select)",
            file=sys.stderr,
        )
        return False
    return True


def cmd_replay(args: argparse.Namespace) -> int:
    if not _require_scope(args, "replay"):
        return EXIT_ERROR
    topology = load_args_topology(args)

    async def main() -> int:
        selection = _selection(args, topology)
        options = options_from_args(args)
        nc = await connect(options)
        try:
            letters = await read_dead_letters(
                nc, topology, selection=selection, api_prefix=options.api_prefix
            )
            if args.seq and not args.all:
                missing = sorted(set(args.seq) - {d.dlq_seq for d in letters})
                if missing:
                    raise BusError(
                        f"no dead letter with sequence {', '.join(map(str, missing))} "
                        "(among those the filters select)"
                    )

            def report(d: DeadLetter, new_seq: int | None, target: str) -> None:
                if new_seq is None:
                    print(
                        f"would replay {d.dlq_stream} #{d.dlq_seq} -> {d.subject} for "
                        f"consumer {target} ({d.reason}, {d.failed_at})",
                        flush=True,
                    )
                else:
                    print(
                        f"replayed {d.dlq_stream} #{d.dlq_seq} -> {d.subject} for consumer "
                        f"{target} ({d.stream} seq {new_seq}){' (kept)' if args.keep else ''}",
                        flush=True,
                    )

            n = await replay_dead_letters(
                nc,
                topology,
                letters,
                keep=args.keep,
                consumer=args.to_consumer,
                rate=args.rate,
                dry_run=args.dry_run,
                on_each=report,
                api_prefix=options.api_prefix,
            )
        finally:
            await nc.close()
        if args.dry_run:
            print(f"{_plural(n)} would be replayed (dry run: nothing sent)")
        else:
            print(f"{_plural(n)} replayed")
        return EXIT_OK

    return asyncio.run(main())


def cmd_purge(args: argparse.Namespace) -> int:
    if not _require_scope(args, "purge"):
        return EXIT_ERROR
    topology = load_args_topology(args)

    async def main() -> int:
        selection = _selection(args, topology)
        options = options_from_args(args)
        nc = await connect(options)
        try:
            n = await purge_dead_letters(
                nc, topology, selection, dry_run=args.dry_run, api_prefix=options.api_prefix
            )
        finally:
            await nc.close()
        if args.dry_run:
            print(f"{_plural(n)} would be deleted (dry run: nothing deleted)")
        else:
            print(f"{_plural(n)} deleted")
        return EXIT_OK

    return asyncio.run(main())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dlq", help="inspect, replay and purge dead letters")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("list", cmd_list, "list dead letters with where and why they failed"),
        (
            "replay",
            cmd_replay,
            "publish dead letters again, for the consumer that failed them only",
        ),
        ("purge", cmd_purge, "delete dead letters"),
    ):
        q = dsub.add_parser(name, help=text)
        add_topology_args(q)
        add_connect_args(q)
        f = q.add_argument_group("which dead letters (each narrows the selection)")
        f.add_argument("--stream", default=None, help="only this dead-letter stream")
        f.add_argument("--origin", default=None, help="only dead letters of this origin stream")
        f.add_argument("--consumer", default=None, help="only those this consumer gave up on")
        f.add_argument(
            "--reason",
            action="append",
            default=None,
            metavar="REASON",
            help="only this reason (handler-failed, schema, not-json, ...; repeatable)",
        )
        f.add_argument(
            "--since",
            default=None,
            metavar="WHEN",
            help="only those dead-lettered at or after WHEN (RFC 3339, or a duration ago: 2h)",
        )
        f.add_argument(
            "--until",
            default=None,
            metavar="WHEN",
            help="only those dead-lettered before WHEN (RFC 3339, or a duration ago)",
        )
        q.set_defaults(func=func)
        if name == "list":
            q.add_argument(
                "--limit", type=_positive, default=None, help="at most N dead letters (N >= 1)"
            )
            q.add_argument("--format", choices=["text", "json"], default="text")
            continue
        q.add_argument(
            "--seq", type=_positive, action="append", default=None, help="dead letter sequence"
        )
        q.add_argument("--all", action="store_true", help="every dead letter the filters select")
        q.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
        if name == "replay":
            q.add_argument(
                "--keep", action="store_true", help="keep the dead letter after replaying"
            )
            q.add_argument(
                "--rate",
                type=float,
                default=None,
                metavar="N",
                help="at most N replays per second (default: as fast as the server takes them)",
            )
            q.add_argument(
                "--to-consumer",
                default=None,
                metavar="NAME",
                help="replay for this consumer of the origin stream instead of the one that "
                "failed (e.g. after a rename)",
            )

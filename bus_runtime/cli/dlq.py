"""`natstopo dlq list | replay`: inspect dead letters and send them back to their stream."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .._errors import BusError
from ..bus.dead_letters import DeadLetter, read_dead_letters, replay_dead_letter
from ..jetstream.connect import add_connect_args, connect, options_from_args
from .common import EXIT_ERROR, EXIT_OK, add_topology_args, load_args_topology


def cmd_list(args: argparse.Namespace) -> int:
    topology = load_args_topology(args)

    async def main() -> list[DeadLetter]:
        nc = await connect(options_from_args(args))
        try:
            return await read_dead_letters(
                nc, topology, stream=args.stream, origin=args.origin, limit=args.limit
            )
        finally:
            await nc.close()

    letters = asyncio.run(main())
    if args.format == "json":
        print(json.dumps([d.to_dict() for d in letters], indent=2))
    else:
        for d in letters:
            print(d.to_text())
        print(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    if not args.all and not args.seq:
        print("natstopo dlq replay: error: give --seq N (repeatable) or --all", file=sys.stderr)
        return EXIT_ERROR
    topology = load_args_topology(args)

    async def main() -> int:
        nc = await connect(options_from_args(args))
        try:
            letters = await read_dead_letters(
                nc,
                topology,
                stream=args.stream,
                origin=args.origin,
                seqs=None if args.all else args.seq,
            )
            if args.seq and not args.all:
                missing = sorted(set(args.seq) - {d.dlq_seq for d in letters})
                if missing:
                    raise BusError(f"no dead letter with sequence {', '.join(map(str, missing))}")
            for d in letters:
                new_seq = await replay_dead_letter(nc, d, keep=args.keep)
                print(
                    f"replayed {d.dlq_stream} #{d.dlq_seq} -> {d.subject} "
                    f"({d.stream} seq {new_seq}){' (kept)' if args.keep else ''}",
                    flush=True,
                )
            return len(letters)
        finally:
            await nc.close()

    n = asyncio.run(main())
    print(f"{n} dead letter{'s' if n != 1 else ''} replayed")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dlq", help="inspect and replay dead letters")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("list", cmd_list, "list dead letters with where and why they failed"),
        ("replay", cmd_replay, "publish dead letters again on their original subject"),
    ):
        q = dsub.add_parser(name, help=text)
        add_topology_args(q)
        add_connect_args(q)
        q.add_argument("--stream", default=None, help="only this dead-letter stream")
        q.add_argument("--origin", default=None, help="only dead letters of this origin stream")
        q.set_defaults(func=func)
        if name == "list":
            q.add_argument("--limit", type=int, default=None, help="at most N dead letters")
            q.add_argument("--format", choices=["text", "json"], default="text")
        else:
            q.add_argument(
                "--seq", type=int, action="append", default=None, help="dead letter sequence"
            )
            q.add_argument("--all", action="store_true", help="every dead letter (in scope)")
            q.add_argument(
                "--keep", action="store_true", help="keep the dead letter after replaying"
            )

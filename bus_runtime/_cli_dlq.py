"""`natstopo dlq list | replay`: inspect dead letters and send them back to their stream.

A dead letter is the original message (body and headers) stored in the origin stream's
`dead_letter` stream under `<prefix>.<origin stream>.<original subject>`, with headers
naming the stream, consumer, sequence, deliveries, reason and error (see
`bus_runtime._bus.dead_letter_headers`). Replay publishes the body again on the original
subject with a new `Nats-Msg-Id` (`<event id>.replay.<dlq stream>.<dlq seq>`: the original
id may still be inside the duplicate window, and a replay run twice stays one message),
then deletes the dead letter unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from ._bus import (
    DLQ_CONSUMER,
    DLQ_DELIVERIES,
    DLQ_ERROR,
    DLQ_FAILED_AT,
    DLQ_HEADERS,
    DLQ_ORIGINAL_MSG_ID,
    DLQ_REASON,
    DLQ_SEQUENCE,
    DLQ_STREAM,
    DLQ_SUBJECT,
)
from ._cli import EXIT_ERROR, EXIT_OK, add_topology_args
from ._connect import add_connect_args, connect, options_from_args
from ._envelope import MSG_ID_HEADER
from ._errors import BusError
from ._loader import default_topology_path, load_topology
from ._model import Topology

REPLAYED_FROM = "Natstopo-Replayed-From"


@dataclass
class DeadLetter:
    """One message of a dead-letter stream.

    Attributes:
        dlq_stream: The dead-letter stream.
        dlq_seq: Its sequence there.
        stream: The origin stream.
        subject: The original subject (where a replay goes).
        seq: Its sequence in the origin stream.
        consumer: The consumer that gave up on it.
        deliveries: Deliveries made before giving up.
        reason: `handler-failed`, `schema`, `not-json`, ...
        error: The handler's exception or the envelope problem.
        failed_at: When it was dead-lettered (RFC 3339).
        event_id: The original `Nats-Msg-Id` (the envelope's event_id).
        headers: Every header as stored.
        data: The original body.
    """

    dlq_stream: str
    dlq_seq: int
    stream: str | None
    subject: str | None
    seq: int | None
    consumer: str | None
    deliveries: int | None
    reason: str | None
    error: str | None
    failed_at: str | None
    event_id: str | None
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        try:
            out["data"] = json.loads(self.data)
        except ValueError:
            out["data"] = self.data.decode("utf-8", "replace")
        return out

    def to_text(self) -> str:
        head = (
            f"{self.dlq_stream} #{self.dlq_seq}  {self.failed_at or '?'}  "
            f"{self.stream or '?'} seq {self.seq or '?'} on {self.subject or '?'}"
        )
        body = self.data.decode("utf-8", "replace")
        if len(body) > 200:
            body = body[:197] + "..."
        return (
            f"{head}\n    consumer {self.consumer or '?'}, {self.deliveries or '?'} deliveries, "
            f"reason {self.reason or '?'}, event {self.event_id or '?'}\n"
            f"    error: {self.error or '?'}\n    body: {body}"
        )


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
    return headers


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _api(nc: Client, subject: str, req: dict[str, Any]) -> dict[str, Any]:
    try:
        msg = await nc.request(subject, json.dumps(req).encode(), timeout=5.0)
    except NoRespondersError as exc:
        raise BusError(f"{subject}: no JetStream answered (is JetStream enabled?)") from exc
    except NatsTimeoutError as exc:
        raise BusError(f"{subject}: no answer in 5s") from exc
    resp: dict[str, Any] = json.loads(msg.data)
    return resp


def dead_letter_streams(topology: Topology, only: str | None = None) -> list[str]:
    """The topology's dead-letter streams (or `only`, which must be one)."""
    names = [s.name for s in topology.streams if s.dead_letter_sources]
    if only is not None:
        if only not in names:
            raise BusError(
                f"`{only}` is not a dead-letter stream of topology `{topology.name}` "
                f"(dead-letter streams: {', '.join(names) or 'none'})"
            )
        return [only]
    return names


async def read_dead_letters(
    nc: Client,
    topology: Topology,
    *,
    stream: str | None = None,
    origin: str | None = None,
    seqs: Iterable[int] | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Dead letters on the server, oldest first per dead-letter stream.

    Args:
        nc: A connection.
        topology: The topology (names the dead-letter streams).
        stream: Only this dead-letter stream.
        origin: Only dead letters of this origin stream.
        seqs: Only these sequences (of the dead-letter stream).
        limit: At most this many.
    """
    wanted = set(seqs) if seqs is not None else None
    out: list[DeadLetter] = []
    for name in dead_letter_streams(topology, stream):
        dl = topology.stream(name)
        info = await _api(nc, f"$JS.API.STREAM.INFO.{name}", {})
        if "error" in info:
            if info["error"].get("err_code") == 10059:  # stream not found
                continue
            raise BusError(f"stream {name}: {info['error'].get('description')}")
        state = info.get("state", {})
        seq, last = int(state.get("first_seq", 0) or 0), int(state.get("last_seq", 0) or 0)
        filt = f"{dl.subject_prefix}.{origin}.>" if origin else ">"
        while seq and seq <= last:
            if limit is not None and len(out) >= limit:
                return out
            resp = await _api(
                nc, f"$JS.API.STREAM.MSG.GET.{name}", {"seq": seq, "next_by_subj": filt}
            )
            if "error" in resp:
                break  # no message at or after seq
            m = resp["message"]
            seq = int(m["seq"]) + 1
            if wanted is not None and int(m["seq"]) not in wanted:
                continue
            headers = _parse_headers(base64.b64decode(m["hdrs"])) if m.get("hdrs") else {}
            out.append(
                DeadLetter(
                    dlq_stream=name,
                    dlq_seq=int(m["seq"]),
                    stream=headers.get(DLQ_STREAM),
                    subject=headers.get(DLQ_SUBJECT),
                    seq=_int(headers.get(DLQ_SEQUENCE)),
                    consumer=headers.get(DLQ_CONSUMER),
                    deliveries=_int(headers.get(DLQ_DELIVERIES)),
                    reason=headers.get(DLQ_REASON),
                    error=headers.get(DLQ_ERROR),
                    failed_at=headers.get(DLQ_FAILED_AT),
                    event_id=headers.get(DLQ_ORIGINAL_MSG_ID),
                    headers=headers,
                    data=base64.b64decode(m["data"]) if m.get("data") else b"",
                )
            )
    return out


async def replay_dead_letter(nc: Client, letter: DeadLetter, *, keep: bool = False) -> int:
    """Publish a dead letter again on its original subject; its new stream sequence.

    Raises:
        BusError: It names no original subject, or the origin stream did not store it.
    """
    if not letter.subject:
        raise BusError(
            f"{letter.dlq_stream} #{letter.dlq_seq} has no {DLQ_SUBJECT} header: not a "
            "dead letter of natstopo, cannot replay"
        )
    headers = {
        k: v
        for k, v in letter.headers.items()
        if k not in DLQ_HEADERS and k != MSG_ID_HEADER and not k.startswith("Nats-")
    }
    base = letter.event_id or f"{letter.stream}:{letter.seq}"
    headers[MSG_ID_HEADER] = f"{base}.replay.{letter.dlq_stream}.{letter.dlq_seq}"
    headers[REPLAYED_FROM] = f"{letter.dlq_stream}:{letter.dlq_seq}"
    js = nc.jetstream()
    try:
        ack = await js.publish(letter.subject, letter.data, headers=headers, timeout=5.0)
    except Exception as exc:
        raise BusError(
            f"replay of {letter.dlq_stream} #{letter.dlq_seq} to {letter.subject} failed: {exc!r}"
        ) from exc
    if not keep:
        resp = await _api(
            nc, f"$JS.API.STREAM.MSG.DELETE.{letter.dlq_stream}", {"seq": letter.dlq_seq}
        )
        if "error" in resp:
            raise BusError(
                f"replayed {letter.dlq_stream} #{letter.dlq_seq} but could not delete it: "
                f"{resp['error'].get('description')}"
            )
    return int(ack.seq)


def _topology(args: argparse.Namespace) -> Topology:
    return load_topology(args.file or default_topology_path(), args.env)


def cmd_list(args: argparse.Namespace) -> int:
    topology = _topology(args)

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
    topology = _topology(args)

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

"""Dead letters on the server: read them, and send them back to their stream.

A dead letter is the original message (body and headers) stored in the origin stream's
`dead_letter` stream under `<prefix>.<origin stream>.<original subject>`, with headers
naming the stream, consumer, sequence, deliveries, reason and error (see
`bus_runtime.bus.delivery.dead_letter_headers`). Replay publishes the body again on the original
subject with a new `Nats-Msg-Id` (`<event id>.replay.<dlq stream>.<dlq seq>`: the original
id may still be inside the duplicate window, and a replay run twice stays one message),
then deletes the dead letter unless `--keep`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client

from .._errors import BusError, ReconcileError
from ..jetstream.api import NO_MESSAGE_FOUND, JetStreamApi
from ..topology.model import Topology
from .delivery import (
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
from .envelope import MSG_ID_HEADER

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
    api = JetStreamApi(nc)
    wanted = set(seqs) if seqs is not None else None
    out: list[DeadLetter] = []
    for name in dead_letter_streams(topology, stream):
        dl = topology.stream(name)
        info = await api.stream_info(name)
        if info is None:
            continue
        state = info.get("state", {})
        seq, last = int(state.get("first_seq", 0) or 0), int(state.get("last_seq", 0) or 0)
        filt = f"{dl.subject_prefix}.{origin}.>" if origin else ">"
        while seq and seq <= last:
            if limit is not None and len(out) >= limit:
                return out
            resp = await api.call(
                f"STREAM.MSG.GET.{name}",
                {"seq": seq, "next_by_subj": filt},
                missing=NO_MESSAGE_FOUND,
            )
            if resp is None:
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
    api = JetStreamApi(nc)
    js = nc.jetstream()
    try:
        ack = await js.publish(letter.subject, letter.data, headers=headers, timeout=5.0)
    except Exception as exc:
        raise BusError(
            f"replay of {letter.dlq_stream} #{letter.dlq_seq} to {letter.subject} failed: {exc!r}"
        ) from exc
    if not keep:
        try:
            await api.call(f"STREAM.MSG.DELETE.{letter.dlq_stream}", {"seq": letter.dlq_seq})
        except ReconcileError as exc:
            raise BusError(
                f"replayed {letter.dlq_stream} #{letter.dlq_seq} but could not delete it: {exc}"
            ) from exc
    return int(ack.seq)

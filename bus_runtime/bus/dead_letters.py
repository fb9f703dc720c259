"""Dead letters on the server: read them, send them back to the consumer that failed them,
purge them.

A dead letter is the original message (body and headers, without the `Nats-*` headers the
server acts on) stored in the origin stream's `dead_letter` stream under
`<prefix>.<origin stream>.<original subject>`, with headers naming the stream, consumer,
sequence, deliveries, reason and error (see `bus_runtime.bus.delivery.dead_letter_headers`).

Replay publishes the body again on the original subject, into the origin stream, with:
- `Natstopo-Replay-For: <consumer>`: the consumer that gave up on it. Every other consumer
  of the stream whose filter takes the subject receives it too (the server routes by
  subject), and its bus acks it without running a handler: on a fan-out stream only the
  consumer that failed handles the event again;
- a new `Nats-Msg-Id`, `<event id>.replay.<dlq stream>.<dlq seq>`: the original id may
  still be inside the duplicate window, and a replay run twice stays one message;
- `Natstopo-Replayed-From: <dlq stream>:<dlq seq>` (the handler sees it as
  `Delivery.replayed_from`).
Then it deletes the dead letter unless `keep`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client

from .._errors import BusError, ReconcileError
from ..jetstream.api import DEFAULT_API_PREFIX, NO_MESSAGE_FOUND, JetStreamApi
from ..topology.model import Topology
from ..topology.units import UnitError, parse_duration
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
    REPLAY_FOR,
    REPLAYED_FROM,
)
from .envelope import MSG_ID_HEADER

__all__ = [
    "REPLAYED_FROM",
    "DeadLetter",
    "Selection",
    "dead_letter_streams",
    "parse_when",
    "purge_dead_letters",
    "read_dead_letters",
    "replay_dead_letter",
    "replay_dead_letters",
]


@dataclass
class DeadLetter:
    """One message of a dead-letter stream.

    Attributes:
        dlq_stream: The dead-letter stream.
        dlq_seq: Its sequence there.
        stream: The origin stream.
        subject: The original subject (where a replay goes).
        seq: Its sequence in the origin stream.
        consumer: The consumer that gave up on it (the one a replay is for).
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

    @property
    def failed_at_time(self) -> datetime.datetime | None:
        if not self.failed_at:
            return None
        try:
            return datetime.datetime.fromisoformat(self.failed_at)
        except ValueError:
            return None


def parse_when(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """A point in time: RFC 3339 (`2026-11-29T08:00:00Z`) or a duration ago (`2h`, `30m`).

    Raises:
        BusError: Neither.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        return now - datetime.timedelta(microseconds=parse_duration(text) / 1000)
    except UnitError:
        pass
    except (OverflowError, ValueError):
        raise BusError(
            f"{text!r} ago is before year 1: give a shorter duration or an RFC 3339 time"
        ) from None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BusError(
            f"{text!r} is not a time: give RFC 3339 (2026-11-29T08:00:00Z) or a duration "
            "ago (30m, 2h, 7d)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command works on (every field narrows; None: no narrowing).

    Attributes:
        stream: Only this dead-letter stream.
        origin: Only dead letters of this origin stream.
        consumer: Only those this consumer gave up on.
        reasons: Only these reasons (`handler-failed`, `schema`, ...).
        since: Only those dead-lettered at or after this time.
        until: Only those dead-lettered before this time.
        seqs: Only these sequences of the dead-letter stream.
        limit: At most this many.
    """

    stream: str | None = None
    origin: str | None = None
    consumer: str | None = None
    reasons: tuple[str, ...] = ()
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    seqs: frozenset[int] | None = None
    limit: int | None = None

    @property
    def narrowed(self) -> bool:
        """True when more than stream and origin narrow it (a purge must go letter by letter)."""
        return bool(
            self.consumer
            or self.reasons
            or self.since
            or self.until
            or self.seqs is not None
            or self.limit is not None
        )

    def takes(self, letter: DeadLetter) -> bool:
        if self.seqs is not None and letter.dlq_seq not in self.seqs:
            return False
        if self.consumer is not None and letter.consumer != self.consumer:
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.since is not None or self.until is not None:
            when = letter.failed_at_time
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True


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
    selection: Selection | None = None,
    api_prefix: str = DEFAULT_API_PREFIX,
) -> list[DeadLetter]:
    """Dead letters on the server, oldest first per dead-letter stream.

    Args:
        nc: A connection.
        api_prefix: The connection's JetStream API prefix (a domain's, or the imports'
            of the dlq-operator's account: `NATS_JS_API_PREFIX`).
        topology: The topology (names the dead-letter streams).
        stream: Only this dead-letter stream.
        origin: Only dead letters of this origin stream.
        seqs: Only these sequences (of the dead-letter stream).
        limit: At most this many.
        selection: Every narrowing at once (its fields win over the arguments above).
    """
    sel = selection or Selection(
        stream=stream,
        origin=origin,
        seqs=frozenset(seqs) if seqs is not None else None,
        limit=limit,
    )
    if sel.origin is not None and sel.origin not in {s.name for s in topology.streams}:
        raise BusError(f"`{sel.origin}` is not a stream of topology `{topology.name}`")
    api = JetStreamApi(nc, api_prefix)
    out: list[DeadLetter] = []
    for name in dead_letter_streams(topology, sel.stream):
        dl = topology.stream(name)
        info = await api.stream_info(name)
        if info is None:
            continue
        state = info.get("state", {})
        seq, last = int(state.get("first_seq", 0) or 0), int(state.get("last_seq", 0) or 0)
        filt = f"{dl.subject_prefix}.{sel.origin}.>" if sel.origin else ">"
        while seq and seq <= last:
            if sel.limit is not None and len(out) >= sel.limit:
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
            if sel.seqs is not None and int(m["seq"]) not in sel.seqs:
                continue
            headers = _parse_headers(base64.b64decode(m["hdrs"])) if m.get("hdrs") else {}
            letter = DeadLetter(
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
            if sel.takes(letter):
                out.append(letter)
    return out


def replay_target(topology: Topology, letter: DeadLetter, to_consumer: str | None = None) -> str:
    """The consumer a replay of `letter` is for: the one that failed it, or `to_consumer`.

    Raises:
        BusError: Not a dead letter of natstopo, or the consumer is not declared for the
            origin stream, or its topics do not take the original subject (nobody would
            handle the replay).
    """
    if not letter.subject or not letter.stream:
        raise BusError(
            f"{letter.dlq_stream} #{letter.dlq_seq} has no {DLQ_SUBJECT} or {DLQ_STREAM} "
            "header: not a dead letter of natstopo, cannot replay"
        )
    name = to_consumer or letter.consumer
    try:
        origin = topology.stream(letter.stream)
    except KeyError:
        raise BusError(
            f"{letter.dlq_stream} #{letter.dlq_seq} comes from stream `{letter.stream}`, which "
            f"topology `{topology.name}` does not declare"
        ) from None
    declared = [c.name for c in origin.consumers]
    if name is None or name not in declared:
        what = f"consumer `{name}`" if name else "no consumer"
        raise BusError(
            f"{letter.dlq_stream} #{letter.dlq_seq} names {what}, which stream `{origin.name}` "
            f"does not declare (consumers: {', '.join(declared) or 'none'}); replay it to "
            "one of them with --to-consumer NAME"
        )
    consumer = origin.consumer(name)
    if consumer.filter_subjects and not any(
        _matches(f, letter.subject) for f in consumer.filter_subjects
    ):
        raise BusError(
            f"consumer `{name}` does not take subject {letter.subject} "
            f"({letter.dlq_stream} #{letter.dlq_seq}): nobody would handle the replay"
        )
    return name


def _matches(pattern: str, subject: str) -> bool:
    from ..topology.subjects import subject_matches

    return subject_matches(pattern, subject)


async def replay_dead_letter(
    nc: Client,
    letter: DeadLetter,
    *,
    keep: bool = False,
    consumer: str | None = None,
    topology: Topology | None = None,
    api_prefix: str = DEFAULT_API_PREFIX,
) -> int:
    """Publish a dead letter again for the consumer that failed it; its new stream sequence.

    Args:
        nc: A connection.
        api_prefix: The connection's JetStream API prefix.
        letter: The dead letter.
        keep: Keep the dead letter (else it is deleted once the origin stream stored the replay).
        consumer: Replay for this consumer instead of the one the dead letter names.
        topology: When given, the target consumer is checked against it (`replay_target`).

    Raises:
        BusError: Not a dead letter of natstopo, the consumer cannot take it, or the origin
            stream did not store it.
    """
    if topology is not None:
        target: str | None = replay_target(topology, letter, consumer)
    else:
        target = consumer or letter.consumer
    if not letter.subject or not target:
        raise BusError(
            f"{letter.dlq_stream} #{letter.dlq_seq} has no {DLQ_SUBJECT} or {DLQ_CONSUMER} "
            "header: not a dead letter of natstopo, cannot replay"
        )
    headers = {
        k: v
        for k, v in letter.headers.items()
        if k not in DLQ_HEADERS and k != MSG_ID_HEADER and not k.lower().startswith("nats-")
    }
    base = letter.event_id or f"{letter.stream}.{letter.seq}"
    headers[MSG_ID_HEADER] = f"{base}.replay.{letter.dlq_stream}.{letter.dlq_seq}"
    headers[REPLAYED_FROM] = f"{letter.dlq_stream}:{letter.dlq_seq}"
    headers[REPLAY_FOR] = target
    api = JetStreamApi(nc, api_prefix)
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


async def replay_dead_letters(
    nc: Client,
    topology: Topology,
    letters: Sequence[DeadLetter],
    *,
    keep: bool = False,
    consumer: str | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    on_each: Callable[[DeadLetter, int | None, str], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    api_prefix: str = DEFAULT_API_PREFIX,
) -> int:
    """Replay `letters` in order, at most `rate` per second; how many were (or would be) sent.

    Every letter's target consumer is checked before the first is sent: one that nobody
    would handle stops the run with nothing sent. `on_each(letter, new_seq, target)` is
    called after each (new_seq None on a dry run).
    """
    if rate is not None and not rate > 0:
        raise BusError(f"--rate must be more than 0 replays per second, got {rate}")
    targets = [replay_target(topology, letter, consumer) for letter in letters]
    interval = 1.0 / rate if rate else 0.0
    for i, (letter, target) in enumerate(zip(letters, targets, strict=True)):
        if interval and i:
            await sleep(interval)
        if dry_run:
            new_seq = None
        else:
            new_seq = await replay_dead_letter(
                nc, letter, keep=keep, consumer=target, api_prefix=api_prefix
            )
        if on_each is not None:
            on_each(letter, new_seq, target)
    return len(letters)


async def purge_dead_letters(
    nc: Client,
    topology: Topology,
    selection: Selection,
    *,
    dry_run: bool = False,
    api_prefix: str = DEFAULT_API_PREFIX,
) -> int:
    """Delete the selected dead letters; how many were (or would be) deleted.

    A selection narrowed only by stream and origin is purged by the server in one request
    per dead-letter stream; any other narrowing deletes letter by letter.
    """
    api = JetStreamApi(nc, api_prefix)
    if not selection.narrowed:
        total = 0
        for name in dead_letter_streams(topology, selection.stream):
            info = await api.stream_info(name)
            if info is None:
                continue
            dl = topology.stream(name)
            if selection.origin:
                body: dict[str, Any] = {"filter": f"{dl.subject_prefix}.{selection.origin}.>"}
                count = len(
                    await read_dead_letters(
                        nc,
                        topology,
                        selection=Selection(stream=name, origin=selection.origin),
                        api_prefix=api_prefix,
                    )
                )
            else:
                body = {}
                count = int(info.get("state", {}).get("messages", 0) or 0)
            if not dry_run and count:
                resp = await api.call(f"STREAM.PURGE.{name}", body)
                count = int((resp or {}).get("purged", count))
            total += count
        return total
    letters = await read_dead_letters(nc, topology, selection=selection, api_prefix=api_prefix)
    if not dry_run:
        for letter in letters:
            await api.call(
                f"STREAM.MSG.DELETE.{letter.dlq_stream}",
                {"seq": letter.dlq_seq},
                missing=NO_MESSAGE_FOUND,
            )
    return len(letters)

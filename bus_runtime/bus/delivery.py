"""The delivery policy both buses share: retry delays, ack-wait heartbeats, dead-letter headers."""

from __future__ import annotations

from ..topology.model import Consumer
from .envelope import MSG_ID_HEADER, now_rfc3339

DEFAULT_ACK_WAIT = 30.0  # the server's default, seconds
DEFAULT_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # NAK delays when no backoff is declared

# Headers of a dead letter (besides the original message's own headers).
DLQ_STREAM = "Natstopo-Stream"
DLQ_CONSUMER = "Natstopo-Consumer"
DLQ_SUBJECT = "Natstopo-Subject"
DLQ_SEQUENCE = "Natstopo-Stream-Seq"
DLQ_DELIVERIES = "Natstopo-Deliveries"
DLQ_REASON = "Natstopo-Reason"
DLQ_ERROR = "Natstopo-Error"
DLQ_FAILED_AT = "Natstopo-Failed-At"
DLQ_ORIGINAL_MSG_ID = "Natstopo-Msg-Id"
# Headers of a replayed dead letter: which consumer it is for, and where it came from.
REPLAY_FOR = "Natstopo-Replay-For"
REPLAYED_FROM = "Natstopo-Replayed-From"
DLQ_HEADERS = (
    DLQ_STREAM,
    DLQ_CONSUMER,
    DLQ_SUBJECT,
    DLQ_SEQUENCE,
    DLQ_DELIVERIES,
    DLQ_REASON,
    DLQ_ERROR,
    DLQ_FAILED_AT,
    DLQ_ORIGINAL_MSG_ID,
)
_MAX_ERROR_HEADER = 1024


_CONTROLS = {c: " " for c in (*range(32), 127)}


def header_safe(text: str, limit: int = _MAX_ERROR_HEADER) -> str:
    """A header value: one line of printable text (control characters are spaces, runs of
    white space one), at most `limit` bytes of UTF-8 (cut at a character, `...` marking
    the cut)."""
    one_line = " ".join(text.translate(_CONTROLS).split())
    raw = one_line.encode("utf-8", "replace")  # a lone surrogate (`\udcff`) is a `?`
    if len(raw) <= limit:
        return raw.decode()
    return raw[: limit - 3].decode("utf-8", "ignore") + "..."


def dead_letter_headers(
    original: dict[str, str] | None,
    *,
    stream: str,
    consumer: str,
    subject: str,
    seq: int,
    stored_ns: int,
    deliveries: int,
    reason: str,
    error: str,
) -> dict[str, str]:
    """The headers of a dead letter: the original ones plus where and why it failed.

    The original's `Nats-*` headers are dropped: the server acts on them (`Nats-TTL`
    would expire the dead letter, `Nats-Rollup` purge its neighbours, `Nats-Expected-*`
    refuse it); its `Nats-Msg-Id` is kept in `Natstopo-Msg-Id`. The dead letter's own
    `Nats-Msg-Id` is `<stream>.<seq>.<stored_ns>.<consumer>`: one dead letter per stream
    message and consumer (two consumers failing one message keep two), stored once if
    dead-lettering runs twice, and a stream replaced under the same name (its sequences
    start again at 1) never collides with its predecessor, whose message was stored at
    another time. Names cannot hold `.`, so the id is unambiguous.
    """
    headers: dict[str, str] = {}
    original_id = None
    for key, value in (original or {}).items():
        if key[:5].lower() == "nats-":
            if key.lower() == "nats-msg-id":
                original_id = value
            continue
        if key != REPLAY_FOR:
            headers[key] = value
    headers.update(
        {
            MSG_ID_HEADER: f"{stream}.{seq}.{stored_ns}.{consumer}",
            DLQ_STREAM: stream,
            DLQ_CONSUMER: consumer,
            DLQ_SUBJECT: subject,
            DLQ_SEQUENCE: str(seq),
            DLQ_DELIVERIES: str(deliveries),
            DLQ_REASON: reason,
            DLQ_ERROR: header_safe(error),
            DLQ_FAILED_AT: now_rfc3339(),
        }
    )
    if original_id:
        headers[DLQ_ORIGINAL_MSG_ID] = original_id
    return headers


def stored_ns_of(reply: str | None) -> int:
    """The stored time (ns) of a delivered JetStream message, read from its ack subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (9 tokens) or
    `$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<r>]`.
    0 when the subject has neither form.
    """
    if not reply:
        return 0
    tokens = reply.split(".")
    index = 7 if len(tokens) == 9 else 9 if len(tokens) >= 11 else -1
    try:
        return int(tokens[index]) if index >= 0 else 0
    except ValueError:
        return 0


def retry_delay(consumer: Consumer, num_delivered: int) -> float:
    """Seconds before redelivery after the `num_delivered`-th delivery failed.

    The consumer's declared backoff (the last value repeats), else DEFAULT_RETRY_DELAYS.
    """
    if consumer.backoff:
        return consumer.backoff[min(num_delivered, len(consumer.backoff)) - 1] / 1e9
    return DEFAULT_RETRY_DELAYS[min(num_delivered, len(DEFAULT_RETRY_DELAYS)) - 1]


def nak_delay(consumer: Consumer, num_delivered: int) -> float:
    """The delay to send with the NAK of the `num_delivered`-th delivery, so that the server
    redelivers after `retry_delay(consumer, num_delivered)`.

    The server does not wait the NAK's delay as such: it dates the message `now - ack_wait
    + delay` and redelivers it once its ack deadline from there passes, which is `ack_wait`
    without a backoff and `backoff[n-1]` with one (where `ack_wait` is `backoff[0]`). So
    with a backoff the delay to send is `backoff[0]` whatever the delivery, and the server's
    own schedule does the rest; sending `backoff[n-1]` waited `2 * backoff[n-1] -
    backoff[0]` (measured on 2.10 and 2.15: [1s, 3s] gave 1 s, 5 s, 5 s).
    """
    if consumer.backoff:
        return consumer.backoff[0] / 1e9
    return retry_delay(consumer, num_delivered)


def handler_timeout(consumer: Consumer) -> float:
    """Seconds one handler call may run (the consumer's `handler_timeout`)."""
    return consumer.handler_timeout / 1e9


def heartbeat_after(consumer: Consumer) -> float:
    """Seconds after which a held message gets an `in_progress` (half its ack deadline)."""
    waits = [consumer.ack_wait / 1e9 if consumer.ack_wait else DEFAULT_ACK_WAIT]
    if consumer.backoff:
        waits.append(min(consumer.backoff) / 1e9)
    return max(0.02, min(waits) / 2)

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


def header_safe(text: str, limit: int = _MAX_ERROR_HEADER) -> str:
    """A header value: one line, at most `limit` characters."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def dead_letter_headers(
    original: dict[str, str] | None,
    *,
    stream: str,
    consumer: str,
    subject: str,
    seq: int,
    deliveries: int,
    reason: str,
    error: str,
) -> dict[str, str]:
    """The headers of a dead letter: the original ones plus where and why it failed.

    `Nats-Msg-Id` becomes `<stream>:<seq>` (one dead letter per stream message, even if
    dead-lettering runs twice); the original id is kept in `Natstopo-Msg-Id`.
    """
    headers = dict(original or {})
    original_id = headers.pop(MSG_ID_HEADER, None)
    headers.update(
        {
            MSG_ID_HEADER: f"{stream}:{seq}",
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


def retry_delay(consumer: Consumer, num_delivered: int) -> float:
    """Seconds before redelivery after the `num_delivered`-th delivery failed.

    The consumer's declared backoff (the last value repeats), else DEFAULT_RETRY_DELAYS.
    """
    if consumer.backoff:
        return consumer.backoff[min(num_delivered, len(consumer.backoff)) - 1] / 1e9
    return DEFAULT_RETRY_DELAYS[min(num_delivered, len(DEFAULT_RETRY_DELAYS)) - 1]


def heartbeat_after(consumer: Consumer) -> float:
    """Seconds after which a held message gets an `in_progress` (half its ack deadline)."""
    waits = [consumer.ack_wait / 1e9 if consumer.ack_wait else DEFAULT_ACK_WAIT]
    if consumer.backoff:
        waits.append(min(consumer.backoff) / 1e9)
    return max(0.02, min(waits) / 2)

"""Publishes and acks written straight into a nats-py connection's outgoing buffer.

`Client.publish` re-validates the subject, rebuilds and re-checks each header and goes
through two coroutines per message; for the bus's own publishes (headers it built and
checked itself) and its acks that is about a third of the client CPU per message. The
outbox writes the same protocol bytes (`HPUB`, `PUB`) into the same buffer, counts them in
the same statistics and wakes the same flusher task, so ordering with nats-py's own writes
is kept. Whenever anything is not the plain case (not connected, reconnecting or draining,
a body over max_payload, a buffer that would need a forced flush, a subject nats-py would
refuse, a nats-py without these internals) it answers False and the caller takes nats-py's
own path, which raises or buffers exactly as before.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from typing import Any

import nats.aio.client as _client_module
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.transport import TcpTransport

_CRLF = b"\r\n"


def _known_client() -> bool:
    """The nats-py release whose internals the outbox was written against and is tested
    on; any other takes nats-py's own paths (slower, never wrong)."""
    try:
        from importlib.metadata import version

        return version("nats-py").startswith(_TESTED_NATS_PY)
    except Exception:
        return False


_TESTED_NATS_PY = "2.16."
_KNOWN_CLIENT = _known_client()
_SUBJECT_INVALID = re.compile(r"[ \t\r\n]")  # as nats-py's publish check
# What the outbox reads and writes of a connection (nats-py 2.16): without one, it is off.
_INTERNALS = (
    "_status",
    "_pending",
    "_pending_data_size",
    "_max_pending_size",
    "_max_payload",
    "_flush_queue",
    "_flusher_task",
    "stats",
)


def header_block(headers: Mapping[str, str]) -> bytes:
    """The header block nats-py writes for `headers` whose keys and values need no cleaning.

    Only for headers the bus built and checked itself (`Nats-Msg-Id` with a checked
    event_id, a generated `traceparent`): nats-py's strip, newline removal and key check
    would change nothing in them.
    """
    if len(headers) == 2:  # Nats-Msg-Id and traceparent: the usual publish
        (k1, v1), (k2, v2) = headers.items()
        return f"NATS/1.0\r\n{k1}: {v1}\r\n{k2}: {v2}\r\n\r\n".encode()
    return ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


# What nats-py's publish accepts as a header name, and how it cleans a value: its own
# rules (nats-py 2.16; the same written out for a release without them).
_NATS_PY_HEADER_KEY: re.Pattern[str] = getattr(
    _client_module, "_HEADER_KEY_RE", re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
)
_VALUE_NEWLINES: dict[int, str] = getattr(
    _client_module, "_HEADER_VALUE_NEWLINES", str.maketrans({"\r": " ", "\n": " "})
)
# What a header line can carry as a name: printable ASCII without the colon (the server
# stores and delivers such names, and nats-py's reader keeps them).
_WIRE_HEADER_KEY = re.compile(r"[!-9;-~]+")


def received_header_block(headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """The header block of headers as a message was delivered with them (a dead letter's
    copy of the original's), and the ones nats-py's own publish would send.

    A name nats-py's publish refuses (`X/Trace`, `A(b)`: a Go client or the server sends
    them) would make the dead letter unsendable, so the block is written here, as the
    message came: names as read, values stripped and without line breaks (as nats-py
    writes them). The dict leaves out what nats-py refuses: it is what a send through
    nats-py's own publish (not the plain case) carries.
    """
    lines = []
    sendable: dict[str, str] = {}
    for key, value in headers.items():
        k = key.strip()
        if not _WIRE_HEADER_KEY.fullmatch(k):
            continue  # cannot be a header line's name (no reader makes such a key)
        v = value.strip().translate(_VALUE_NEWLINES)
        lines.append(f"{k}: {v}\r\n")
        if _NATS_PY_HEADER_KEY.fullmatch(k):
            sendable[k] = v
    return ("NATS/1.0\r\n" + "".join(lines) + "\r\n").encode("utf-8", "replace"), sendable


class Outbox:
    """Writes of the plain case straight into one nats-py connection's buffer."""

    def __init__(self, nc: Client) -> None:
        self._nc: Any = nc
        self._loop = asyncio.get_running_loop()
        self._connected = getattr(Client, "CONNECTED", None)
        self.enabled = (
            _KNOWN_CLIENT
            and self._connected is not None
            and all(hasattr(nc, a) for a in _INTERNALS)
        )
        self._subjects: set[str] = set()  # subjects seen valid

    def _room(self, size: int) -> bool:
        """True when `size` more bytes can be buffered now without nats-py's slow path."""
        nc = self._nc
        if nc._status != self._connected:
            return False
        if nc._max_pending_size > 0 and nc._pending_data_size + size > nc._max_pending_size:
            return False  # nats-py would force a flush (and wait for it)
        task = nc._flusher_task
        return task is not None and not task.done() and nc._flush_queue is not None

    def _append(self, parts: tuple[bytes, ...], size: int, payload_size: int) -> None:
        nc = self._nc
        nc._pending.extend(parts)
        nc._pending_data_size += size
        stats = nc.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += payload_size
        queue = nc._flush_queue
        if queue.empty():  # as nats-py: one wake-up of the flusher per burst of writes
            queue.put_nowait(self._loop.create_future())

    def hpub(self, subject: str, reply: str, hdr: bytes, body: bytes) -> bool:
        """Buffer `HPUB subject reply` with a header block; False: use `Client.publish`."""
        if not self.enabled:
            return False
        n = len(body)
        if n > self._nc._max_payload:
            return False  # nats-py raises MaxPayloadError
        if subject not in self._subjects:
            if not subject or _SUBJECT_INVALID.search(subject):
                return False  # nats-py raises BadSubjectError
            if len(self._subjects) < 10_000:
                self._subjects.add(subject)
        hl = len(hdr)
        head = f"HPUB {subject} {reply} {hl} {hl + n}\r\n".encode()
        size = len(head) + hl + n + 2
        if not self._room(size):
            return False
        self._append((head, hdr, body, _CRLF), size, n)
        return True

    def ack(self, msg: Msg) -> bool:
        """Buffer the ack of a JetStream message (as `Msg.ack`); False: use `Msg.ack`."""
        reply = msg.reply
        if not self.enabled or not reply or msg._ackd:
            return False  # Msg.ack raises NotJSMessageError / MsgAlreadyAckdError
        cmd = f"PUB {reply} 0\r\n\r\n".encode()
        if not self._room(len(cmd)):
            return False
        self._append((cmd,), len(cmd), 0)
        msg._ackd = True
        return True

    def write_now(self) -> bool:
        """Hand everything buffered to the socket now, in order, as the flusher task would
        when it next runs; False (nothing done, the flusher still will) when not the plain
        case: not connected, nothing buffered, not a plain TCP or TLS transport, or a
        socket that is not keeping up (the flusher then waits for it as before).

        For a pull request: the flusher runs only once the task that buffered it yields,
        and a worker whose handlers never suspend yields only when every message it
        received is handled, so the request went out with the last ack and the handlers
        waited a whole round trip for the next messages.
        """
        nc = self._nc
        if not self.enabled or nc._status != self._connected or not nc._pending_data_size:
            return False
        transport = nc._transport
        if type(transport) is not TcpTransport:
            return False
        writer = transport._io_writer
        if writer is None or writer.is_closing() or writer.transport.get_write_buffer_size():
            return False
        try:
            writer.writelines(nc._pending)  # what TcpTransport.writelines does
        except Exception:
            return False  # the flusher writes it and handles the error as before
        nc._pending = []
        nc._pending_data_size = 0
        return True


class DirectDelivery(asyncio.Queue):  # type: ignore[type-arg]
    """A subscription's message queue that hands each message to a synchronous handler at
    once, inside nats-py's read loop, instead of queueing it for the subscription's task
    (a queue put, a task switch and a coroutine per message).

    For handlers that never wait (the publisher's PubAck handler): nothing is ever queued,
    so `join` (drain, unsubscribe) returns at once and the subscription's task waits
    idle until it is cancelled with the subscription. A handler's exception is handed to
    `on_error`, never to the read loop.
    """

    def __init__(
        self,
        sub: Any,
        handler: Callable[[Any], None],
        on_error: Callable[[Any, Exception], None],
        raw: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        super().__init__()
        self._sub = sub
        self._handler = handler
        self._on_error = on_error
        self.raw = raw  # (subject, data) of a message without headers, no Msg built

    def put_nowait(self, item: Any) -> None:
        self._sub._pending_size -= len(item.data)  # as the subscription's task does
        self.take(item)

    def take(self, item: Any) -> None:
        try:
            self._handler(item)
        except Exception as exc:
            self._on_error(item, exc)

    def take_raw(self, sid: int, subject: bytes, data: bytes) -> None:
        try:
            self.raw(subject, data)  # type: ignore[misc]
        except Exception as exc:
            self._on_error(self._sub._conn._build_message(sid, subject, b"", data, None), exc)


def deliver_directly(
    sub: Any,
    handler: Callable[[Any], None],
    on_error: Callable[[Any, Exception], None],
    raw: Callable[[bytes, bytes], None] | None = None,
) -> bool:
    """Make `sub` (a nats-py Subscription) hand its messages to `handler` at once; False
    (nothing changed) when the subscription is not what this nats-py version is known to be.

    `raw(subject, data)`, when given, takes instead of `handler` the messages without
    headers and without a reply that the bus's reader takes (no `Msg` is built for them:
    the publisher's PubAcks); `handler` still gets every other message.
    """
    queue = getattr(sub, "_pending_queue", None)
    if (
        not _KNOWN_CLIENT
        or type(queue) is not asyncio.Queue
        or not hasattr(sub, "_pending_size")
        or queue.qsize()
    ):
        return False
    direct = DirectDelivery(sub, handler, on_error, raw)
    sub._pending_queue = direct
    reader = _DirectReader.of(sub._conn)
    if reader is not None:
        reader.direct[sub._id] = direct
    return True


# -- reading: the messages of directly delivered subscriptions ---------------------------
def _header_name(raw: bytes) -> str | None:
    """The key nats-py's `_parse_header_lines` makes of a header line's name, or None when
    it skips the line (a name that is not ASCII, or holds whitespace)."""
    try:
        key = raw.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    if any(c.isspace() for c in key):
        return None
    return key


_UNSEEN = object()
_header_names: dict[bytes, Any] = {}  # raw name -> its key (None: skipped), as nats-py


def parse_headers(block: bytes) -> dict[str, str] | None:
    """The headers nats-py (2.16, without fast_mail_parser) makes of a message's header
    block that has no inline status (`NATS/1.0 404 ...`): the same keys and values, with
    each name's check done once per name instead of once per message."""
    if len(block) <= 10:
        return None
    out: dict[str, str] = {}
    names = _header_names
    for line in block[10:].split(_CRLF):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = names.get(name, _UNSEEN)
        if key is _UNSEEN:
            key = _header_name(name)
            if len(names) < 1024:
                names[name] = key
        if key is not None:
            out[key] = value.strip().decode("utf-8", "replace")
    return out or None


def _plain_headers_parser() -> bool:
    """True when nats-py parses headers itself (`_parse_header_lines`): with the optional
    fast_mail_parser installed it uses that, and `parse_headers` would not be the same."""
    try:
        import nats.aio.client as client

        return getattr(client, "parse_email", object()) is None
    except Exception:
        return False


# nats-py's MSG and HMSG control lines (nats.protocol.parser), without its `\A`: these are
# matched at a position inside the read buffer, where `\A` never matches.
_MSG_LINE = re.compile(b"MSG\\s+([^\\s]+)\\s+([^\\s]+)\\s+(([^\\s]+)[^\\S\r\n]+)?(\\d+)\r\n")
_HMSG_LINE = re.compile(
    b"HMSG\\s+([^\\s]+)\\s+([^\\s]+)\\s+(([^\\s]+)[^\\S\r\n]+)?([\\d]+)\\s+(\\d+)\r\n"
)
_AWAITING_CONTROL_LINE = 1  # nats.protocol.parser's state between operations


class _DirectReader:
    """The connection's `_process_msg`, and its parser's `parse`, for the messages of
    directly delivered subscriptions.

    nats-py's `_process_msg` (a coroutine, an inner coroutine for the headers, the
    JetStream and flow-control checks of push consumers, a queue put) was about a quarter
    of the client CPU per consumed message. For a subscription made with `deliver_directly`
    and a message without an inline status, `take` does what nats-py does for such a
    message (statistics, the subscription's count and auto-unsubscribe, the headers as
    nats-py parses them, the message built by `_build_message`) and hands it over;
    anything else (status messages, other subscriptions, a message at the slow-consumer
    limit) goes to nats-py's own.

    nats-py's parser deletes each operation from the front of its buffer as it reads it
    (two copies of the rest of a read, 50 messages of a pull request, per message) and
    awaits `_process_msg` for each. `parse` reads the complete MSG and HMSG operations at
    the front of the buffer in place, with nats-py's own patterns, hands each to `take`
    without a coroutine, and deletes what it read once; at anything else (another
    operation, a control line or payload not complete yet, a message `take` does not take)
    the buffer from there goes to nats-py's parser as it is, so the order of operations
    and what nats-py does with each is as before.
    """

    def __init__(self, nc: Any) -> None:
        self._nc = nc
        self._original = nc._process_msg
        self.direct: dict[int, DirectDelivery] = {}
        nc._process_msg = self.process_msg
        ps = nc._ps
        self._ps = ps
        self._original_parse = ps.parse
        if _KNOWN_PARSER and type(ps) is _Parser:
            ps.parse = self.parse
        nc.__dict__["_natstopo_direct_reader"] = self

    @classmethod
    def of(cls, nc: Any) -> _DirectReader | None:
        """The connection's reader (made on first use); None when this nats-py is not the
        one it is written against."""
        reader = nc.__dict__.get("_natstopo_direct_reader")
        if reader is not None:
            return reader  # type: ignore[no-any-return]
        if not (_KNOWN_CLIENT and _PLAIN_HEADERS and isinstance(nc, Client)):
            return None
        if not all(
            hasattr(nc, a) for a in ("_subs", "stats", "_build_message", "_process_msg", "_ps")
        ):
            return None
        return cls(nc)

    def take(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> bool:
        """Hand a message of a directly delivered subscription over, as nats-py would;
        False (nothing done) when it is not that case."""
        direct = self.direct.get(sid)
        if direct is None or (headers and (len(headers) <= 8 or headers[8] == 32)):
            return False  # not ours, or a status (`NATS/1.0 408 ...`)
        nc = self._nc
        sub = nc._subs.get(sid)
        if (
            sub is None
            or sub._pending_queue is not direct
            or sub._jsi is not None
            or sub._future is not None
            or (
                sub._pending_bytes_limit > 0
                and sub._pending_size + len(data) >= sub._pending_bytes_limit
            )
        ):
            return False
        stats = nc.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        if sub._max_msgs > 0 and sub._received >= sub._max_msgs:
            nc._subs.pop(sid, None)
        if headers is None and not reply and direct.raw is not None:
            direct.take_raw(sid, subject, data)
            return True
        msg = nc._build_message(
            sid, subject, reply, data, parse_headers(headers) if headers else None
        )
        if msg:
            direct.take(msg)
        return True

    async def process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        if not self.take(sid, subject, reply, data, headers):
            await self._original(sid, subject, reply, data, headers)

    async def parse(self, data: bytes = b"") -> None:
        ps = self._ps
        if ps.state != _AWAITING_CONTROL_LINE:
            await self._original_parse(data)  # in the middle of an operation it began
            return
        buf = ps.buf
        buf.extend(data)
        end = len(buf)
        pos = 0
        take = self.take
        rest = True  # what is left goes to nats-py's parser (False: wait for more bytes)
        try:
            while pos < end:
                if buf.startswith(b"HMSG", pos):
                    m = _HMSG_LINE.match(buf, pos)
                    if m is None:
                        break
                    subject, sid, _, reply, hsize, size = m.groups()
                elif buf.startswith(b"MSG", pos):
                    m = _MSG_LINE.match(buf, pos)
                    if m is None:
                        break
                    subject, sid, _, reply, size = m.groups()
                    hsize = b"0"
                else:
                    break
                try:
                    sid_n, header_size, needed = int(sid), int(hsize), int(size)
                except ValueError:
                    break  # nats-py's parser raises its ProtocolError for it
                start = m.end()
                stop = start + needed
                if end < stop + 2:
                    rest = False  # the payload is not all here yet: read on
                    break
                if header_size > 0:
                    hdr: bytes | None = bytes(buf[start : start + header_size])
                    payload = bytes(buf[start + header_size : stop])
                else:
                    hdr = None
                    payload = bytes(buf[start:stop])
                pos = stop + 2
                if not take(sid_n, subject, reply or b"", payload, hdr):
                    del buf[:pos]
                    pos = 0
                    await self._original(sid_n, subject, reply or b"", payload, hdr)
                    if ps.buf is not buf or ps.state != _AWAITING_CONTROL_LINE:
                        return  # the connection was reset meanwhile
                    end = len(buf)
        finally:
            if pos:
                del buf[:pos]
        if rest and buf:
            await self._original_parse(b"")


def _known_parser() -> tuple[bool, Any]:
    try:
        from nats.protocol import parser

        ok = (
            parser.AWAITING_CONTROL_LINE == _AWAITING_CONTROL_LINE
            and parser.MSG_RE.pattern == b"\\A" + _MSG_LINE.pattern
            and parser.HMSG_RE.pattern == b"\\A" + _HMSG_LINE.pattern
        )
        return ok, parser.Parser
    except Exception:
        return False, None


_KNOWN_PARSER, _Parser = _known_parser()
_PLAIN_HEADERS = _plain_headers_parser()

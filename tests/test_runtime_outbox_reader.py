"""The bus's own reading of directly delivered subscriptions (`outbox._DirectReader`) gives
handlers what nats-py's `_process_msg` gives them: the same headers for any header block
(compared with nats-py's own parser), and on a real server the same subject, reply, data
and headers as a plain nats-py subscription of the same messages."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus_runtime.bus import outbox
from bus_runtime.bus.outbox import deliver_directly, parse_headers

pytestmark = pytest.mark.skipif(
    not (outbox._KNOWN_CLIENT and outbox._PLAIN_HEADERS),
    reason="the direct reader is off with this nats-py (its own paths are used)",
)


def nats_py_headers(block: bytes) -> dict[str, str] | None:
    coro = Client()._process_headers(block)
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("_process_headers suspended")


BLOCKS = [
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: 01J\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: 01J\r\ntraceparent: 00-ab-cd-01\r\n\r\n",
    b"NATS/1.0\r\nA:B\r\nA: C\r\n\r\n",  # the last one wins
    b"NATS/1.0\r\nA:\tB \r\n\r\n",
    b"NATS/1.0\r\n A : B\r\n\r\n",
    b"NATS/1.0\r\nA B: x\r\nC: y\r\n\r\n",  # a name with a space is skipped
    b"NATS/1.0\r\nA\x1cB: x\r\n\r\n",  # so is one with another whitespace character
    b"NATS/1.0\r\n\xc3\xa4: x\r\nK: \xc3\xa4\xff\r\n\r\n",  # non-ASCII name, bad UTF-8 value
    b"NATS/1.0\r\nno colon\r\nK: a: b\r\n\r\n",
    b"NATS/1.0\r\n: empty name\r\n\r\n",
    b"NATS/1.0\r\nK: v\nw\r\n\r\n",
    b"NATS/1.0\r\nK: v",  # no closing line
    b"XXXX/9.9\r\nK: v\r\n\r\n",  # nats-py does not look at the first line
    b"NATS/1.0XXK: v\r\n\r\n",
]


@pytest.mark.parametrize("block", BLOCKS)
def test_headers_as_nats_py_parses_them(block: bytes) -> None:
    assert parse_headers(block) == nats_py_headers(block)


_line = st.one_of(
    st.binary(max_size=12),
    st.tuples(
        st.sampled_from([b"Nats-Msg-Id", b"traceparent", b"K", b" K ", b"K K", b"\xc3\xa4", b""]),
        st.sampled_from([b":", b": ", b":\t", b""]),
        st.binary(max_size=8),
    ).map(b"".join),
)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(_line, max_size=6), closing=st.booleans())
def test_any_headers_as_nats_py_parses_them(lines: list[bytes], closing: bool) -> None:
    block = b"NATS/1.0\r\n" + b"\r\n".join(lines) + (b"\r\n\r\n" if closing else b"")
    if block[8:9] == b" ":
        return  # an inline status: always nats-py's own path
    assert parse_headers(block) == nats_py_headers(block)


def _fields(msg: Msg) -> tuple[Any, ...]:
    return (msg.subject, msg.reply, msg.data, msg.headers, msg.sid)


@pytest.mark.nats
async def test_direct_delivery_gets_what_a_subscription_gets(nats_server: Any) -> None:
    nc = await nats.connect(nats_server.url)
    pub = await nats.connect(nats_server.url)
    try:
        direct: list[Msg] = []
        plain: asyncio.Queue[Msg] = asyncio.Queue()

        async def never(msg: Msg) -> None:
            raise AssertionError("a directly delivered message reached the callback")

        sub = await nc.subscribe("t.>", cb=never)
        assert deliver_directly(sub, direct.append, lambda m, e: None)
        assert nc.__dict__.get("_natstopo_direct_reader") is not None

        async def keep(msg: Msg) -> None:
            await plain.put(msg)

        other = await nc.subscribe("t.>", cb=keep)  # nats-py's own path, same connection
        await nc.flush()  # both subscriptions are on the server before anything is sent
        sent = [
            ("t.a", "", b"body", None),
            ("t.b", "r.1", b"", {"K": "v"}),
            ("t.c", "r.2", b"x" * 3000, {"Nats-Msg-Id": "01J", "traceparent": "00-a-b-01"}),
            ("t.d", "", b"\xff\x00", {"K": " spaced ", "L": "\u00e4"}),
        ]
        for subject, reply, data, headers in sent:
            await pub.publish(subject, data, reply=reply, headers=headers)
        await pub.flush()
        # (30 s only bounds a failure: once in a loaded full run 5 s did not suffice)
        theirs = [await asyncio.wait_for(plain.get(), 30) for _ in sent]
        await nc.flush()
        assert [_fields(m)[:4] for m in direct] == [_fields(m)[:4] for m in theirs]
        assert {m.sid for m in direct} == {sub._id}
        assert nc.stats["in_msgs"] == 2 * len(sent)
        assert sub._received == len(sent) and sub._pending_size == 0
        await other.unsubscribe()

        # A status message (`NATS/1.0 503`: no responders) takes nats-py's own path.
        status = await nc.subscribe("s.>", cb=never)
        assert deliver_directly(status, direct.append, lambda m, e: None)
        direct.clear()
        await nc.publish("nobody.listens", b"", reply="s.1", headers={"K": "v"})
        await nc.flush()
        async with asyncio.timeout(30):  # the server's 503 for the request without responder
            while not direct:  # noqa: ASYNC110 - delivered by nats-py's path, polled until there
                await asyncio.sleep(0.01)
        assert [m.headers.get("Status") if m.headers else None for m in direct] == ["503"]
    finally:
        await pub.close()
        await nc.close()


# -- the parser: the bus's in-place reading of MSG and HMSG against nats-py's own ----------
class _Recorder:
    """The part of a nats-py Client its protocol parser calls, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def _process_msg(self, *args: Any) -> None:
        self.calls.append(("msg", *args))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: Any) -> None:
        self.calls.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.calls.append(("err", err))


def _stream(ops: list[int], seed: int) -> bytes:
    import random

    rnd = random.Random(seed)
    out = b""
    for i, op in enumerate(ops):
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
        if op == 0:
            out += b"MSG s.%d %d %d\r\n%s\r\n" % (i, 2 + i % 3, len(body), body)
        elif op == 1:
            out += b"MSG s.%d %d r.%d %d\r\n%s\r\n" % (i, 2 + i % 3, i, len(body), body)
        elif op == 2:
            hdr = b"NATS/1.0\r\nK: %d\r\n\r\n" % i
            out += b"HMSG s.%d %d $JS.ACK.x.%d %d %d\r\n%s%s\r\n" % (
                i, 2 + i % 3, i, len(hdr), len(hdr) + len(body), hdr, body
            )  # fmt: skip
        elif op == 3:
            status = b"NATS/1.0 408 Request Timeout\r\n\r\n"
            out += b"HMSG s.%d 3 %d %d\r\n%s\r\n" % (i, len(status), len(status), status)
        elif op == 4:
            out += b"PING\r\n"
        elif op == 5:
            out += b"PONG\r\n"
        elif op == 6:
            out += b"+OK\r\n"
        elif op == 7:
            out += b'INFO {"server_id": "x%d"}\r\n' % i
        else:
            # No header bytes (servers never send this: a header block starts with
            # NATS/1.0). nats-py's HMSG pattern lets the blank between the two sizes run
            # across the line end, so a payload of digits right after such a line is read
            # as the line's sizes or not depending on where the reads are cut: the payload
            # here starts with a letter, as every real header block does.
            body = b"x" + body
            out += b"HMSG s.%d 2 0 %d\r\n%s\r\n" % (i, len(body), body)
    return out


def _run(coro: Any) -> None:
    loop = asyncio.new_event_loop()  # a loop of its own: the tests' loop is left alone
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


async def _feed(parser: Any, data: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        await parser.parse(data[last:cut])
        last = cut


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(st.integers(0, 8), max_size=25),
    seed=st.integers(0, 1000),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    taken=st.sets(st.integers(2, 4)),
)
def test_parse_reads_what_nats_py_reads(
    ops: list[int], seed: int, cuts: list[int], taken: set[int]
) -> None:
    from nats.protocol.parser import Parser

    data = _stream(ops, seed)

    theirs = _Recorder()
    _run(_feed(Parser(theirs), data, cuts))

    ours = _Recorder()
    ours._ps = Parser(ours)  # type: ignore[attr-defined]
    reader = outbox._DirectReader(ours)
    assert ours._ps.parse == reader.parse  # type: ignore[attr-defined]

    def take(sid: int, *args: Any) -> bool:  # the sids of directly delivered subscriptions
        if sid not in taken or (args[3] and args[3][8:9] == b" "):
            return False
        ours.calls.append(("msg", sid, *args))
        return True

    reader.take = take  # type: ignore[method-assign]
    _run(_feed(ours._ps, data, cuts))  # type: ignore[attr-defined]
    assert ours.calls == theirs.calls
    assert bytes(ours._ps.buf) == b""  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [
        b"MSG s x 3\r\nabc\r\n",  # a sid that is not a number
        b"HMSG s 1 r 99999999999999999999x 1\r\n",
        b"BOGUS\r\n",
    ],
)
def test_parse_refuses_what_nats_py_refuses(data: bytes) -> None:
    from nats.errors import ProtocolError
    from nats.protocol.parser import Parser

    with pytest.raises(ProtocolError):
        _run(Parser(_Recorder()).parse(data))
    ours = _Recorder()
    ours._ps = Parser(ours)  # type: ignore[attr-defined]
    outbox._DirectReader(ours)
    with pytest.raises(ProtocolError):
        _run(ours._ps.parse(data))  # type: ignore[attr-defined]

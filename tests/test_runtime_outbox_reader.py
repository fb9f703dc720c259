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
        theirs = [await asyncio.wait_for(plain.get(), 5) for _ in sent]
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
        for _ in range(50):
            if direct:
                break
            await asyncio.sleep(0.02)
        assert [m.headers.get("Status") if m.headers else None for m in direct] in ([], ["503"])
    finally:
        await pub.close()
        await nc.close()

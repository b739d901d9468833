"""The pure parts of the streaming server: SPDY and WebSocket framing, tokens,
resize events, Kubernetes Status objects, the HTTP request head."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import zlib

import pytest
from sycri.streaming import spdy, websocket
from sycri.streaming.channel import (
    Inbox,
    TerminalSize,
    parse_resizes,
    status_exit,
    status_success,
)
from sycri.streaming.tokens import ExecRequest, TokenCache
from sycri.streaming.upgrade import BadRequest, negotiate, parse_head

# sha256 of the 1423-byte table in moby/spdystream spdy/dictionary.go (SPDY/3 draft).
SPDY_DICTIONARY_SHA256 = "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"


def feed(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def read_one(read_frame, data: bytes):
    async def go():
        return await read_frame(feed(data))

    return asyncio.run(go())


def test_spdy_dictionary_is_the_spec_table():
    assert len(spdy.DICTIONARY) == 1423
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == SPDY_DICTIONARY_SHA256


def test_spdy_header_blocks_share_one_zlib_stream():
    client, server = spdy.HeaderCodec(), spdy.HeaderCodec()
    blocks = [
        {"streamtype": "error"},
        {"streamtype": "data", "port": "8080", "requestid": "0"},
        {"streamtype": "data", "port": "8080", "requestid": "1"},
    ]
    wire = [client.compress(b) for b in blocks]
    assert [server.decompress(w) for w in wire] == blocks
    # Later blocks reuse the history: the repeat compresses to far fewer bytes.
    assert len(wire[2]) < len(wire[1])


def test_spdy_headers_decode_independent_zlib_with_dictionary():
    raw = struct.pack(">I", 1) + struct.pack(">I", 10) + b"streamtype" + struct.pack(">I", 5)
    raw += b"stdin"
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    wire = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert spdy.HeaderCodec().decompress(wire) == {"streamtype": "stdin"}


def test_spdy_truncated_header_block_is_a_protocol_error():
    with pytest.raises(spdy.ProtocolError):
        spdy.decode_headers(struct.pack(">II", 2, 50) + b"short")


def test_spdy_frames_round_trip():
    codec = spdy.HeaderCodec()
    wire = spdy.syn_stream(codec, 3, {"streamtype": "stdout"}) + spdy.data_frame(3, b"hi", True)
    wire += spdy.ping(7)

    async def read_all():
        reader = feed(wire)
        return [await spdy.read_frame(reader) for _ in range(4)]

    syn, data, ping, end = asyncio.run(read_all())
    assert syn.control and syn.kind == spdy.SYN_STREAM
    assert struct.unpack_from(">I", syn.payload)[0] == 3
    assert spdy.HeaderCodec().decompress(syn.payload[10:]) == {"streamtype": "stdout"}
    assert not data.control and data.stream_id == 3 and data.payload == b"hi"
    assert data.flags & spdy.FLAG_FIN
    assert ping.kind == spdy.PING and ping.payload == struct.pack(">I", 7)
    assert end is None


@pytest.mark.parametrize(
    "wire",
    [
        struct.pack(">HHI", 0x8002, 1, 0),  # SPDY/2
        struct.pack(">HHI", 0x8003, 1, 1 << 23),  # an absurd control frame
        struct.pack(">II", 1, 100) + b"x",  # cut inside a data frame
        b"\x80\x03",  # cut inside a header
    ],
)
def test_spdy_rejects_bad_frames(wire):
    with pytest.raises(spdy.ProtocolError):
        read_one(spdy.read_frame, wire)


def test_websocket_accept_key_rfc6455_example():
    assert websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_websocket_reads_masked_client_frame_rfc6455_example():
    wire = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    frame = read_one(websocket.read_frame, wire)
    assert frame == websocket.WsFrame(True, websocket.OP_TEXT, b"Hello")


def test_websocket_rejects_unmasked_client_frames():
    with pytest.raises(websocket.ProtocolError, match="masked"):
        read_one(websocket.read_frame, bytes([0x82, 0x01, 0x00]))


@pytest.mark.parametrize("n,head", [(125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_websocket_server_frame_lengths(n, head):
    frame = websocket.encode_frame(websocket.OP_BINARY, b"a" * n)
    assert len(frame) == n + head
    assert frame[0] == 0x82 and not frame[1] & 0x80


def test_websocket_offered_protocols_keep_client_order():
    offered = websocket.offered_protocols(["v5.channel.k8s.io, v4.channel.k8s.io", "x"])
    assert offered == ["v5.channel.k8s.io", "v4.channel.k8s.io", "x"]
    assert negotiate(offered, ("v4.channel.k8s.io", "v5.channel.k8s.io")) == "v5.channel.k8s.io"
    assert negotiate(["v1.channel.k8s.io"], ("v4.channel.k8s.io",)) is None


def test_tokens_are_single_use_and_expire():
    now = [100.0]
    cache: TokenCache[ExecRequest] = TokenCache(ttl=5, clock=lambda: now[0])
    req = ExecRequest("c", ("sh",))
    a, b = cache.issue(req), cache.issue(req)
    assert a != b and len(a) >= 32
    assert cache.take(a) == req
    assert cache.take(a) is None  # used
    now[0] += 5
    assert cache.take(b) is None  # expired
    assert cache.take("made-up") is None


def test_resize_stream_parsing():
    sizes, rest = parse_resizes(b'{"Width":80,"Height":24}{"Width":100,"Height":30}{"Wid')
    assert sizes == [TerminalSize(80, 24), TerminalSize(100, 30)]
    sizes, rest = parse_resizes(rest + b'th":1,"Height":2}\n')
    assert sizes == [TerminalSize(1, 2)] and rest == b""
    sizes, _ = parse_resizes(b'{"Width":-1,"Height":5}["x"]{"Width":"a","Height":1}')
    assert sizes == []


def test_exit_status_is_what_client_go_parses():
    status = status_exit(3, ("sh", "-c", "exit 3"))
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert json.loads(json.dumps(status_success())) == {"metadata": {}, "status": "Success"}


def test_inbox_eof_and_back_pressure():
    async def go():
        box = Inbox()
        for i in range(64):
            await box.put(bytes([i]))
        blocked = asyncio.ensure_future(box.put(b"more"))
        await asyncio.sleep(0.01)
        assert not blocked.done()  # full: the connection's reader waits
        assert await box.read() == b"\x00"
        await asyncio.wait_for(blocked, 1)
        box.close()
        got = [await box.read() for _ in range(64)]
        return got, await box.read(), await box.read()

    got, end, again = asyncio.run(go())
    assert got[-1] == b"more" and end == b"" and again == b""


def test_request_head_parsing():
    req = parse_head(
        b"POST /exec/tok?x=1 HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        b"X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
    )
    assert req.path == "/exec/tok" and req.query == {"x": ["1"]}
    assert req.header_list("x-stream-protocol-version") == [
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
    ]
    assert req.tokens("upgrade") == {"spdy/3.1"}
    for bad in (b"GARBAGE", b"GET / HTTP/1.1\r\nno colon here"):
        with pytest.raises(BadRequest):
            parse_head(bad)

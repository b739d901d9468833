"""SPDY/3.1 framing as kubectl, kubelet and client-go's spdystream speak it.

The pure part (frame codec, header blocks, the zlib dictionary) sits at the top; the
:class:`Connection` below runs one upgraded HTTP connection: it answers every stream
the client opens with SYN_REPLY, feeds DATA into per-stream inboxes, echoes PINGs and
stops at GOAWAY or EOF. Like spdystream, it does not enforce flow-control windows
(WINDOW_UPDATE is accepted and ignored); TCP back-pressure does that job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sycri.streaming.channel import LINGER, Inbox, send_frame

log = logging.getLogger("sycri.streaming.spdy")

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5
MAX_FRAME = 1 << 24  # the 24-bit length field's limit
MAX_CONTROL = 1 << 20  # header blocks bigger than this are an attack, not a request
DATA_CHUNK = 128 * 1024

# The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1): 4-byte
# length-prefixed words, then a raw tail. Kept in this form instead of a hex table.
_HEAD_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status"
)
_TAIL_WORDS = "version HTTP/1.1 url public set-cookie keep-alive origin"
_WORDS = (*_HEAD_WORDS.split(), "200 OK", *_TAIL_WORDS.split())
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
    "charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


DICTIONARY = _dictionary()


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3; the connection ends."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``control`` frames carry ``kind``; DATA frames a ``stream_id``."""

    control: bool
    kind: int  # control frame type; 0 for DATA
    flags: int
    payload: bytes
    stream_id: int = 0  # DATA frames only


def encode_headers(headers: dict[str, str]) -> bytes:
    """An uncompressed SPDY/3 name/value block (names lower-cased, as the spec demands)."""
    parts = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n, v = name.lower().encode(), value.encode()
        parts += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(parts)


def decode_headers(block: bytes) -> dict[str, str]:
    """Parse an uncompressed name/value block; multiple values keep their NUL separators."""
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        off, out = 4, {}
        for _ in range(count):
            (nlen,) = struct.unpack_from(">I", block, off)
            name = block[off + 4 : off + 4 + nlen]
            off += 4 + nlen
            (vlen,) = struct.unpack_from(">I", block, off)
            value = block[off + 4 : off + 4 + vlen]
            off += 4 + vlen
            if len(name) != nlen or len(value) != vlen:
                raise ProtocolError("truncated header block")
            out[name.decode("latin-1").lower()] = value.decode("latin-1")
        return out
    except struct.error:
        raise ProtocolError("truncated header block") from None


class HeaderCodec:
    """One direction's zlib stream: SPDY compresses all header blocks of a connection
    as one deflate stream, sync-flushed after each block."""

    def __init__(self) -> None:
        self._out = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._in = zlib.decompressobj(zdict=DICTIONARY)

    def compress(self, headers: dict[str, str]) -> bytes:
        return self._out.compress(encode_headers(headers)) + self._out.flush(zlib.Z_SYNC_FLUSH)

    def decompress(self, data: bytes) -> dict[str, str]:
        try:
            raw = self._in.decompress(data, MAX_CONTROL)
        except zlib.error as exc:
            raise ProtocolError(f"bad header compression: {exc}") from None
        if self._in.unconsumed_tail:
            raise ProtocolError("header block too large")
        return decode_headers(raw)


def control_frame(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    flags = FLAG_FIN if fin else 0
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(data)) + data


def syn_stream(
    codec: HeaderCodec, stream_id: int, headers: dict[str, str], fin: bool = False
) -> bytes:
    body = struct.pack(">IIH", stream_id, 0, 0) + codec.compress(headers)
    return control_frame(SYN_STREAM, FLAG_FIN if fin else 0, body)


def syn_reply(
    codec: HeaderCodec, stream_id: int, headers: dict[str, str], fin: bool = False
) -> bytes:
    body = struct.pack(">I", stream_id) + codec.compress(headers)
    return control_frame(SYN_REPLY, FLAG_FIN if fin else 0, body)


def rst_stream(stream_id: int, status: int) -> bytes:
    return control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def ping(ping_id: int) -> bytes:
    return control_frame(PING, 0, struct.pack(">I", ping_id))


def goaway(last_stream: int, status: int = 0) -> bytes:
    return control_frame(GOAWAY, 0, struct.pack(">II", last_stream, status))


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """The next frame, or None at a clean EOF between frames."""
    try:
        head = await reader.readexactly(8)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame header") from None
    word, flags_len = struct.unpack(">II", head)
    flags, length = flags_len >> 24, flags_len & 0xFFFFFF
    control = bool(word & 0x80000000)
    if control:
        version, kind = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")
        if length > MAX_CONTROL:
            raise ProtocolError(f"control frame of {length} bytes is too large")
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame") from None
    if control:
        return Frame(True, kind, flags, payload)
    return Frame(False, 0, flags, payload, stream_id=word & 0x7FFFFFFF)


class Stream:
    """One SPDY stream as the server sees it: headers, an inbox, and a way to write."""

    def __init__(self, conn: Connection, stream_id: int, headers: dict[str, str]) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.inbox = Inbox()
        self.closed = False  # we sent FIN
        self.reset = False

    async def write(self, data: bytes) -> None:
        if self.closed or self.reset:
            return
        for i in range(0, len(data), DATA_CHUNK):
            await self.conn.send(data_frame(self.id, data[i : i + DATA_CHUNK]))

    async def close(self) -> None:
        """Half-close our side (an empty DATA frame with FIN)."""
        if not self.closed and not self.reset:
            self.closed = True
            await self.conn.send(data_frame(self.id, b"", fin=True))


class Connection:
    """The server side of one SPDY/3.1 session over an upgraded HTTP connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_stream: Callable[[Stream], Awaitable[None] | None],
        touch: Callable[[], None] = lambda: None,
    ) -> None:
        self.reader, self.writer = reader, writer
        self.codec = HeaderCodec()
        self.streams: dict[int, Stream] = {}
        self._on_stream = on_stream
        self._touch = touch
        self._lock = asyncio.Lock()
        self._last_id = 0
        self.going_away = False

    async def send(self, frame: bytes) -> None:
        await send_frame(self.writer, self._lock, frame)
        self._touch()

    async def serve(self) -> None:
        """Read frames until EOF, GOAWAY or a protocol error; then end every inbox."""
        try:
            while True:
                frame = await read_frame(self.reader)
                if frame is None:
                    return
                self._touch()
                if not await self._dispatch(frame):
                    return
        except ProtocolError as exc:
            log.info("SPDY protocol error from peer: %s", exc)
            with contextlib.suppress(ConnectionError):
                await self.send(goaway(self._last_id, 1))
        finally:
            for stream in self.streams.values():
                stream.inbox.close()

    async def _dispatch(self, f: Frame) -> bool:
        if not f.control:
            stream = self.streams.get(f.stream_id)
            if stream is None:
                await self.send(rst_stream(f.stream_id, RST_INVALID_STREAM))
                return True
            if f.payload:
                await stream.inbox.put(f.payload)
            if f.flags & FLAG_FIN:
                stream.inbox.close()
            return True
        p = f.payload
        if f.kind == SYN_STREAM:
            if len(p) < 10:
                raise ProtocolError("short SYN_STREAM")
            sid = struct.unpack_from(">I", p, 0)[0] & 0x7FFFFFFF
            headers = self.codec.decompress(p[10:])  # always inflate: the zlib stream is shared
            if sid == 0 or sid in self.streams or sid % 2 == 0 or self.going_away:
                await self.send(rst_stream(sid, RST_PROTOCOL_ERROR))
                return True
            self._last_id = max(self._last_id, sid)
            stream = Stream(self, sid, headers)
            self.streams[sid] = stream
            await self.send(syn_reply(self.codec, sid, {}))
            if f.flags & FLAG_FIN:
                stream.inbox.close()
            result = self._on_stream(stream)
            if result is not None:
                await result
        elif f.kind == RST_STREAM:
            if len(p) >= 8:
                stream = self.streams.get(struct.unpack_from(">I", p, 0)[0] & 0x7FFFFFFF)
                if stream is not None:
                    stream.reset = True
                    stream.inbox.close()
        elif f.kind == PING:
            if len(p) == 4:
                (pid,) = struct.unpack(">I", p)
                if pid % 2 == 1:  # the client's ping: echo it; ours would be even
                    await self.send(ping(pid))
        elif f.kind == GOAWAY:
            self.going_away = True
            return False
        elif f.kind == HEADERS and len(p) >= 4:
            self.codec.decompress(p[4:])  # keep the shared zlib stream in step
        # SETTINGS, WINDOW_UPDATE and unknown types: nothing to do.
        return True

    async def close(self, reading: asyncio.Future[None] | None = None) -> None:
        """GOAWAY, then a graceful end: shut our side and let ``reading`` (the serve
        task) drain what the client still sends, so closing with unread bytes does not
        turn into a reset that could destroy our last frames before the client reads them.
        """
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send(goaway(self._last_id))
        if reading is not None and not reading.done():
            for stream in self.streams.values():
                stream.inbox.discard()
            with contextlib.suppress(OSError, RuntimeError):
                if self.writer.can_write_eof() and not self.writer.is_closing():
                    self.writer.write_eof()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(reading), LINGER)
            reading.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

"""RFC 6455 WebSocket, server side, and the Kubernetes channel protocols on top.

Kubernetes puts a one-byte channel number in front of every binary message
(``v4.channel.k8s.io``); ``v5.channel.k8s.io`` adds channel 255, whose message
``[255, n]`` closes channel ``n`` (how a client half-closes stdin).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sycri.streaming.channel import LINGER, Inbox, send_frame

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 16 * 1024 * 1024
CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_TOO_BIG = 1000, 1002, 1009
CHANNEL_CLOSE = 255
V4, V5 = "v4.channel.k8s.io", "v5.channel.k8s.io"


class ProtocolError(Exception):
    """The client broke RFC 6455."""


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.strip().encode() + _GUID).digest()).decode()


def offered_protocols(values: list[str]) -> list[str]:
    """Sec-WebSocket-Protocol header values (possibly repeated) as one ordered list."""
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server frame (servers never mask)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", first, n)
    elif n < 65536:
        head = struct.pack(">BBH", first, 126, n)
    else:
        head = struct.pack(">BBQ", first, 127, n)
    return head + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")


@dataclass(frozen=True)
class WsFrame:
    fin: bool
    opcode: int
    payload: bytes


async def read_frame(reader: asyncio.StreamReader) -> WsFrame | None:
    """The next client frame (unmasked), or None at EOF between frames."""
    try:
        head = await reader.readexactly(2)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame") from None
    try:
        fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        if head[0] & 0x70:
            raise ProtocolError("reserved bits set without an extension")
        masked, n = bool(head[1] & 0x80), head[1] & 0x7F
        if not masked:
            raise ProtocolError("client frames must be masked")
        if n == 126:
            (n,) = struct.unpack(">H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", await reader.readexactly(8))
        if n > MAX_MESSAGE:
            raise ProtocolError(f"frame of {n} bytes is too large")
        if opcode >= 0x8 and (n > 125 or not fin):
            raise ProtocolError("bad control frame")
        key = await reader.readexactly(4)
        payload = await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame") from None
    return WsFrame(fin, opcode, unmask(payload, key))


class WebSocket:
    """One accepted WebSocket: whole messages in, binary messages out."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        touch: Callable[[], None] = lambda: None,
    ) -> None:
        self.reader, self.writer = reader, writer
        self._touch = touch
        self._lock = asyncio.Lock()
        self.closed = False

    async def _send(self, frame: bytes) -> None:
        await send_frame(self.writer, self._lock, frame)
        self._touch()

    async def send(self, data: bytes) -> None:
        await self._send(encode_frame(OP_BINARY, data))

    async def receive(self) -> bytes | None:
        """The next data message; None once the client closed or the socket ended."""
        parts: list[bytes] = []
        size = 0
        while True:
            frame = await read_frame(self.reader)
            if frame is None:
                return None
            self._touch()
            if frame.opcode == OP_PING:
                await self._send(encode_frame(OP_PONG, frame.payload))
                continue
            if frame.opcode == OP_PONG:
                continue
            if frame.opcode == OP_CLOSE:
                await self.close(CLOSE_NORMAL)
                return None
            if frame.opcode == OP_CONT and not parts:
                raise ProtocolError("continuation without a message")
            if frame.opcode not in (OP_CONT, OP_TEXT, OP_BINARY):
                raise ProtocolError(f"unknown opcode {frame.opcode}")
            parts.append(frame.payload)
            size += len(frame.payload)
            if size > MAX_MESSAGE:
                raise ProtocolError("message too large")
            if frame.fin:
                return b"".join(parts)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._send(
                encode_frame(OP_CLOSE, struct.pack(">H", code) + reason.encode()[:120])
            )


class ChannelOut:
    """An Outbound writing ``[channel] + data`` messages; closing only says so on v5."""

    def __init__(self, ws: WebSocket, channel: int, v5: bool) -> None:
        self.ws, self.channel, self.v5 = ws, channel, v5
        self.closed = False

    async def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        prefix = bytes([self.channel])
        for i in range(0, len(data), 1 << 20):
            await self.ws.send(prefix + data[i : i + (1 << 20)])

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.v5:
                with contextlib.suppress(ConnectionError):
                    await self.ws.send(bytes([CHANNEL_CLOSE, self.channel]))


async def linger(reading: asyncio.Future[None], inboxes: Iterable[Inbox | None]) -> None:
    """After our close frame: drop further input and wait (briefly) for the client's
    close frame, the end of the RFC 6455 closing handshake."""
    for box in inboxes:
        if box is not None:
            box.discard()
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
        await asyncio.wait_for(asyncio.shield(reading), LINGER)

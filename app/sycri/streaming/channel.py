"""What the backends see of a client, whichever wire protocol carried it.

SPDY streams and WebSocket channels both become an :class:`Inbox` (bytes from the
client, ending at EOF) and an :class:`Outbound` (bytes to the client, closable), so
exec, attach and port-forward are written once.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

_INBOX_DEPTH = 64  # chunks buffered per stream before the connection's reader waits
LINGER = 2.0  # seconds a closing connection waits for the client's side to end


async def send_frame(writer: asyncio.StreamWriter, lock: asyncio.Lock, frame: bytes) -> None:
    """Write one whole frame of either protocol; ``lock`` keeps the frames of concurrent
    senders on one connection from interleaving."""
    async with lock:
        if writer.is_closing():
            raise ConnectionResetError("connection closed")
        writer.write(frame)
        await writer.drain()


class Inbox:
    """Bytes arriving from the client on one stream; ``read()`` returns b"" at EOF.

    Bounded: when the consumer falls behind, ``put`` waits, which stops the
    connection's reader and so pushes back on the client through TCP.
    """

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self.eof = False
        self._discard = False
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    async def put(self, data: bytes) -> None:
        await self._space.wait()
        if self.eof or self._discard:
            return
        self._chunks.append(data)
        self._readable.set()
        if len(self._chunks) >= _INBOX_DEPTH:
            self._space.clear()

    def close(self) -> None:
        """End of input (FIN, channel close, or the connection went away)."""
        self.eof = True
        self._readable.set()
        self._space.set()

    def discard(self) -> None:
        """The consumer is gone: drop whatever still arrives instead of blocking."""
        self._discard = True
        self._chunks.clear()
        self._space.set()

    async def peek(self) -> bytes:
        """The next chunk without taking it (b"" at EOF)."""
        while not self._chunks:
            if self.eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        return self._chunks[0]

    async def read(self) -> bytes:
        while not self._chunks:
            if self.eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        if len(self._chunks) < _INBOX_DEPTH:
            self._space.set()
        return data


class Outbound(Protocol):
    """Bytes to the client on one stream."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


def parse_resizes(buffer: bytes) -> tuple[list[TerminalSize], bytes]:
    """Complete ``{"Width":W,"Height":H}`` objects from a resize stream, and the rest.

    Clients write one JSON object per event, back to back; a read may hold several or
    half of one. Malformed objects are skipped (a bad resize must not end a session).
    """
    text = buffer.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    sizes: list[TerminalSize] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            return sizes, b""
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            if len(text) - pos > 4096:  # garbage, not a partial object
                return sizes, b""
            return sizes, text[pos:].encode()
        pos = end
        if isinstance(obj, dict):
            w, h = obj.get("Width", obj.get("width")), obj.get("Height", obj.get("height"))
            if isinstance(w, int) and isinstance(h, int) and 0 < w < 65536 and 0 < h < 65536:
                sizes.append(TerminalSize(w, h))


async def resize_events(inbox: Inbox) -> AsyncIterator[TerminalSize]:
    pending = b""
    while True:
        data = await inbox.read()
        if not data:
            return
        sizes, pending = parse_resizes(pending + data)
        for size in sizes:
            yield size


@dataclass
class Stdio:
    """The client's side of a command: each part is None when the client did not ask."""

    stdin: Inbox | None = None
    stdout: Outbound | None = None
    stderr: Outbound | None = None
    resize: Inbox | None = None
    extra: dict[str, object] = field(default_factory=dict)


class StreamError(Exception):
    """A failure the client should read on its error stream (not a crash of sycri)."""


def status_success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def status_exit(code: int, cmd: tuple[str, ...]) -> dict[str, Any]:
    """The Status kubectl and client-go turn into "command terminated with exit code N"."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command "
            f"[{' '.join(cmd)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def status_error(message: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def encode_status(status: dict[str, Any]) -> bytes:
    return json.dumps(status, separators=(",", ":")).encode()

"""The one HTTP/1.1 request a streaming connection starts with, and its upgrade reply
(SPDY/3.1 or WebSocket, with the subprotocol both sides speak)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from sycri.streaming import websocket

MAX_HEAD = 64 * 1024  # the connection's read limit: a longer request head is answered 431


class BadRequest(Exception):
    """The request cannot be served; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]] = field(default_factory=dict)  # lower-case names

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower(), [])
        return values[0] if values else ""

    def header_list(self, name: str) -> list[str]:
        """Every value, comma lists split (X-Stream-Protocol-Version may repeat)."""
        return [p.strip() for v in self.headers.get(name.lower(), []) for p in v.split(",")]

    def tokens(self, name: str) -> set[str]:
        return {t.lower() for t in self.header_list(name) if t}


def parse_head(raw: bytes) -> Request:
    """Parse a request line and headers (everything before the blank line)."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(400, "undecodable request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, _ = parts
    url = urlsplit(target)
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        headers.setdefault(name.lower(), []).append(value.strip())
    return Request(method, url.path, parse_qs(url.query, keep_blank_values=True), headers)


async def read_request(reader: asyncio.StreamReader) -> Request:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    except asyncio.IncompleteReadError:
        raise BadRequest(400, "connection closed before the request head ended") from None
    return parse_head(raw[:-4])


_REASONS = {
    101: "Switching Protocols",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def response(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if status != 101:
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if status == 101 else body)


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first protocol the client offers that the server speaks (client's preference)."""
    for p in offered:
        if p in supported:
            return p
    return None


@dataclass
class Conn:
    """One accepted connection after its request head; ``touch`` marks traffic (for the
    idle timeout)."""

    req: Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    touch: Callable[[], None]


async def spdy_upgrade(
    req: Request, writer: asyncio.StreamWriter, supported: tuple[str, ...]
) -> str:
    """Answer 101 with the first X-Stream-Protocol-Version both sides speak; 403 if none."""
    offered = req.header_list("x-stream-protocol-version")
    chosen = negotiate(offered, supported)
    if chosen is None:
        raise BadRequest(
            403,
            f"unable to upgrade: unable to negotiate protocol: client supports "
            f"{offered[:8]}, server accepts {list(supported)}",
        )
    writer.write(
        response(
            101,
            [
                ("Connection", "Upgrade"),
                ("Upgrade", "SPDY/3.1"),
                ("X-Stream-Protocol-Version", chosen),
            ],
        )
    )
    await writer.drain()
    return chosen


async def websocket_upgrade(
    req: Request, writer: asyncio.StreamWriter, supported: tuple[str, ...]
) -> str:
    """Answer 101 with the first Sec-WebSocket-Protocol both sides speak; 400 if none."""
    key = req.header("sec-websocket-key")
    if not key or req.header("sec-websocket-version") != "13":
        raise BadRequest(400, "WebSocket upgrade needs Sec-WebSocket-Key and version 13")
    offered = websocket.offered_protocols(req.headers.get("sec-websocket-protocol", []))
    chosen = negotiate(offered, supported)
    if chosen is None:
        raise BadRequest(
            400,
            f"unable to negotiate a WebSocket subprotocol: client offers {offered[:8]}, "
            f"server speaks {list(supported)}",
        )
    writer.write(
        response(
            101,
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", websocket.accept_key(key)),
                ("Sec-WebSocket-Protocol", chosen),
            ],
        )
    )
    await writer.drain()
    return chosen

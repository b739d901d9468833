"""A minimal SPDY/3.1 client, as client-go's remotecommand and portforward use it.

Written from the protocol (not from sycri's server code, whose framing it checks):
HTTP upgrade with X-Stream-Protocol-Version, client streams with odd ids opened by
SYN_STREAM and confirmed by SYN_REPLY, DATA frames with FIN for half-close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import zlib
from urllib.parse import urlsplit

from sycri.streaming.spdy import DICTIONARY  # checked byte-for-byte by a unit test


class ClientStream:
    def __init__(self, client: SpdyClient, sid: int) -> None:
        self.client, self.id = client, sid
        self.data = bytearray()
        self.fin = asyncio.Event()
        self.replied = asyncio.Event()
        self.reset = False
        self.arrived = asyncio.Event()

    async def write(self, data: bytes) -> None:
        await self.client._send(struct.pack(">II", self.id, len(data)) + data)

    async def close(self) -> None:
        await self.client._send(struct.pack(">II", self.id, (1 << 24) | 0))

    async def read_all(self, timeout: float = 30) -> bytes:
        await asyncio.wait_for(self.fin.wait(), timeout)
        return bytes(self.data)

    async def wait_for(self, needle: bytes, timeout: float = 10) -> None:
        async def scan() -> None:
            while needle not in self.data:
                if self.fin.is_set():
                    raise AssertionError(
                        f"stream ended without {needle!r}: {bytes(self.data)!r}; "
                        f"other streams: {[bytes(s.data) for s in self.client.streams.values()]}"
                    )
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(scan(), timeout)


class SpdyClient:
    def __init__(self, reader, writer, protocol: str) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.streams: dict[int, ClientStream] = {}
        self._next = 1
        self._deflate = zlib.compressobj(
            9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._lock = asyncio.Lock()
        self.pings: list[int] = []
        self.goaway = False
        self.eof = asyncio.Event()
        self._task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def connect(cls, url: str, protocols: list[str], ssl=None) -> SpdyClient:
        u = urlsplit(url)
        reader, writer = await asyncio.open_connection(u.hostname, u.port, ssl=ssl)
        lines = [f"POST {u.path}{'?' + u.query if u.query else ''} HTTP/1.1", f"Host: {u.netloc}"]
        lines += ["Connection: Upgrade", "Upgrade: SPDY/3.1"]
        lines += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        status = int(head.split(" ", 2)[1])
        if status != 101:
            body = await reader.read(4096)
            writer.close()
            raise UpgradeRefused(status, head + body.decode(errors="replace"))
        chosen = ""
        for line in head.split("\r\n"):
            if line.lower().startswith("x-stream-protocol-version:"):
                chosen = line.split(":", 1)[1].strip()
        return cls(reader, writer, chosen)

    async def _send(self, frame: bytes) -> None:
        async with self._lock:
            self.writer.write(frame)
            await self.writer.drain()

    def _headers(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for k, v in headers.items():
            raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    async def open_stream(self, headers: dict[str, str]) -> ClientStream:
        sid = self._next
        self._next += 2
        stream = ClientStream(self, sid)
        self.streams[sid] = stream
        body = struct.pack(">IIH", sid, 0, 0) + self._headers(headers)
        await self._send(struct.pack(">HHI", 0x8003, 1, len(body)) + body)
        await asyncio.wait_for(stream.replied.wait(), 10)
        return stream

    async def ping(self, pid: int) -> None:
        await self._send(struct.pack(">HHII", 0x8003, 6, 4, pid))

    async def _read_loop(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(8)
                word, fl = struct.unpack(">II", head)
                payload = await self.reader.readexactly(fl & 0xFFFFFF)
                flags = fl >> 24
                if word & 0x80000000:
                    kind = word & 0xFFFF
                    if kind == 2:  # SYN_REPLY
                        sid = struct.unpack_from(">I", payload)[0]
                        self._inflate.decompress(payload[4:])
                        self.streams[sid].replied.set()
                    elif kind == 3:
                        sid = struct.unpack_from(">I", payload)[0]
                        s = self.streams.get(sid)
                        if s:
                            s.reset = True
                            s.fin.set()
                    elif kind == 6:
                        self.pings.append(struct.unpack(">I", payload)[0])
                    elif kind == 7:
                        self.goaway = True
                else:
                    s = self.streams[word]
                    s.data += payload
                    s.arrived.set()
                    if flags & 1:
                        s.fin.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.eof.set()
            for s in self.streams.values():
                s.arrived.set()

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class UpgradeRefused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


async def exec_session(
    url: str, *, stdin: bool, stdout: bool, stderr: bool, tty: bool, ssl=None
) -> tuple[SpdyClient, dict[str, ClientStream]]:
    """Open the streams client-go opens for an exec/attach (error first)."""
    client = await SpdyClient.connect(url, ["v4.channel.k8s.io"], ssl=ssl)
    streams = {"error": await client.open_stream({"streamtype": "error"})}
    for name, want in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr), ("resize", tty)):
        if want:
            streams[name] = await client.open_stream({"streamtype": name})
    return client, streams


def parse_status(raw: bytes) -> dict:
    return json.loads(raw)


def exit_code(status: dict) -> int:
    """The exit code client-go (kubectl, crictl) reports for an exec's final Status.

    Success is 0; a NonZeroExitCode Status carries the code in its ExitCode cause;
    anything else is an error the user sees as the Status message.
    """
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
    raise ExecFailed(status.get("message", json.dumps(status)))


class ExecFailed(Exception):
    """An exec that did not run to an exit code (missing command, gone container)."""

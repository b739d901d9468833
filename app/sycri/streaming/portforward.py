"""Port-forward: each of the client's streams joined to a TCP connection to
127.0.0.1:PORT inside the pod's network namespace.

Over SPDY the client opens a ``data`` and an ``error`` stream per connection (a pair,
matched by ``requestid``, naming its port); over WebSocket the ports are in the URL and
channel ``2i`` carries port ``i``'s data, ``2i+1`` its errors.

A socket belongs to the network namespace of the thread that created it, so a short
helper thread enters the pod's namespace with setns(2), creates the socket, returns
to sycri's namespace and ends; the connect itself then runs on the event loop. The
thread is never reused, so even a failed return cannot leak the pod's namespace into
other work. No socat, no nsenter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from sycri.streaming import spdy, websocket
from sycri.streaming.channel import Inbox, Outbound
from sycri.streaming.tokens import PortForwardRequest
from sycri.streaming.upgrade import BadRequest, Conn, spdy_upgrade, websocket_upgrade

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_CHUNK = 256 * 1024
SPDY_PROTOCOLS = ("portforward.k8s.io",)
WS_PROTOCOLS = (websocket.V4,)
MAX_PENDING_PAIRS = 256  # half-opened port-forward requests per connection
MAX_PORTS = 64  # ports in one WebSocket port-forward

NetnsOf = Callable[[str], str]  # a sandbox's network namespace; BadRequest when it is gone


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _make_socket(netns: str, family: int) -> socket.socket:
    if not netns:
        return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        finally:
            _setns(own)
    finally:
        os.close(own)


async def socket_in_netns(netns: str, family: int = socket.AF_INET) -> socket.socket:
    """A new TCP socket of ``netns`` (a path to a network namespace; "" = sycri's own)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[socket.socket] = loop.create_future()

    def work() -> None:
        try:
            result = _make_socket(netns, family)
        except BaseException as exc:  # handed to the caller, never lost
            loop.call_soon_threadsafe(_settle, fut, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, fut, result, None)

    threading.Thread(target=work, name="sycri-netns", daemon=True).start()
    return await fut


def _settle(
    fut: asyncio.Future[socket.socket],
    value: socket.socket | None,
    exc: BaseException | None,
) -> None:
    if fut.cancelled():
        if value is not None:
            value.close()
    elif exc is not None:
        fut.set_exception(exc)
    else:
        assert value is not None  # work() hands over a socket or an exception
        fut.set_result(value)


async def connect(netns: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to 127.0.0.1:port (then [::1]:port) in the namespace; OSError if neither."""
    if not 0 < port < 65536:
        raise OSError(f"invalid port {port}")
    last: OSError | None = None
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            sock = await socket_in_netns(netns, family)
        except OSError as exc:
            if exc.errno == 97:  # EAFNOSUPPORT: no IPv6 here
                continue
            raise
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except OSError as exc:
            sock.close()
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            last = last or OSError(exc.errno, f"connect to {host}:{port}: {reason}")
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await asyncio.open_connection(sock=sock, limit=_CHUNK * 4)
    assert last is not None
    raise last


async def pump(
    inbox: Inbox, out: Outbound, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Copy both ways until the pod side has finished sending.

    The client's end of input half-closes the TCP connection (the pod sees EOF and can
    still answer); the pod's end of output closes the client's stream and ends the pair.
    """

    async def upstream() -> None:
        while data := await inbox.read():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    up = asyncio.ensure_future(upstream())
    try:
        while data := await reader.read(_CHUNK):
            await out.write(data)
        await out.close()
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await up
        inbox.discard()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# -- the client's side ---------------------------------------------------------------


async def serve_spdy(c: Conn, r: PortForwardRequest, netns_of: NetnsOf) -> None:
    """Forward every stream pair the client opens until it ends the session."""
    netns = netns_of(r.sandbox_id)
    await spdy_upgrade(c.req, c.writer, SPDY_PROTOCOLS)
    pairs: dict[str, dict[str, spdy.Stream]] = {}
    tasks: set[asyncio.Task[None]] = set()

    def on_stream(stream: spdy.Stream) -> None:
        kind = stream.headers.get("streamtype", "")
        rid = stream.headers.get("requestid", "")
        if rid not in pairs and len(pairs) >= MAX_PENDING_PAIRS:
            stream.inbox.discard()
            return
        pair = pairs.setdefault(rid, {})
        if kind not in ("error", "data") or kind in pair:
            stream.inbox.discard()
            return
        pair[kind] = stream
        if len(pair) == 2:
            del pairs[rid]
            t = asyncio.ensure_future(_forward_pair(netns, r.sandbox_id, pair))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    conn = spdy.Connection(c.reader, c.writer, on_stream, c.touch)
    try:
        await conn.serve()  # port-forward lasts until the client ends the session
    finally:
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await conn.close()


async def _forward_pair(netns: str, sandbox: str, pair: dict[str, spdy.Stream]) -> None:
    error, data = pair["error"], pair["data"]
    error.inbox.discard()  # clients never write on it
    raw_port = data.headers.get("port", "")
    try:
        port = int(raw_port)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        await _forward_failed(error, data, f"invalid port {raw_port[:16]!r}")
        return
    try:
        conn_reader, conn_writer = await connect(netns, port)
    except OSError as exc:
        msg = f"error forwarding port {port} to pod {sandbox}: {exc.strerror or exc}"
        await _forward_failed(error, data, msg)
        return
    with contextlib.suppress(ConnectionError):
        await pump(data.inbox, data, conn_reader, conn_writer)
        await error.close()


async def _forward_failed(error: Outbound, data: spdy.Stream, message: str) -> None:
    data.inbox.discard()
    with contextlib.suppress(ConnectionError):
        await error.write(message.encode())
        await error.close()
        await data.close()


def _ports(c: Conn, r: PortForwardRequest) -> list[int]:
    """The ``ports`` query parameter (else the request's ports), checked."""
    ports: list[int] = []
    for value in c.req.query.get("ports", []) or [",".join(map(str, r.ports))]:
        for item in value.split(","):
            if not item:
                continue
            if not item.isdigit() or not 0 < int(item) < 65536:
                raise BadRequest(400, f"invalid port {item[:16]!r}")
            ports.append(int(item))
    if not ports:
        raise BadRequest(400, "port-forward over WebSocket needs a ports query parameter")
    if len(ports) > MAX_PORTS:
        raise BadRequest(400, "too many ports in one port-forward")
    return ports


async def serve_websocket(c: Conn, r: PortForwardRequest, netns_of: NetnsOf) -> None:
    """Forward each port of the URL until one side ends."""
    ports = _ports(c, r)
    netns = netns_of(r.sandbox_id)
    await websocket_upgrade(c.req, c.writer, WS_PROTOCOLS)
    ws = websocket.WebSocket(c.reader, c.writer, c.touch)
    inboxes = [Inbox() for _ in ports]
    for i, port in enumerate(ports):
        for channel in (2 * i, 2 * i + 1):  # each channel opens with its port number
            await ws.send(bytes([channel]) + port.to_bytes(2, "little"))

    async def demux() -> None:
        try:
            while (msg := await ws.receive()) is not None:
                if len(msg) > 1 and msg[0] % 2 == 0 and msg[0] // 2 < len(inboxes):
                    await inboxes[msg[0] // 2].put(msg[1:])
        finally:
            for box in inboxes:
                box.close()

    async def one(i: int, port: int) -> None:
        out = websocket.ChannelOut(ws, 2 * i, False)
        try:
            conn_reader, conn_writer = await connect(netns, port)
        except OSError as exc:
            inboxes[i].discard()
            msg = f"error forwarding port {port} to pod {r.sandbox_id}: {exc.strerror or exc}"
            await websocket.ChannelOut(ws, 2 * i + 1, False).write(msg.encode())
            return
        await pump(inboxes[i], out, conn_reader, conn_writer)

    reading = asyncio.ensure_future(demux())
    forwards = asyncio.ensure_future(asyncio.gather(*(one(i, p) for i, p in enumerate(ports))))
    try:
        racing: set[asyncio.Future[Any]] = {reading, forwards}
        await asyncio.wait(racing, return_when="FIRST_COMPLETED")

        if forwards.done():
            forwards.result()
            await ws.close()
            await websocket.linger(reading, inboxes)
    finally:
        reading.cancel()
        forwards.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await forwards

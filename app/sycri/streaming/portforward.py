"""Port-forward: a TCP connection to 127.0.0.1:PORT inside a pod's network namespace.

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

from sycri.streaming.channel import Inbox, Outbound

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_CHUNK = 256 * 1024


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

"""Attach: the running container's own stdio, through conmon's attach socket.

conmon listens on a SOCK_SEQPACKET socket named ``attach``; every packet it sends is
one read of the container's output, prefixed by a byte naming the pipe (2 stdout,
3 stderr); packets we send are written to the container's stdin as they are, and
shutting down our write side closes that stdin (unless conmon was told to leave it
open). Window sizes go to conmon's control fifo as ``1 HEIGHT WIDTH\\n``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from sycri.streaming.channel import Stdio, StreamError, resize_events
from sycri.streaming.targets import ContainerTarget

STDOUT_PIPE, STDERR_PIPE = 2, 3
CONMON_BUF = 32768  # conmon reads at most this much per packet
RESIZE_EVENT = 1


def resize_message(width: int, height: int) -> bytes:
    return f"{RESIZE_EVENT} {height} {width}\n".encode()


def write_ctl(path: str, message: bytes) -> None:
    """One write to conmon's control fifo; a fifo nobody reads is not our failure."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.write(fd, message)
    finally:
        os.close(fd)


async def connect_attach(target: ContainerTarget) -> socket.socket:
    path = target.attach_socket
    if not path:
        raise StreamError(f"container {target.container_id} has no attach socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    dirfd = -1
    try:
        if len(path.encode()) > 100:  # sun_path is 108 bytes: reach it through our fd table
            dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
            path = f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"
        await asyncio.get_running_loop().sock_connect(sock, path)
    except OSError as exc:
        sock.close()
        raise StreamError(
            f"container {target.container_id} is not running (attach socket: {exc.strerror})"
        ) from None
    finally:
        if dirfd >= 0:
            os.close(dirfd)
    return sock


async def run_attach(target: ContainerTarget, tty: bool, io: Stdio) -> None:
    """Relay until the container's output ends (it exited) or the client leaves."""
    sock = await connect_attach(target)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[None]] = []
    try:
        if io.stdin is not None:
            stdin = io.stdin

            async def feed() -> None:
                while data := await stdin.read():
                    for i in range(0, len(data), CONMON_BUF):
                        await loop.sock_sendall(sock, data[i : i + CONMON_BUF])
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)

            tasks.append(asyncio.ensure_future(feed()))
        if io.resize is not None and target.ctl_fifo:
            resize_in, ctl = io.resize, target.ctl_fifo

            async def resize() -> None:
                async for size in resize_events(resize_in):
                    write_ctl(ctl, resize_message(size.width, size.height))

            tasks.append(asyncio.ensure_future(resize()))
        while True:
            packet = await loop.sock_recv(sock, CONMON_BUF + 1)
            if not packet:
                return
            kind, data = packet[0], packet[1:]
            out = io.stderr if kind == STDERR_PIPE and not tty else io.stdout
            if out is not None and data:
                await out.write(data)
    finally:
        for t in tasks:
            t.cancel()
        sock.close()
        for inbox in (io.stdin, io.resize):
            if inbox is not None:
                inbox.discard()

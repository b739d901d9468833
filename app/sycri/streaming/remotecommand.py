"""Exec and attach sessions: the client's streams wired to a command's stdio.

Over SPDY the client opens one stream per stdio it asked for (and ``error``, and
``resize`` with a TTY); over WebSocket every message carries its channel number. Both
become a :class:`Stdio` for the backend (``runc exec`` or conmon's attach socket), and
the command's Kubernetes Status goes back on the error stream, unless the client left
first: then the command is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sycri.errors import SycriError
from sycri.streaming import attach, execution, spdy, websocket
from sycri.streaming.channel import (
    Inbox,
    Outbound,
    Stdio,
    StreamError,
    encode_status,
    status_error,
    status_exit,
    status_success,
)
from sycri.streaming.targets import Targets
from sycri.streaming.tokens import AttachRequest, ExecRequest
from sycri.streaming.upgrade import Conn, spdy_upgrade, websocket_upgrade

log = logging.getLogger("sycri.streaming")

SPDY_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
WS_PROTOCOLS = (websocket.V5, websocket.V4)
STREAM_CREATION_TIMEOUT = 30.0
WS_STDIN, WS_STDOUT, WS_STDERR, WS_ERROR, WS_RESIZE = 0, 1, 2, 3, 4

Backend = Callable[[Stdio], Awaitable[dict[str, Any]]]
Running = set[asyncio.Future[dict[str, Any]]]  # commands under way, awaited when sycri stops


def backend(targets: Targets, r: ExecRequest | AttachRequest) -> Backend:
    """What runs for ``r``: the exec'd command or the attach, reporting a Status."""

    async def run(io: Stdio) -> dict[str, Any]:
        t0 = time.monotonic()
        what = f"exec {r.cmd[0][:64]!r} in" if isinstance(r, ExecRequest) else "attach to"
        try:
            target = targets.container(r.container_id)
            if isinstance(r, ExecRequest):
                code = await execution.run_exec(target, r.cmd, r.tty, io)
                log.info("%s %s: exit %d after %.3fs", what, r.container_id, code,
                         time.monotonic() - t0)  # fmt: skip
                return status_success() if code == 0 else status_exit(code, r.cmd)
            await attach.run_attach(target, r.tty, io)
            log.info("%s %s: ended after %.3fs", what, r.container_id, time.monotonic() - t0)
            return status_success()
        except (StreamError, SycriError) as exc:
            log.info("%s %s failed: %s", what, r.container_id, exc)
            return status_error(str(exc))

    return run


async def serve_spdy(
    c: Conn, r: ExecRequest | AttachRequest, run: Backend, running: Running
) -> None:
    await spdy_upgrade(c.req, c.writer, SPDY_PROTOCOLS)
    expected = {"error"}
    for name in ("stdin", "stdout", "stderr"):
        if getattr(r, name):
            expected.add(name)
    if r.tty:
        expected.add("resize")
    streams: dict[str, spdy.Stream] = {}
    ready = asyncio.Event()

    def on_stream(stream: spdy.Stream) -> None:
        kind = stream.headers.get("streamtype", "")
        if kind in expected and kind not in streams:
            streams[kind] = stream
            if set(streams) == expected:
                ready.set()
        else:  # a stream we did not ask for: nobody will read it
            stream.inbox.discard()

    conn = spdy.Connection(c.reader, c.writer, on_stream, c.touch)
    serving = asyncio.ensure_future(conn.serve())
    try:
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait(
            {waiter, serving}, timeout=STREAM_CREATION_TIMEOUT, return_when="FIRST_COMPLETED"
        )
        waiter.cancel()
        if not ready.is_set():
            missing = sorted(expected - set(streams))
            log.info("SPDY client did not open streams %s; closing", missing)
            if "error" in streams:
                await streams["error"].write(
                    encode_status(status_error(f"streams not created: {missing}"))
                )
            return
        io = Stdio(
            stdin=streams["stdin"].inbox if "stdin" in streams else None,
            stdout=streams.get("stdout"),
            stderr=streams.get("stderr"),
            resize=streams["resize"].inbox if "resize" in streams else None,
        )
        await _run_command(run, io, streams["error"], serving, running)
    finally:
        await conn.close(serving)


async def serve_websocket(
    c: Conn, r: ExecRequest | AttachRequest, run: Backend, running: Running
) -> None:
    chosen = await websocket_upgrade(c.req, c.writer, WS_PROTOCOLS)
    v5 = chosen == websocket.V5
    ws = websocket.WebSocket(c.reader, c.writer, c.touch)
    inboxes = {WS_STDIN: Inbox() if r.stdin else None, WS_RESIZE: Inbox() if r.tty else None}

    async def demux() -> None:
        try:
            while (msg := await ws.receive()) is not None:
                if not msg:
                    continue
                channel, data = msg[0], msg[1:]
                if channel == websocket.CHANNEL_CLOSE and v5 and len(data) == 1:
                    box = inboxes.get(data[0])
                    if box is not None:
                        box.close()
                    continue
                box = inboxes.get(channel)
                if box is not None and data:
                    await box.put(data)
        finally:
            for box in inboxes.values():
                if box is not None:
                    box.close()

    reading = asyncio.ensure_future(demux())
    try:
        io = Stdio(
            stdin=inboxes[WS_STDIN],
            stdout=websocket.ChannelOut(ws, WS_STDOUT, v5) if r.stdout else None,
            stderr=websocket.ChannelOut(ws, WS_STDERR, v5) if r.stderr else None,
            resize=inboxes[WS_RESIZE],
        )
        error = websocket.ChannelOut(ws, WS_ERROR, False)
        await _run_command(run, io, error, reading, running)
        await ws.close()
        await websocket.linger(reading, inboxes.values())
    finally:
        reading.cancel()


async def _run_command(
    run: Backend,
    io: Stdio,
    error: Outbound,
    reading: asyncio.Future[None],
    running: Running,
) -> None:
    """Run the backend; report its status unless the client left first."""
    work = asyncio.ensure_future(run(io))
    running.add(work)
    work.add_done_callback(running.discard)
    try:
        racing: set[asyncio.Future[Any]] = {work, reading}
        await asyncio.wait(racing, return_when="FIRST_COMPLETED")
    finally:
        if not work.done():
            work.cancel()  # the client is gone (or sycri stops): stop the command
    if not work.done():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        return
    status = work.result()
    for out in (io.stdout, io.stderr):
        if out is not None:
            await out.close()
    await error.write(encode_status(status))
    await error.close()

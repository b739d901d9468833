"""The streaming HTTP server: single-use URLs for exec, attach and port-forward.

kubelet asks sycri (CRI Exec/Attach/PortForward) for a URL, then proxies the
client's upgraded connection to it. One connection = one request: the token in the
path is taken (so it works once, and only before it expires), the upgrade picks
SPDY/3.1 or WebSocket, and the session runs on the event loop alongside the gRPC
server. A connection with no traffic for ``idle_timeout_seconds`` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sycri.config import StreamingConfig
from sycri.errors import SycriError
from sycri.streaming import attach, execution, portforward, spdy, websocket
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
from sycri.streaming.tokens import AttachRequest, ExecRequest, PortForwardRequest, TokenCache
from sycri.streaming.upgrade import BadRequest, Request, negotiate, read_request, response

log = logging.getLogger("sycri.streaming")

REMOTECOMMAND_SPDY = ("v5.channel.k8s.io", "v4.channel.k8s.io")
REMOTECOMMAND_WS = (websocket.V5, websocket.V4)
PORTFORWARD_SPDY = ("portforward.k8s.io",)
PORTFORWARD_WS = (websocket.V4,)
STREAM_CREATION_TIMEOUT = 30.0
HEAD_TIMEOUT = 30.0  # a client that never finishes its request head is dropped
MAX_PENDING_PAIRS = 256  # half-opened port-forward requests per connection
WS_STDIN, WS_STDOUT, WS_STDERR, WS_ERROR, WS_RESIZE = 0, 1, 2, 3, 4

StreamRequest = ExecRequest | AttachRequest | PortForwardRequest
_PATHS: dict[type, str] = {
    ExecRequest: "exec",
    AttachRequest: "attach",
    PortForwardRequest: "portforward",
}


class _Activity:
    """Last time bytes moved on a connection, for the idle timeout."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


async def _linger(reading: asyncio.Future[None], inboxes: Iterable[Inbox | None]) -> None:
    """After our close frame: drop further input and wait (briefly) for the client's
    close frame, the end of the RFC 6455 closing handshake."""
    for box in inboxes:
        if box is not None:
            box.discard()
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
        await asyncio.wait_for(asyncio.shield(reading), spdy.LINGER)


@dataclass
class _Conn:
    """One accepted connection after its request head."""

    req: Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    activity: _Activity


Backend = Callable[[Stdio], Awaitable[dict[str, Any]]]


class StreamingServer:
    def __init__(self, config: StreamingConfig, targets: Targets) -> None:
        self.config = config
        self.targets = targets
        self.tokens: TokenCache[StreamRequest] = TokenCache(config.token_ttl_seconds)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._backends: set[asyncio.Future[dict[str, Any]]] = (
            set()
        )  # running commands, reaped on stop
        self.base_url = ""

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        host, _, port = self.config.address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        tls = None
        if self.config.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        self._server = await asyncio.start_server(
            self._handle, host, int(port), ssl=tls, limit=64 * 1024
        )
        bound = self._server.sockets[0].getsockname()
        shown = host
        if ipaddress.ip_address(host if host != "localhost" else "127.0.0.1").is_unspecified:
            shown = "127.0.0.1"  # kubelet on this node proxies to us
        if ":" in shown:
            shown = f"[{shown}]"
        self.base_url = f"{'https' if tls else 'http'}://{shown}:{bound[1]}"
        log.info("streaming server on %s", self.base_url)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._backends:  # commands whose clients went away: wait for their cleanup
            await asyncio.gather(*self._backends, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    # -- URLs ------------------------------------------------------------------------

    def url_for(self, request: StreamRequest) -> str:
        return f"{self.base_url}/{_PATHS[type(request)]}/{self.tokens.issue(request)}"

    # -- connections -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        activity = _Activity()
        watchdog = asyncio.ensure_future(self._watch_idle(activity, writer))
        try:
            await self._serve(reader, writer, activity)
        except BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                writer.write(response(exc.status, [], exc.message.encode() + b"\n"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, spdy.ProtocolError) as exc:
            log.debug("streaming connection ended: %s", exc)
        except websocket.ProtocolError as exc:
            log.info("WebSocket protocol error: %s", exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("streaming connection failed")
        finally:
            watchdog.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._connections.discard(task)

    async def _watch_idle(self, activity: _Activity, writer: asyncio.StreamWriter) -> None:
        limit = self.config.idle_timeout_seconds
        while True:
            await asyncio.sleep(min(limit, max(0.05, limit / 4)))
            if time.monotonic() - activity.last >= limit:
                log.info("closing a stream idle for %gs", limit)
                writer.transport.abort()
                return

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: _Activity
    ) -> None:
        try:
            req = await asyncio.wait_for(read_request(reader), HEAD_TIMEOUT)
        except TimeoutError:
            raise BadRequest(408, "request head not received in time") from None
        activity.touch()
        parts = req.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in _PATHS.values():
            raise BadRequest(404, f"no such streaming endpoint: {req.path[:80]}")
        if req.method not in ("GET", "POST"):
            raise BadRequest(405, f"method {req.method[:16]} not allowed")
        upgrade = req.tokens("upgrade")
        is_ws = "websocket" in upgrade
        is_spdy = "spdy/3.1" in upgrade
        if not (is_ws or is_spdy) or "upgrade" not in req.tokens("connection"):
            raise BadRequest(426, "this endpoint needs an upgrade to SPDY/3.1 or WebSocket")
        stream_req = self.tokens.take(parts[1])
        if stream_req is None or _PATHS[type(stream_req)] != parts[0]:
            raise BadRequest(404, "unknown, used or expired streaming token")
        c = _Conn(req, reader, writer, activity)
        if isinstance(stream_req, PortForwardRequest):
            if is_ws:
                await self._ws_portforward(c, stream_req)
            else:
                await self._spdy_portforward(c, stream_req)
            return
        backend = self._backend(stream_req)
        if is_ws:
            await self._ws_remotecommand(c, stream_req, backend)
        else:
            await self._spdy_remotecommand(c, stream_req, backend)

    def _backend(self, r: ExecRequest | AttachRequest) -> Backend:
        async def run(io: Stdio) -> dict[str, Any]:
            t0 = time.monotonic()
            what = f"exec {r.cmd[0][:64]!r} in" if isinstance(r, ExecRequest) else "attach to"
            try:
                target = self.targets.container(r.container_id)
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

    # -- SPDY ------------------------------------------------------------------------------

    async def _spdy_upgrade(
        self, req: Request, writer: asyncio.StreamWriter, supported: tuple[str, ...]
    ) -> str:
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

    async def _spdy_remotecommand(
        self, c: _Conn, r: ExecRequest | AttachRequest, backend: Backend
    ) -> None:
        await self._spdy_upgrade(c.req, c.writer, REMOTECOMMAND_SPDY)
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

        conn = spdy.Connection(c.reader, c.writer, on_stream, c.activity.touch)
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
            await self._run_command(backend, io, streams["error"], serving)
        finally:
            await conn.close(serving)

    async def _run_command(
        self,
        backend: Backend,
        io: Stdio,
        error: Outbound,
        reading: asyncio.Future[None],
    ) -> None:
        """Run the backend; report its status unless the client left first."""
        work = asyncio.ensure_future(backend(io))
        self._backends.add(work)
        work.add_done_callback(self._backends.discard)
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

    async def _spdy_portforward(self, c: _Conn, r: PortForwardRequest) -> None:
        netns = self._netns(r.sandbox_id)
        await self._spdy_upgrade(c.req, c.writer, PORTFORWARD_SPDY)
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
                t = asyncio.ensure_future(self._forward_pair(netns, r.sandbox_id, pair))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        conn = spdy.Connection(c.reader, c.writer, on_stream, c.activity.touch)
        try:
            await conn.serve()  # port-forward lasts until the client ends the session
        finally:
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await conn.close()

    def _netns(self, sandbox_id: str) -> str:
        try:
            return self.targets.sandbox_netns(sandbox_id)
        except SycriError as exc:  # the pod went away since the URL was issued
            raise BadRequest(404, exc.message) from None

    async def _forward_pair(self, netns: str, sandbox: str, pair: dict[str, spdy.Stream]) -> None:
        error, data = pair["error"], pair["data"]
        error.inbox.discard()  # clients never write on it
        raw_port = data.headers.get("port", "")
        try:
            port = int(raw_port)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            await self._forward_failed(error, data, f"invalid port {raw_port[:16]!r}")
            return
        try:
            conn_reader, conn_writer = await portforward.connect(netns, port)
        except OSError as exc:
            msg = f"error forwarding port {port} to pod {sandbox}: {exc.strerror or exc}"
            await self._forward_failed(error, data, msg)
            return
        with contextlib.suppress(ConnectionError):
            await portforward.pump(data.inbox, data, conn_reader, conn_writer)
            await error.close()

    async def _forward_failed(self, error: Outbound, data: spdy.Stream, message: str) -> None:
        data.inbox.discard()
        with contextlib.suppress(ConnectionError):
            await error.write(message.encode())
            await error.close()
            await data.close()

    # -- WebSocket ----------------------------------------------------------------------

    async def _ws_upgrade(
        self, req: Request, writer: asyncio.StreamWriter, supported: tuple[str, ...]
    ) -> str:
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

    async def _ws_remotecommand(
        self, c: _Conn, r: ExecRequest | AttachRequest, backend: Backend
    ) -> None:
        chosen = await self._ws_upgrade(c.req, c.writer, REMOTECOMMAND_WS)
        v5 = chosen == websocket.V5
        ws = websocket.WebSocket(c.reader, c.writer, c.activity.touch)
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
            await self._run_command(backend, io, websocket.ChannelOut(ws, WS_ERROR, False), reading)
            await ws.close()
            await _linger(reading, inboxes.values())
        finally:
            reading.cancel()

    async def _ws_portforward(self, c: _Conn, r: PortForwardRequest) -> None:
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
        if len(ports) > 64:
            raise BadRequest(400, "too many ports in one port-forward")
        netns = self._netns(r.sandbox_id)
        await self._ws_upgrade(c.req, c.writer, PORTFORWARD_WS)
        ws = websocket.WebSocket(c.reader, c.writer, c.activity.touch)
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
                conn_reader, conn_writer = await portforward.connect(netns, port)
            except OSError as exc:
                inboxes[i].discard()
                msg = f"error forwarding port {port} to pod {r.sandbox_id}: {exc.strerror or exc}"
                await websocket.ChannelOut(ws, 2 * i + 1, False).write(msg.encode())
                return
            await portforward.pump(inboxes[i], out, conn_reader, conn_writer)

        reading = asyncio.ensure_future(demux())
        forwards = asyncio.ensure_future(asyncio.gather(*(one(i, p) for i, p in enumerate(ports))))
        try:
            racing: set[asyncio.Future[Any]] = {reading, forwards}
            await asyncio.wait(racing, return_when="FIRST_COMPLETED")

            if forwards.done():
                forwards.result()
                await ws.close()
                await _linger(reading, inboxes)
        finally:
            reading.cancel()
            forwards.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await forwards

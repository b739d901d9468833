"""The streaming HTTP server: single-use URLs for exec, attach and port-forward.

kubelet asks sycri (CRI Exec/Attach/PortForward) for a URL, then proxies the
client's upgraded connection to it. One connection = one request: the token in the
path is taken (so it works once, and only before it expires), the upgrade picks
SPDY/3.1 or WebSocket, and the session runs on the event loop alongside the gRPC
server. A connection with no traffic for ``idle_timeout_seconds`` is closed. The
sessions themselves are ``remotecommand`` (exec, attach) and ``portforward``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time

from sycri.config import StreamingConfig
from sycri.errors import SycriError
from sycri.streaming import portforward, remotecommand, spdy, websocket
from sycri.streaming.targets import Targets
from sycri.streaming.tokens import AttachRequest, ExecRequest, PortForwardRequest, TokenCache
from sycri.streaming.upgrade import MAX_HEAD, BadRequest, Conn, read_request, response

log = logging.getLogger("sycri.streaming")

HEAD_TIMEOUT = 30.0  # a client that never finishes its request head is dropped

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


class StreamingServer:
    def __init__(self, config: StreamingConfig, targets: Targets) -> None:
        self.config = config
        self.targets = targets
        self.tokens: TokenCache[StreamRequest] = TokenCache(config.token_ttl_seconds)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._commands: remotecommand.Running = set()  # exec/attach under way, reaped on stop
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
            self._handle, host, int(port), ssl=tls, limit=MAX_HEAD
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
        if self._commands:  # commands whose clients went away: wait for their cleanup
            await asyncio.gather(*self._commands, return_exceptions=True)
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
        c = Conn(req, reader, writer, activity.touch)
        if isinstance(stream_req, PortForwardRequest):
            serve_pf = portforward.serve_websocket if is_ws else portforward.serve_spdy
            await serve_pf(c, stream_req, self._netns)
            return
        run = remotecommand.backend(self.targets, stream_req)
        serve_rc = remotecommand.serve_websocket if is_ws else remotecommand.serve_spdy
        await serve_rc(c, stream_req, run, self._commands)

    def _netns(self, sandbox_id: str) -> str:
        try:
            return self.targets.sandbox_netns(sandbox_id)
        except SycriError as exc:  # the pod went away since the URL was issued
            raise BadRequest(404, exc.message) from None

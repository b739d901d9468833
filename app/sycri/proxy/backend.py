"""One runtime behind the proxy: a name, a socket, and raw-bytes calls to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from sycri.errors import SycriError, Unavailable

# gRPC's default reconnect back-off grows to two minutes: a backend that restarted
# (sycri's upgrade) would stay "unavailable" to kubelet long after it is back. A local
# socket is cheap to retry, so the proxy retries within a second.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

CONNECT_WAIT_SECONDS = 2.0


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    """gRPC found no connection: the call never reached the backend (safe to repeat)."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (
        exc.details() or ""
    )


@dataclass
class Backend:
    """A CRI server the proxy forwards to. ``name`` is what errors and logs call it."""

    name: str  # "sycri" or "runtime" (the node's existing runtime)
    endpoint: str  # unix:///run/containerd/containerd.sock
    _channel: grpc.aio.Channel | None = field(default=None, repr=False)

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.endpoint, options=CHANNEL_OPTIONS)
        return self._channel

    async def unary(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        """Forward serialized ``request``; a gRPC failure becomes a BackendError."""
        # no serializers: the bytes pass through as they came
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(method)
        # at most half of the caller's time goes to waiting for a reconnect
        wait = CONNECT_WAIT_SECONDS if timeout is None else min(CONNECT_WAIT_SECONDS, timeout / 2)
        try:
            return await call(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if not (_never_sent(exc) and await self._reconnected(wait)):
                raise BackendError.of(self, exc) from None
        try:  # once more: the backend is back (sycri restarted) and never saw the call
            return await call(request, timeout=None if timeout is None else timeout - wait)
        except grpc.aio.AioRpcError as exc:
            raise BackendError.of(self, exc) from None

    async def _reconnected(self, wait: float) -> bool:
        """After a failed connect gRPC fails calls at once until its back-off has
        passed; a backend that just came back is given a moment to be connected."""
        try:
            await asyncio.wait_for(self.channel.channel_ready(), wait)
        except TimeoutError:
            return False
        return True

    async def stream(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        stub: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = self.channel.unary_stream(method)
        call = stub(request)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise BackendError.of(self, exc) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class BackendError(SycriError):
    """A backend's own answer (its status passes through to kubelet unchanged), or
    UNAVAILABLE naming the backend that could not be reached."""

    def __init__(self, backend: Backend, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.code = code

    @classmethod
    def of(cls, backend: Backend, exc: grpc.aio.AioRpcError) -> BackendError:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return cls.unavailable(backend, exc.details() or "")
        return cls(backend, code, exc.details() or "")

    @classmethod
    def unavailable(cls, backend: Backend, why: str) -> BackendError:
        return cls(
            backend,
            Unavailable.code,
            f"{backend.name} ({backend.endpoint}) is unavailable: {why}",
        )

    @property
    def unreachable(self) -> bool:
        return self.code == grpc.StatusCode.UNAVAILABLE

"""One wrapper around every CRI RPC, and the gRPC handlers built from the proto.

Handlers live in the RPC-family modules of this package (``runtime_info``, ``image``,
``sandbox``, ...), each exporting ``RPCS: dict[str, Handler]``. A unary handler is
``async def h(node, request) -> response``; a server-streaming one is an async
generator ``async def h(node, request)`` that yields responses. Every method of the
proto gets a gRPC handler here: implemented ones go through :func:`_instrumented`
(debug log with credentials redacted, the error mapping, observers for metrics and
traces); the rest answer UNIMPLEMENTED naming the RPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

import grpc
from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message

from sycri.api import api_pb2
from sycri.cri.wire import Encoded, as_message
from sycri.errors import InvalidArgument, SycriError, excerpt

log = logging.getLogger("sycri.rpc")

SERVICES = ("RuntimeService", "ImageService")

Handler = Callable[..., Any]
_Context = grpc.aio.ServicerContext[bytes, Message]


# Why an RPC sycri does not serve is not there, for the few where the reason is known.
_CRIU = (
    "checkpoint/restore needs CRIU 4.1 or later; Debian 12's criu 3.17 cannot run on "
    "kernels 6.13 and later (docs/hpc.md)"
)
WHY_NOT: dict[str, str] = {
    "CheckpointContainer": _CRIU,
    "CheckpointPod": _CRIU,
    "RestorePod": _CRIU,
}


def _unimplemented(md: MethodDescriptor) -> str:
    """The UNIMPLEMENTED message: the RPC's full name, and why where that is known."""
    why = WHY_NOT.get(md.name)
    return f"{md.containing_service.name}.{md.name} is not implemented by sycri" + (
        f": {why}" if why else " yet"
    )


class RpcObserver(Protocol):
    """Told about every RPC; metrics and tracing plug in here."""

    def started(self, method: str) -> None: ...

    def finished(self, method: str, code: grpc.StatusCode, seconds: float) -> None: ...

    # Optional: ``failed(method, code, exc)`` is called, inside the RPC's server span,
    # with the exception a handler raised (domain error or bug) before it is answered.


def redacted(message: Message) -> Message:
    """A copy with every ``debug_redact`` field (passwords, tokens) replaced."""
    copy = type(message)()
    copy.CopyFrom(message)
    _redact(copy)
    return copy


def _redact(message: Message) -> None:
    for fd, value in message.ListFields():
        if fd.GetOptions().debug_redact:
            if fd.type == fd.TYPE_STRING:
                setattr(message, fd.name, "<redacted>")
            else:
                message.ClearField(fd.name)
        elif fd.type == fd.TYPE_MESSAGE:
            if fd.is_repeated:
                items = value.values() if _is_map(fd) else value
                for item in items:
                    if isinstance(item, Message):
                        _redact(item)
            else:
                _redact(value)


def _short(message: Message) -> str:
    return text_format.MessageToString(redacted(message), as_one_line=True)[:2000]


def decode(md: MethodDescriptor, data: bytes, cls: type[Message] | None = None) -> Message:
    """The request message of ``md`` (of class ``cls``, when the caller has it) from its
    wire bytes; InvalidArgument naming the RPC (and the field, for a string with a NUL
    byte in it).

    gRPC would call a deserializer before any handler runs and answer UNKNOWN when it
    raises, so the handlers get raw bytes and decode them here, inside the wrapper.
    """
    if cls is None:
        cls = message_factory.GetMessageClass(md.input_type)
    try:
        request = cls.FromString(data)
    except (DecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(
            f"{md.name}: the request is not a valid {md.input_type.name} "
            f"(bad bytes or a string that is not UTF-8): {exc}"
        ) from None
    bad = nul_field(request)
    if bad:
        raise InvalidArgument(f"{md.name}: {bad} contains a NUL byte")
    return request


# Free text that only travels as data (JSON in the OCI spec, status replies): a NUL in
# it reaches no system call, and Kubernetes allows any string there.
_FREE_TEXT = frozenset({"annotations"})


def nul_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first string field holding a NUL byte, or None.

    Paths, commands, names and environment end up in system calls, where Python
    refuses a NUL (``embedded null byte``) and C silently cuts the string short.
    """
    for fd, value in message.ListFields():
        path = prefix + fd.name
        if fd.type == fd.TYPE_STRING:
            if not fd.is_repeated:
                if "\x00" in value:
                    return path
                continue
            for i, item in enumerate(value):
                if "\x00" in item:
                    return f"{path}[{i}]"
        elif fd.type == fd.TYPE_MESSAGE:
            if _is_map(fd):
                if fd.name in _FREE_TEXT:
                    continue
                for k, v in value.items():
                    if "\x00" in str(k) or (isinstance(v, str) and "\x00" in v):
                        return f"{path}[{excerpt(k)}]"
                    if isinstance(v, Message):
                        found = nul_field(v, f"{path}[{excerpt(k)}].")
                        if found:
                            return found
            elif fd.is_repeated:
                for i, item in enumerate(value):
                    found = nul_field(item, f"{path}[{i}].")
                    if found:
                        return found
            else:
                found = nul_field(value, path + ".")
                if found:
                    return found
    return None


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _error_status(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, SycriError):
        return exc.code, exc.message
    log.exception("%s failed unexpectedly", method)
    return grpc.StatusCode.INTERNAL, f"{method}: internal error: {type(exc).__name__}: {exc}"


# How loud a failed RPC is in sycri's log. NOT_FOUND is an answer, not a fault: kubelet
# asks for the status of containers it has just removed on every sync.
_LEVELS = {grpc.StatusCode.INTERNAL: logging.ERROR, grpc.StatusCode.NOT_FOUND: logging.DEBUG}


class Dispatcher:
    """Builds the generic gRPC handlers for both CRI services."""

    def __init__(
        self, node: Any, handlers: dict[str, Handler], observers: Iterable[RpcObserver] = ()
    ):
        self.node = node
        self.handlers = handlers
        self.observers = list(observers)

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        out = []
        for service_name in SERVICES:
            service = api_pb2.DESCRIPTOR.services_by_name[service_name]
            methods = {m.name: self._method_handler(m) for m in service.methods}
            out.append(grpc.method_handlers_generic_handler(service.full_name, methods))
        return out

    def _method_handler(self, md: MethodDescriptor) -> grpc.RpcMethodHandler[bytes, Message]:
        # No request deserializer: the behaviour gets the raw bytes (see :func:`decode`).
        serialize = _serializer(message_factory.GetMessageClass(md.output_type))
        fn = self.handlers.get(md.name)
        if md.server_streaming:
            behaviour = self._stream(md, fn)
            return grpc.unary_stream_rpc_method_handler(behaviour, None, serialize)
        return grpc.unary_unary_rpc_method_handler(self._unary(md, fn), None, serialize)

    def _notify_start(self, name: str) -> float:
        for obs in self.observers:
            obs.started(name)
        return time.monotonic()

    def _notify_error(self, name: str, code: grpc.StatusCode, exc: BaseException) -> None:
        for obs in self.observers:
            failed = getattr(obs, "failed", None)
            if failed is not None:
                failed(name, code, exc)

    def _failed(self, name: str, exc: Exception, t0: float) -> tuple[grpc.StatusCode, str]:
        """Map a handler's exception, log it and tell observers, before the abort sends it."""
        code, msg = _error_status(exc, name)
        self._notify_error(name, code, exc)
        log.log(_LEVELS.get(code, logging.WARNING), "%s: %s: %s", name, code.name, msg)
        self._notify_end(name, code, t0)
        return code, msg

    def _notify_end(self, name: str, code: grpc.StatusCode, t0: float) -> None:
        elapsed = time.monotonic() - t0
        for obs in self.observers:
            obs.finished(name, code, elapsed)

    def _unary(
        self, md: MethodDescriptor, fn: Handler | None
    ) -> Callable[[bytes, _Context], Awaitable[Message | Encoded]]:
        name = md.name
        unimplemented = _unimplemented(md)
        request_class = message_factory.GetMessageClass(md.input_type)
        node = self.node
        # Bound once: this runs for every call kubelet makes.
        starts = [obs.started for obs in self.observers]
        ends = [obs.finished for obs in self.observers]
        monotonic, ok = time.monotonic, grpc.StatusCode.OK

        async def behaviour(raw: bytes, context: _Context) -> Message | Encoded:
            for started in starts:
                started(name)
            t0 = monotonic()
            code = ok
            ended = False  # an abort sends the status at once: observers hear of it first
            try:
                if fn is None:
                    code, ended = grpc.StatusCode.UNIMPLEMENTED, True
                    self._notify_end(name, code, t0)
                    await context.abort(code, unimplemented)
                try:
                    request = decode(md, raw, request_class)
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("%s request: %s", name, _short(request))
                    response: Message | Encoded = await fn(node, request)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    code, msg = self._failed(name, exc, t0)
                    ended = True
                    await context.abort(code, msg)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s response: %s", name, _short(as_message(response)))
                return response
            except BaseException as exc:
                if code == ok:
                    code = grpc.StatusCode.CANCELLED if _is_cancel(exc) else grpc.StatusCode.UNKNOWN
                raise
            finally:
                if not ended:
                    elapsed = monotonic() - t0
                    for finished in ends:
                        finished(name, code, elapsed)

        return behaviour

    def _stream(
        self, md: MethodDescriptor, fn: Handler | None
    ) -> Callable[[bytes, _Context], AsyncIterator[Message]]:
        name = md.name
        unimplemented = _unimplemented(md)

        request_class = message_factory.GetMessageClass(md.input_type)

        async def behaviour(raw: bytes, context: _Context) -> AsyncIterator[Message]:
            t0 = self._notify_start(name)
            code = grpc.StatusCode.OK
            ended = False  # an abort sends the status at once: observers hear of it first
            try:
                if fn is None:
                    code, ended = grpc.StatusCode.UNIMPLEMENTED, True
                    self._notify_end(name, code, t0)
                    await context.abort(code, unimplemented)
                try:
                    request = decode(md, raw, request_class)
                    async for item in fn(self.node, request):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    code, msg = self._failed(name, exc, t0)
                    ended = True
                    await context.abort(code, msg)
            except BaseException as exc:
                if code == grpc.StatusCode.OK:
                    code = grpc.StatusCode.CANCELLED if _is_cancel(exc) else grpc.StatusCode.UNKNOWN
                raise
            finally:
                if not ended:
                    self._notify_end(name, code, t0)

        return behaviour


def _serializer(message_class: type[Message]) -> Callable[[Message | Encoded], bytes]:
    """The reply's bytes: an :class:`Encoded` reply is sent as it is."""
    plain = message_class.SerializeToString

    def serialize(reply: Message | Encoded) -> bytes:
        if type(reply) is Encoded:
            return reply.data
        data: bytes = plain(reply)  # type: ignore[arg-type]
        return data

    return serialize


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | GeneratorExit)

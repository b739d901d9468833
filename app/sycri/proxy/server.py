"""The proxy's gRPC server: one generic handler for every CRI method.

Requests and responses stay serialized bytes end to end; only the few requests whose
route needs a field are decoded, and only list responses are read (to learn owners).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError

from sycri.api import api_pb2
from sycri.proxy import merge, routes
from sycri.proxy.backend import Backend, BackendError
from sycri.proxy.owners import Owners, listed_ids
from sycri.proxy.routes import Kind
from sycri.proxy.settings import ProxySettings

log = logging.getLogger("sycri.proxy")

RECONNECT_SECONDS = 1.0  # how soon an event stream to a restarted backend is reopened
EVENT_QUEUE = 1000
_RUN_RESPONSES: dict[str, type[api_pb2.RunPodSandboxResponse | api_pb2.RestorePodResponse]] = {
    routes.RUNTIME + "RunPodSandbox": api_pb2.RunPodSandboxResponse,
    routes.RUNTIME + "RestorePod": api_pb2.RestorePodResponse,
}


class Proxy:
    """Routing over the two backends; one instance per server."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.handlers = frozenset(settings.sycri_handlers)
        self.primary = Backend("runtime", settings.runtime_endpoint)
        self.sycri = Backend("sycri", settings.sycri_endpoint)
        self.owners = Owners(self.primary, self.sycri)

    def by_handler(self, handler: str) -> Backend:
        return self.sycri if handler in self.handlers else self.primary

    # --- unary --------------------------------------------------------------------

    async def unary(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        try:
            return await self._unary(method, request, context.time_remaining())
        except DecodeError:
            name = routes.route(method).request_name()
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request is not a {name}"
            )
            raise AssertionError("unreachable") from None
        except BackendError as exc:
            if exc.unreachable:
                log.warning("%s: %s", method, exc.message)
            await context.abort(exc.code, exc.message)
            raise AssertionError("unreachable") from None

    async def _unary(self, method: str, request: bytes, timeout: float | None) -> bytes:
        route = routes.route(method)
        kind = route.kind
        if kind is Kind.PRIMARY:
            return await self.primary.unary(method, request, timeout)
        if kind is Kind.RUN_POD:
            run = route.decode(request)
            assert isinstance(run, api_pb2.RunPodSandboxRequest | api_pb2.RestorePodRequest)
            backend = self.by_handler(run.runtime_handler)
            raw = await backend.unary(method, request, timeout)
            resp = _RUN_RESPONSES[method].FromString(raw)
            self.owners.remember(backend, [resp.pod_sandbox_id])
            return raw
        if kind in (Kind.BY_POD, Kind.BY_CONTAINER):
            id_ = route.id_of(request)
            backend = await self.owners.of(id_)
            if backend is self.sycri and method.endswith("/CreateContainer"):
                request = await self._image_for_sycri(request, timeout)
            raw = await backend.unary(method, request, timeout)
            if method.endswith("/CreateContainer"):
                cid = api_pb2.CreateContainerResponse.FromString(raw).container_id
                self.owners.remember(backend, [cid])
            elif method.endswith(("/RemovePodSandbox", "/RemoveContainer")):
                self.owners.forget(id_)
            return raw
        if kind is Kind.MERGE:
            primary, sycri = await self._both(method, request, timeout)
            if method in routes.LISTINGS:
                self.owners.remember(self.primary, listed_ids(method, primary))
                self.owners.remember(self.sycri, listed_ids(method, sycri))
            return primary + sycri
        if kind is Kind.STATUS:
            return await self._status(method, request, timeout)
        if kind is Kind.BROADCAST:
            raw = await self.primary.unary(method, request, timeout)
            try:
                await self.sycri.unary(method, request, timeout)
            except BackendError as exc:
                log.warning("%s: sycri did not take it: %s", method, exc.message)
            return raw
        if kind is Kind.IMAGE:
            status = api_pb2.ImageStatusRequest.FromString(request)
            handler = status.image.runtime_handler
            return await self.by_handler(handler).unary(method, request, timeout)
        if kind is Kind.PULL:
            pull = api_pb2.PullImageRequest.FromString(request)
            backend = await self._pull_backend(pull)
            return await backend.unary(method, request, timeout)
        if kind is Kind.REMOVE_IMAGE:
            remove = api_pb2.RemoveImageRequest.FromString(request)
            if remove.image.runtime_handler:
                return await self.by_handler(remove.image.runtime_handler).unary(
                    method, request, timeout
                )
            return await self._remove_image(method, request, timeout)
        raise AssertionError(f"{method}: no unary route for {kind}")

    async def _both(
        self, method: str, request: bytes, timeout: float | None
    ) -> tuple[bytes, bytes]:
        """Both answers, or the error of the first that failed: a merged list never
        leaves out one backend's pods, which kubelet would take for gone."""
        results = await asyncio.gather(
            self.primary.unary(method, request, timeout),
            self.sycri.unary(method, request, timeout),
            return_exceptions=True,
        )
        primary, sycri = results
        if isinstance(primary, BaseException):
            raise primary
        if isinstance(sycri, BaseException):
            raise sycri
        return primary, sycri

    async def _status(self, method: str, request: bytes, timeout: float | None) -> bytes:
        primary_raw, sycri_raw = await asyncio.gather(
            self.primary.unary(method, request, timeout),
            self.sycri.unary(method, request, timeout),
            return_exceptions=True,
        )
        if isinstance(primary_raw, BaseException):
            raise primary_raw
        primary = api_pb2.StatusResponse.FromString(primary_raw)
        if isinstance(sycri_raw, BackendError):
            merged = merge.status(primary, None, self.handlers, sycri_raw.message)
        elif isinstance(sycri_raw, BaseException):
            raise sycri_raw
        else:
            sycri = api_pb2.StatusResponse.FromString(sycri_raw)
            merged = merge.status(primary, sycri, self.handlers)
        return merged.SerializeToString()

    async def _pull_backend(self, req: api_pb2.PullImageRequest) -> Backend:
        """Where a pull goes: the image's runtime handler when kubelet sets it
        (RuntimeClassInImageCriApi), else the backend that runs the pod it is for
        (kubelet pulls after RunPodSandbox), else the existing runtime."""
        if req.image.runtime_handler:
            return self.by_handler(req.image.runtime_handler)
        uid = req.sandbox_config.metadata.uid
        if not uid:
            return self.primary
        for backend in (self.primary, self.sycri):
            raw = await backend.unary(routes.RUNTIME + "ListPodSandbox", b"", timeout=10)
            items = api_pb2.ListPodSandboxResponse.FromString(raw).items
            if any(p.metadata.uid == uid for p in items):
                return backend
        return self.primary

    async def _image_for_sycri(self, request: bytes, timeout: float | None) -> bytes:
        """A container for sycri whose image sycri lacks: pulled into sycri first.

        Without the RuntimeClassInImageCriApi gate kubelet's ImageStatus carries no
        handler and is answered by the existing runtime; when that one has the image,
        kubelet skips the pull and names the existing runtime's image id here. sycri
        pulls the image kubelet's user named (with sycri's own registry credentials) and
        the request is given sycri's reference instead."""
        req = api_pb2.CreateContainerRequest.FromString(request)
        spec = req.config.image
        status = api_pb2.ImageStatusRequest(image=spec).SerializeToString()
        raw = await self.sycri.unary(routes.IMAGES + "ImageStatus", status, timeout)
        if api_pb2.ImageStatusResponse.FromString(raw).image.id or not spec.user_specified_image:
            return request  # sycri has it, or names what it lacks in its own error
        pull = api_pb2.PullImageRequest(
            image=api_pb2.ImageSpec(
                image=spec.user_specified_image,
                annotations=spec.annotations,
                runtime_handler=spec.runtime_handler,
            ),
            sandbox_config=req.sandbox_config,
        )
        log.info(
            "pulling %s into sycri for a container kubelet did not pull it for",
            spec.user_specified_image,
        )
        raw = await self.sycri.unary(routes.IMAGES + "PullImage", pull.SerializeToString(), timeout)
        req.config.image.image = api_pb2.PullImageResponse.FromString(raw).image_ref
        return req.SerializeToString()

    async def _remove_image(self, method: str, request: bytes, timeout: float | None) -> bytes:
        """Without a handler an image id may be either backend's: both are asked, and
        one that does not have it is not an error."""
        results = await asyncio.gather(
            self.primary.unary(method, request, timeout),
            self.sycri.unary(method, request, timeout),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        for err in errors:
            if not (isinstance(err, BackendError) and err.code == grpc.StatusCode.NOT_FOUND):
                raise err
        if len(errors) == 2:
            raise errors[0]
        return next(r for r in results if isinstance(r, bytes))

    # --- streaming ----------------------------------------------------------------

    async def stream(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        try:
            if routes.route(method).kind is Kind.EVENTS:
                async for message in self._events(method, request):
                    yield message
                return
            # Both must be reachable before the first message: never half a listing.
            for backend in (self.primary, self.sycri):
                await backend.unary(routes.RUNTIME + "Version", b"", timeout=10)
            for backend in (self.primary, self.sycri):
                async for message in backend.stream(method, request):
                    yield message
        except BackendError as exc:
            await context.abort(exc.code, exc.message)

    async def _events(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        """Both backends' container events for as long as kubelet listens. A backend
        that goes away (a sycri restart) is reopened every second; kubelet's relist
        covers what happened meanwhile."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(EVENT_QUEUE)

        async def pump(backend: Backend) -> None:
            while True:
                try:
                    async for event in backend.stream(method, request):
                        await queue.put(event)
                except BackendError as exc:
                    if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                        # containerd before 1.7: kubelet's relist is all it gets
                        log.info("%s has no container events: %s", backend.name, exc.message)
                        return
                    log.debug("events from %s: %s", backend.name, exc.message)
                await asyncio.sleep(RECONNECT_SECONDS)

        tasks = [asyncio.create_task(pump(b)) for b in (self.primary, self.sycri)]
        try:
            while True:
                yield await queue.get()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.primary.close()
        await self.sycri.close()


class _Generic(grpc.GenericRpcHandler):
    """Every method, known or not, with raw bytes in and out."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def service(
        self, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = details.method
        proxy = self.proxy
        if method in routes.STREAMING:

            async def streaming(
                request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
            ) -> AsyncIterator[bytes]:
                async for message in proxy.stream(method, request, context):
                    yield message

            return grpc.unary_stream_rpc_method_handler(streaming)

        async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return await proxy.unary(method, request, context)

        return grpc.unary_unary_rpc_method_handler(unary)


async def serve(settings: ProxySettings, ready: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the socket is replaced if a previous proxy left it."""
    proxy = Proxy(settings)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers([_Generic(proxy)])
    path = settings.listen_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server.add_insecure_port(settings.listen)
    await server.start()
    os.chmod(path, 0o660)
    log.info(
        "proxy serving %s: handlers %s to sycri (%s), the rest to %s",
        settings.listen,
        ",".join(settings.sycri_handlers),
        settings.sycri_endpoint,
        settings.runtime_endpoint,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    await server.stop(5)
    await proxy.close()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return 0

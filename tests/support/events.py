"""A GetContainerEvents client read on a thread, as kubelet's evented PLEG reads it."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import grpc
from sycri.api import api_pb2

from tests.support.server import SycriServer


class EventStream:
    """Every container event from the moment it is made; :meth:`close` ends the call."""

    def __init__(self, server: SycriServer):
        self.call = server.runtime().GetContainerEvents(api_pb2.GetEventsRequest())
        self.events: queue.Queue[api_pb2.ContainerEventResponse] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for ev in self.call:
                self.events.put(ev)
        except grpc.RpcError:
            pass

    def _first(
        self, match: Callable[[api_pb2.ContainerEventResponse], bool], what: str, timeout: float
    ) -> api_pb2.ContainerEventResponse:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {what}"
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                raise AssertionError(f"no {what}") from None
            if match(ev):
                return ev

    def wait_for(self, cid: str, kind: int, timeout: float = 20) -> api_pb2.ContainerEventResponse:
        """The next event of ``kind`` for ``cid`` (those before it are passed over)."""
        return self._first(
            lambda ev: ev.container_id == cid and ev.container_event_type == kind,
            f"event {kind} for {cid}",
            timeout,
        )

    def next_for(self, cid: str, timeout: float = 20) -> api_pb2.ContainerEventResponse:
        """The next event of any kind for ``cid``."""
        return self._first(lambda ev: ev.container_id == cid, f"event for {cid}", timeout)

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(10)

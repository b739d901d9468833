"""Container lifecycle events, fanned out to every subscriber (kubelet's evented PLEG).

Publishing never waits: each subscriber has a bounded buffer, and when it is full the
oldest event is dropped and counted (per subscriber and in total), so a stuck
``GetContainerEvents`` client cannot slow down container operations. kubelet relists
periodically anyway, so a dropped event delays its view, it does not corrupt it.

An event carries a snapshot taken when it is published (the pod's and containers'
statuses, built by the ``snapshot`` hook), because a DELETED container has no status to
look up later.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger("sycri.events")

DEFAULT_BUFFER = 1000


class ContainerEventType(enum.IntEnum):
    # Same numbers as the CRI's ContainerEventType.
    CREATED = 0
    STARTED = 1
    STOPPED = 2
    DELETED = 3


@dataclass(frozen=True)
class ContainerEvent:
    container_id: str
    type: ContainerEventType
    pod_sandbox_id: str
    created_at: int = field(default_factory=time.time_ns)  # ns since the epoch
    snapshot: Any = None  # what the snapshot hook returned at publish time


class Subscription:
    """One subscriber's bounded buffer; iterate it with ``async for``."""

    def __init__(self, bus: EventBus, maxsize: int, loop: asyncio.AbstractEventLoop):
        self._bus = bus
        self._buf: deque[ContainerEvent] = deque()
        self._maxsize = maxsize
        self._loop = loop
        self._wake = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def _offer(self, event: ContainerEvent) -> int:
        """Append (on the subscriber's loop); returns how many events were dropped."""
        if self.closed:
            return 0
        dropped = 0
        if len(self._buf) >= self._maxsize:
            self._buf.popleft()
            self.dropped += 1
            dropped = 1
        self._buf.append(event)
        self._wake.set()
        return dropped

    def pending(self) -> int:
        return len(self._buf)

    async def get(self) -> ContainerEvent:
        while not self._buf:
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._buf.popleft()

    def __aiter__(self) -> AsyncIterator[ContainerEvent]:
        return self

    async def __anext__(self) -> ContainerEvent:
        return await self.get()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._wake.set()
            self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of :class:`ContainerEvent` to subscribers. ``publish`` is thread-safe."""

    def __init__(
        self,
        buffer: int = DEFAULT_BUFFER,
        snapshot: Callable[[ContainerEvent], Any] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ):
        if buffer < 1:
            raise ValueError("event buffer must hold at least one event")
        self.buffer = buffer
        self.snapshot = snapshot
        self.on_drop = on_drop  # told how many events were dropped (a metrics counter)
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0
        self.dropped_total = 0

    def subscribe(self, buffer: int | None = None) -> Subscription:
        """A new subscriber on the running loop; close it (or use ``with``) when done."""
        sub = Subscription(self, buffer or self.buffer, asyncio.get_running_loop())
        with self._lock:
            self._subs.append(sub)
        return sub

    def close_all(self) -> None:
        """End every subscription (on shutdown): each stream sends what it holds and
        then finishes, so kubelet reconnects to the next sycri at once instead of the
        drain waiting out its grace period for streams that never end."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._loop.call_soon_threadsafe(sub.close)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, event: ContainerEvent) -> ContainerEvent:
        """Deliver to every subscriber without waiting; returns the event as sent."""
        with self._lock:
            subs = list(self._subs)
            self.published += 1
        if subs and self.snapshot is not None and event.snapshot is None:
            try:
                event = replace(event, snapshot=self.snapshot(event))
            except Exception:  # a broken snapshot must not stop the event
                log.exception(
                    "snapshot for %s event of %s failed", event.type.name, event.container_id
                )
        for sub in subs:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is sub._loop:
                self._count(sub._offer(event))
            else:
                try:
                    sub._loop.call_soon_threadsafe(self._deliver, sub, event)
                except RuntimeError:  # that loop is closed: the subscriber is gone
                    sub.close()
        return event

    def _deliver(self, sub: Subscription, event: ContainerEvent) -> None:
        self._count(sub._offer(event))

    def _count(self, dropped: int) -> None:
        if dropped:
            with self._lock:
                self.dropped_total += dropped
            if self.on_drop is not None:
                try:
                    self.on_drop(dropped)
                except Exception:
                    log.exception("event drop hook failed")

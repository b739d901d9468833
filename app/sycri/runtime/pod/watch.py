"""Watching a pod's init (catatonit): its exit is seen when it happens, not when
someone asks.

A pidfd becomes readable when its process exits, whoever its parent is (catatonit is
not sycri's child after a restart), and the event loop waits on it like a socket: no
polling, no thread. The pid is checked by start time after the pidfd is opened, so a
recycled pid is never watched in the init's place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from sycri.runtime.pod import pod_init

log = logging.getLogger("sycri.sandboxes")


class InitWatch:
    """pidfds of the pods' inits, each calling ``on_exit(pod id)`` once when it exits."""

    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self.on_exit = on_exit
        self._fds: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, pod_id: str, pid: int | None, start: int | None) -> None:
        """Watch ``pid`` (started at ``start``) for ``pod_id``; an init already gone is
        reported at once (from the event loop, not from this call)."""
        self.unwatch(pod_id)
        loop = self._loop = asyncio.get_running_loop()
        if pid is None or start is None:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone (ESRCH) before we looked
            loop.call_soon(self.on_exit, pod_id)
            return
        if not pod_init.alive(pid, start):  # exited, or the pid is another process's now
            os.close(fd)
            loop.call_soon(self.on_exit, pod_id)
            return
        self._fds[pod_id] = fd
        loop.add_reader(fd, self._exited, pod_id)

    def _exited(self, pod_id: str) -> None:
        self.unwatch(pod_id)
        self.on_exit(pod_id)

    def unwatch(self, pod_id: str) -> None:
        fd = self._fds.pop(pod_id, None)
        if fd is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def close(self) -> None:
        for pod_id in list(self._fds):
            self.unwatch(pod_id)

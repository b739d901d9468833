"""The CNI CHECK a verbose PodSandboxStatus reports, kept so that the call never waits
on a plugin.

A CHECK runs the whole plugin chain (bridge, host-local, portmap: a process each, tens
of milliseconds), and a status call should cost what a read of memory costs. So each
pod's last CHECK is kept with the time it ran: a verbose status reports it at once and,
when it is older than ``max_age`` seconds (or there is none yet), starts a new one in
the background, one at a time per pod, which the next call reports (a pod's
successful ADD at RunPodSandbox counts as its first CHECK). A network that
breaks shows in the first verbose status asked after the next CHECK has run, and the
reply always says when that was. kubelet never asks for verbose; ``crictl inspectp``
does.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sycri.runtime.pod.sandbox import Sandbox

log = logging.getLogger("sycri.sandboxes")

MAX_AGE = 5.0  # seconds a CHECK's result is reported before a new one starts
NOT_ATTACHED = "not attached"
PENDING = "not checked yet: a CNI CHECK has started; ask again for its result"


@dataclass(frozen=True)
class NetCheck:
    result: str  # "ok", NOT_ATTACHED, PENDING, or the plugin's error
    checked_at: int = 0  # ns since the epoch when the CHECK started; 0: none has run

    def when(self) -> str:
        """``checked_at`` in RFC 3339 (UTC), or "" when no CHECK has run."""
        if not self.checked_at:
            return ""
        t = datetime.datetime.fromtimestamp(self.checked_at / 1e9, datetime.UTC)
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attached(sb: Sandbox) -> bool:
    """Whether the pod has a CNI attachment a CHECK can look at."""
    return bool(sb.ready and sb.network_up and sb.network and sb.cni_result)


class NetworkChecks:
    """The last CNI CHECK of each pod, refreshed in the background."""

    def __init__(
        self,
        run_check: Callable[[Sandbox], Awaitable[str]],
        max_age: float = MAX_AGE,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.run_check = run_check
        self.max_age = max_age
        self.clock = clock
        self._last: dict[str, NetCheck] = {}
        self._running: dict[str, asyncio.Task[NetCheck]] = {}

    def added(self, sb: Sandbox, at: int) -> None:
        """The pod's ADD, begun at ``at``, succeeded: that is its first CHECK. A
        verbose status of a pod just started then costs no plugin run."""
        if attached(sb):
            self._last[sb.id] = NetCheck("ok", at)

    def report(self, sb: Sandbox) -> NetCheck:
        """What a verbose status says of the pod's network, from memory. Starts a CHECK
        in the background when the last one is older than ``max_age`` or none ran."""
        if not attached(sb):
            return NetCheck(NOT_ATTACHED)
        last = self._last.get(sb.id)
        if last is None or self.clock() - last.checked_at > self.max_age * 1e9:
            self._start(sb)
        return last or NetCheck(PENDING)

    def _start(self, sb: Sandbox) -> None:
        if sb.id in self._running:
            return
        task = asyncio.get_running_loop().create_task(self.refresh(sb))
        self._running[sb.id] = task
        task.add_done_callback(lambda _: self._running.pop(sb.id, None))

    async def refresh(self, sb: Sandbox) -> NetCheck:
        """Run a CHECK now and keep its result."""
        started = self.clock()
        try:
            result = await self.run_check(sb)
        except Exception as exc:  # a bug must not leave the result pending forever
            log.exception("CNI CHECK of pod sandbox %s", sb.id[:12])
            result = f"the CHECK could not run: {exc!r}"
        check = NetCheck(result, started)
        self._last[sb.id] = check
        return check

    async def idle(self) -> None:
        """Wait for the CHECKs running in the background (tests drive refreshes with it)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    def forget(self, pod_id: str) -> None:
        """The pod is gone: its result goes, a CHECK in flight is cancelled."""
        self._last.pop(pod_id, None)
        task = self._running.pop(pod_id, None)
        if task is not None:
            task.cancel()

    def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()

"""Finishing what a crash or a failed teardown left, at start-up and while sycri runs.

At start-up (containers first: finishing a pod removal removes its containers):

- a pod still "creating" was cut short by a crash: it is marked failed (NOTREADY,
  listed) and torn down, its unrecorded init found by its environment;
- a failed pod, or a removal a crash cut short, is torn down again;
- a READY pod whose namespaces or init are gone is NOTREADY; one whose init lives is
  watched again.

A teardown that still leaves something keeps the record, with what is left, and is
tried again every ``retry_interval`` seconds, and by kubelet's next Stop or Remove.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from sycri.runtime import linux
from sycri.runtime.pod import pod_init
from sycri.runtime.pod.sandbox import CREATING, NOTREADY, READY, Sandbox

if TYPE_CHECKING:
    from sycri.runtime.pod.sandbox_manager import SandboxManager

log = logging.getLogger("sycri.sandboxes")


async def recover(manager: SandboxManager) -> None:
    mounted = set(linux.mount_targets_under("/"))  # once, not once per pin
    for sb in manager.store.all():
        if sb.state == CREATING:
            log.warning("tearing down pod sandbox %s left half-created by a crash", sb.id[:12])
            sb.status.state = NOTREADY
            sb.status.failed = True
            sb.status.reason = "sycri stopped while creating it"
            manager.store.release(sb.name_key, sb.id)
            await manager.store.save_status(sb)
            if sb.pid_mode == "POD":
                await pod_init.kill_marked(sb.id)
        if sb.status.tearing_down:
            await retry(manager, sb)
            continue
        if sb.state == READY and not alive(sb, mounted):
            log.warning("pod sandbox %s lost its namespaces or init: NOTREADY", sb.id[:12])
            sb.status.state = NOTREADY
            sb.status.reason = "its namespaces or init were gone at start-up"
            await manager.store.save_status(sb)
        elif sb.state == READY and sb.pid_mode == "POD":
            manager.watch.watch(sb.id, sb.status.init_pid, sb.status.init_start)


async def retry(manager: SandboxManager, sb: Sandbox) -> None:
    """One more try at a pod whose teardown is owed: a failed run is torn down, a
    removal finished (its containers too). Errors are logged; the record stays."""
    try:
        if sb.status.removing:
            log.warning("finishing the removal of pod sandbox %s", sb.id[:12])
            await manager.remove(sb.id)
        else:
            async with manager.lock(sb.id):
                if manager.store.find(sb.id) is sb:
                    await manager.finish_teardown(sb)
    except Exception:
        log.exception("tearing down pod sandbox %s", sb.id[:12])


async def retry_forever(manager: SandboxManager) -> None:
    while True:
        await asyncio.sleep(manager.retry_interval)
        for sb in manager.store.all():
            owed = sb.status.failed or (sb.status.removing and sb.status.left)
            if owed and sb.state != CREATING:
                await retry(manager, sb)


def alive(sb: Sandbox, mounted: set[str]) -> bool:
    """Whether the pod's pinned namespaces and its init are still there."""
    for p in (sb.netns_path, sb.ipc_ns_path, sb.uts_ns_path, sb.userns_path):
        if p and os.path.realpath(p) not in mounted:
            return False
    return not (sb.pid_mode == "POD" and not pod_init.alive(sb.init_pid, sb.status.init_start))

"""Undoing a pod: every step idempotent, every failure reported, none hidden.

:func:`teardown` runs every step even when one fails and returns what is still held
(empty when the pod is really gone). The caller keeps the pod's record, with that
list in its status, until a later try returns nothing: a record is the only map of
the namespace pins, mounts, cgroups and CNI attachment a pod made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path

from sycri.runtime import linux
from sycri.runtime.cgroups import conmon_cgroup
from sycri.runtime.pod import namespaces, pod_init, podcgroup
from sycri.runtime.pod.network import PodNetwork
from sycri.runtime.pod.sandbox import Sandbox

log = logging.getLogger("sycri.sandboxes")

NAMESPACES = ("pid", "net", "ipc", "uts", "user")


async def stop_init(sb: Sandbox) -> list[str]:
    """Kill the pod's init and its holder (every process of the pod's PID namespace)."""
    st = sb.status
    await pod_init.stop(st.init_pid, st.init_start, st.holder_pid, st.holder_start)
    if pod_init.alive(st.init_pid, st.init_start):
        return [f"init process {st.init_pid}"]
    return []


async def teardown(sb: Sandbox, network: PodNetwork, cgroup_driver: str) -> list[str]:
    """Release everything a (possibly half-made) pod holds; what could not be released."""
    left = await stop_init(sb)
    try:
        await network.down(sb)
    except Exception as exc:
        left.append(f"network attachment ({exc})")
    left += await asyncio.to_thread(_release_local, sb, cgroup_driver)
    if left:
        log.warning("pod sandbox %s teardown left: %s", sb.id[:12], "; ".join(left))
    return left


def _release_local(sb: Sandbox, cgroup_driver: str) -> list[str]:
    """Blocking: the shm mount, namespace pins, the init's cgroup leaf, the pod's
    cgroup, any mount left under the pod's run dir, and the run dir itself."""
    left: list[str] = []
    run_dir = Path(sb.run_dir)
    if sb.status.shm_mounted:
        with contextlib.suppress(OSError):
            linux.umount(sb.shm_path, linux.MNT_DETACH)
        if linux.is_mountpoint(sb.shm_path):
            left.append(f"shm mount {sb.shm_path}")
        else:
            sb.status.shm_mounted = False
    for kind in NAMESPACES:
        pin = run_dir / "ns" / kind
        try:
            namespaces.release(pin)
        except OSError as exc:
            left.append(f"{kind} namespace pin {pin} ({exc.strerror})")
    try:
        conmon_cgroup.release(run_dir / conmon_cgroup.INIT_RECORD)
    except OSError as exc:
        left.append(f"the init's cgroup ({exc.strerror})")
    left += podcgroup.release(sb, cgroup_driver)
    # Anything still mounted below the pod dir is ours; never delete through a mount.
    for target in sorted(linux.mount_targets_under(run_dir), key=len, reverse=True):
        with contextlib.suppress(OSError):
            linux.umount(target, linux.MNT_DETACH)
    mounted = linux.mount_targets_under(run_dir)
    if mounted:
        left.append(f"mounts under {run_dir}: {', '.join(mounted)}")
    elif run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir.exists():
            left.append(f"run dir {run_dir}")
    return left

"""The pod's cgroup: made (cgroupfs dirs or a systemd slice) when sycri must make it,
resized, and released. Which of the pod's own dirs sycri made is in the pod's status,
written before they exist, so a crash in between leaks nothing. Parents sycri had to
make are shared with every pod and kubelet: never recorded, never removed, as runc
(docs/cgroups.md#who-owns-a-directory)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

from sycri import crashpoint
from sycri.runtime.cgroups import cgroups, slices
from sycri.runtime.pod.sandbox import Sandbox


def uses_slices(sb: Sandbox, driver: str) -> bool:
    """Whether the pod's slice is systemd's to make (systemd driver, cgroup v2)."""
    return driver == "systemd" and sb.cgroup_version == 2


def slice_name(sb: Sandbox) -> str:
    return sb.cgroup_parent.split(":", 1)[0]


def owns(sb: Sandbox) -> bool:
    """Whether sycri made the pod's cgroup (then it also set its limits)."""
    leaf = sb.cgroup_path.rstrip("/")
    return bool(leaf) and any(d.rstrip("/").endswith(leaf) for d in sb.status.cgroup_created)


async def make(
    sb: Sandbox, driver: str, limits: cgroups.Limits, save: Callable[[], Awaitable[None]]
) -> None:
    """Make the pod's cgroup if it is missing, with ``limits``; ``save`` records the
    dirs about to be made before they are."""
    if not sb.cgroup_path:
        return
    if uses_slices(sb, driver):
        path = os.path.join(cgroups.CGROUP_ROOT, sb.cgroup_path.strip("/"))
        if not os.path.isdir(path):
            sb.status.cgroup_created = [path]
            await save()
            await asyncio.to_thread(slices.start, slice_name(sb), limits)
        return
    recorded = cgroups.PodCgroup.missing(sb.cgroup_version, sb.cgroup_path)
    sb.status.cgroup_created = recorded
    if recorded:
        await save()
        crashpoint.reach("pod.run.cgroup")
    pc = await asyncio.to_thread(cgroups.PodCgroup.ensure, sb.cgroup_version, sb.cgroup_path)
    sb.status.cgroup_created = pc.created
    if sorted(pc.created) != sorted(recorded):
        await save()  # one appeared meanwhile (kubelet's): no crash may remove it for us
    if pc.created:
        await asyncio.to_thread(pc.apply, limits)


async def resize(sb: Sandbox, driver: str, old: cgroups.Limits, new: cgroups.Limits) -> None:
    """New limits on a cgroup sycri made; a refused write puts the old ones back."""
    if not owns(sb) or new == old:
        return
    if uses_slices(sb, driver):
        await asyncio.to_thread(slices.resize, slice_name(sb), new)
        return
    pc = cgroups.PodCgroup(sb.cgroup_version, sb.cgroup_path, list(sb.status.cgroup_created))
    try:
        await asyncio.to_thread(pc.apply, new, update=True)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pc.apply, old, update=True)
        raise


def release(sb: Sandbox, driver: str) -> list[str]:
    """Blocking: stop the slice or remove the dirs sycri made. What is still there
    (a process left in it) is returned, and stays in the status for the next try."""
    created = sb.status.cgroup_created
    if not created:
        return []
    left: list[str] = []
    if uses_slices(sb, driver):
        try:
            slices.stop(slice_name(sb))
        except Exception as exc:
            left.append(f"systemd slice {slice_name(sb)} ({exc})")
    # Only the pod's own dirs (and below) go; a record an older sycri wrote also names
    # the parents it made: they are shared, and stay.
    own = [d for d in created if _at_or_below(d, sb.cgroup_path.rstrip("/"))]
    cgroups.remove_dirs(own)
    sb.status.cgroup_created = [d for d in own if os.path.isdir(d)]
    left.extend(f"cgroup {d}" for d in sb.status.cgroup_created)
    return left


def _at_or_below(d: str, leaf: str) -> bool:
    """Whether cgroup dir ``d`` is the pod's cgroup ``leaf`` (a path relative to each
    hierarchy) or below it."""
    d = d.rstrip("/")
    return bool(leaf) and (d.endswith(leaf) or f"{leaf}/" in d)

"""OOM kills the monitor missed, read from the pod cgroup's ``oom_kill`` counter.

conmon 2.1.6 (Debian 12) reads a container's ``memory.events`` when the container has
exited. With the systemd driver the container's cgroup is a transient scope that
systemd removes as soon as its last process is gone, so conmon can find nothing and
miss an OOM kill (fixed in later conmon). On cgroup v2 a parent's ``memory.events``
counts the kills of its descendants too: the count taken before the container starts,
compared once it has died of SIGKILL, says whether the kernel's OOM killer was among
its parent's children meanwhile. The limit of this fallback: a sibling OOM-killed while
this container was SIGKILLed for another reason reads the same.
"""

from __future__ import annotations

import contextlib
import posixpath
from pathlib import Path

from sycri.runtime.cgroups import cgroups

BASE = "oom_kill.base"  # in the bundle: the parent's count before the container started


def parent_dir(
    version: int, driver: str, cgroup_path: str, root: str = cgroups.CGROUP_ROOT
) -> Path | None:
    """The directory of the container cgroup's parent on cgroup v2 (None on v1)."""
    if version != 2 or not cgroup_path:
        return None
    if driver == "systemd":
        parent = cgroups.systemd_slice_path(cgroup_path.split(":", 1)[0] or "system.slice")
    else:
        parent = posixpath.dirname(cgroup_path)
    return Path(root) / parent.lstrip("/")


def kills(events: str) -> int | None:
    """``oom_kill`` of a ``memory.events`` text."""
    for line in events.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def _count(parent: Path) -> int | None:
    try:
        return kills((parent / "memory.events").read_text())
    except OSError:
        return None


def record_base(bundle: Path, parent: Path | None) -> None:
    """Remember the parent's count before the container starts (blocking, tiny)."""
    if parent is None:
        return
    count = _count(parent)
    if count is not None:
        with contextlib.suppress(OSError):
            (bundle / BASE).write_text(str(count))


def killed_since_start(bundle: Path, parent: Path | None) -> bool:
    """Whether the parent counted an OOM kill since :func:`record_base`."""
    if parent is None:
        return False
    try:
        base = int((bundle / BASE).read_text())
    except (OSError, ValueError):
        return False
    now = _count(parent)
    return now is not None and now > base

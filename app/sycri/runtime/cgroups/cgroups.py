"""Pod cgroups: where a cgroup parent lives for each driver and cgroup version, and limits.

kubelet names the pod's cgroup parent: a path (``/kubepods/burstable/pod<uid>``) with
the cgroupfs driver, a slice (``kubepods-burstable-pod<uid>.slice``) with systemd. The
path functions are pure; :class:`PodCgroup` creates only the directories that do not
exist yet (kubelet normally made them). Only the last one, the pod's own, belongs to
the pod: sycri removes it with the pod where sycri made it. Its parents (``kubepods``,
``kubepods/burstable``, a cgroup root) are every pod's and kubelet's: made when missing,
never removed, as runc leaves the parents it makes (docs/cgroups.md#who-owns-a-directory).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sycri.errors import InvalidArgument, excerpt

log = logging.getLogger("sycri.cgroups")

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer")
_SLICE = re.compile(r"^[A-Za-z0-9_.:\\-]+\.slice$")
_PATH_PART = re.compile(r"^[A-Za-z0-9_.:@+-]+$")

# sycri's own makes and removals of cgroup directories take turns (worker threads, never
# the loop; each holds it for a few mkdir/rmdir calls): a removal of an empty parent
# (``/sycri-mounts``, a pod's cgroup that another pod's path goes through) cannot pull a
# directory from under another thread's walk down the same path.
TREE_LOCK = threading.RLock()


def detect_version(root: str = CGROUP_ROOT) -> int:
    """2 on a unified hierarchy, 1 otherwise (hybrid hosts count as 1)."""
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


def systemd_slice_path(slice_name: str) -> str:
    """``a-b-c.slice`` → ``/a.slice/a-b.slice/a-b-c.slice`` as systemd expands it."""
    if slice_name == "-.slice":
        return "/"
    if not _SLICE.match(slice_name) or "/" in slice_name:
        raise InvalidArgument(f"cgroup_parent {excerpt(slice_name)} is not a systemd slice name")
    stem = slice_name[: -len(".slice")]
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise InvalidArgument(f"cgroup_parent {excerpt(slice_name)} is not a valid slice name")
    parts = stem.split("-")
    path = ""
    for i in range(len(parts)):
        path += "/" + "-".join(parts[: i + 1]) + ".slice"
    return path


def pod_parent(driver: str, parent: str) -> str:
    """The pod's cgroup parent as sycri keeps it. With systemd, kubelet names the slice
    (``kubepods-burstable-pod<uid>.slice``) but other clients send a path of slices
    (critest: ``/test.slice``); containerd and CRI-O take its last element, as here."""
    if driver == "systemd" and "/" in parent and ":" not in parent:
        last = parent.rstrip("/").rsplit("/", 1)[-1]
        if last.endswith(".slice"):
            return last
    return parent


def relative_path(driver: str, parent: str) -> str:
    """The cgroup path (from the hierarchy root, leading ``/``) of a pod's cgroup parent."""
    parent = pod_parent(driver, parent)
    if driver == "systemd":
        # runc also accepts "slice:prefix:name"; only the slice names a pod's parent.
        return systemd_slice_path(parent.split(":", 1)[0] if ":" in parent else parent)
    if not parent.startswith("/"):
        parent = "/" + parent
    parts = [p for p in parent.split("/") if p]
    for p in parts:
        if p in (".", "..") or not _PATH_PART.match(p):
            raise InvalidArgument(f"cgroup_parent {excerpt(parent)} is not a cgroup path")
    return "/" + "/".join(parts)


@dataclass(frozen=True)
class Limits:
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""

    def plus_overhead(self, overhead: Limits) -> Limits:
        """Pod resources plus pod overhead; an unlimited quota or memory stays unlimited."""
        return Limits(
            cpu_period=self.cpu_period or overhead.cpu_period,
            cpu_quota=self.cpu_quota + max(overhead.cpu_quota, 0) if self.cpu_quota > 0 else 0,
            cpu_shares=self.cpu_shares + overhead.cpu_shares if self.cpu_shares > 0 else 0,
            memory=self.memory + overhead.memory if self.memory > 0 else 0,
            cpuset_cpus=self.cpuset_cpus,
            cpuset_mems=self.cpuset_mems,
        )


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares → v2 cpu.weight, the conversion runc and kubelet use."""
    if shares <= 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def limit_files(version: int, limits: Limits) -> dict[str, str]:
    """Controller file → value for ``limits`` (relative to the cgroup directory)."""
    out: dict[str, str] = {}
    if version == 2:
        if limits.cpu_quota > 0:
            out["cpu.max"] = f"{limits.cpu_quota} {limits.cpu_period or 100000}"
        if limits.cpu_shares > 0:
            out["cpu.weight"] = str(shares_to_weight(limits.cpu_shares))
        if limits.memory > 0:
            out["memory.max"] = str(limits.memory)
        if limits.cpuset_cpus:
            out["cpuset.cpus"] = limits.cpuset_cpus
        if limits.cpuset_mems:
            out["cpuset.mems"] = limits.cpuset_mems
        return out
    if limits.cpu_period > 0:
        out["cpu/cpu.cfs_period_us"] = str(limits.cpu_period)
    if limits.cpu_quota > 0:
        out["cpu/cpu.cfs_quota_us"] = str(limits.cpu_quota)
    if limits.cpu_shares > 0:
        out["cpu/cpu.shares"] = str(limits.cpu_shares)
    if limits.memory > 0:
        out["memory/memory.limit_in_bytes"] = str(limits.memory)
    if limits.cpuset_cpus:
        out["cpuset/cpuset.cpus"] = limits.cpuset_cpus
    if limits.cpuset_mems:
        out["cpuset/cpuset.mems"] = limits.cpuset_mems
    return out


def update_files(version: int, limits: Limits) -> dict[str, str]:
    """Like :func:`limit_files`, for a cgroup that may hold older limits: an unlimited
    quota or memory is written back as unlimited instead of being left as it was."""
    out = limit_files(version, limits)
    if version == 2:
        if limits.cpu_quota <= 0:
            out["cpu.max"] = f"max {limits.cpu_period or 100000}"
        if limits.memory <= 0:
            out["memory.max"] = "max"
        return out
    if limits.cpu_quota <= 0:
        out["cpu/cpu.cfs_quota_us"] = "-1"
    if limits.memory <= 0:
        out["memory/memory.limit_in_bytes"] = "-1"
    return out


@dataclass
class PodCgroup:
    """The pod's cgroup parent on this host; ``created``: the pod's own directories
    (one per hierarchy) that sycri made, the only ones it writes limits to or removes."""

    version: int
    rel: str
    created: list[str]
    root: str = CGROUP_ROOT

    @staticmethod
    def own_dirs(version: int, rel: str, root: str = CGROUP_ROOT) -> list[str]:
        """The pod's own directory (the whole of ``rel``) in each hierarchy of this host."""
        leaf = _joined(rel)
        if not leaf:
            return []
        return [
            os.path.join(top, leaf) for top in _hierarchies(version, root) if os.path.isdir(top)
        ]

    @staticmethod
    def missing(version: int, rel: str, root: str = CGROUP_ROOT) -> list[str]:
        """The pod's own directories :meth:`ensure` would make: recorded before it does,
        so a crash in between leaves nothing recovery would not remove."""
        return [d for d in PodCgroup.own_dirs(version, rel, root) if not os.path.isdir(d)]

    @classmethod
    def ensure(cls, version: int, rel: str, root: str = CGROUP_ROOT) -> PodCgroup:
        """Make the missing directories of ``rel`` (parents first); blocking. A directory
        that appears before sycri's ``mkdir`` (kubelet making it at the same moment) is
        someone else's: it is used, not claimed. Parents sycri makes are shared and stay."""
        leaf = _joined(rel)
        created: list[str] = []
        with TREE_LOCK:
            try:
                for top, parent, cur in _walk(version, rel, root):
                    if not _make(cur):
                        continue
                    if cur == os.path.join(top, leaf):
                        created.append(cur)
                    _inherit(version, top, parent, cur)
            except BaseException:
                remove_dirs(created)
                raise
        return cls(version, rel, created, root)

    def apply(self, limits: Limits, *, update: bool = False) -> None:
        """Write the limits where sycri made the pod's directory; ``update`` also resets
        what is now unlimited. A directory kubelet made is kubelet's to size."""
        owned = set(self.created)
        files = (update_files if update else limit_files)(self.version, limits)
        for rel_file, value in files.items():
            if self.version == 2:
                d, name = os.path.join(self.root, _joined(self.rel)), rel_file
            else:
                ctrl, name = rel_file.split("/", 1)
                d = os.path.join(self.root, ctrl, _joined(self.rel))
            if d not in owned:
                continue
            try:
                Path(d, name).write_text(value)
            except OSError as exc:
                raise InvalidArgument(
                    f"pod cgroup {self.rel}: cannot set {rel_file} to {value}: {exc.strerror}"
                ) from None

    def remove(self) -> None:
        remove_dirs(self.created)
        self.created = []


# Hierarchies without controllers that runc still places containers in on a v1 host
# (the name=systemd one, and the cgroup2 one of a hybrid host): the pod's parent must be
# made and removed there too, or every pod leaves an empty directory behind in them.
V1_EXTRA_HIERARCHIES = ("systemd", "unified")


def _hierarchies(version: int, root: str) -> list[str]:
    if version == 2:
        return [root]
    return [os.path.join(root, c) for c in (*V1_CONTROLLERS, *V1_EXTRA_HIERARCHIES)]


def _joined(rel: str) -> str:
    """``rel`` without its leading, trailing or doubled slashes."""
    return "/".join(p for p in rel.split("/") if p)


def _make(d: str) -> bool:
    """mkdir ``d``; whether sycri made it (False: it was there, or appeared just now)."""
    try:
        os.mkdir(d)
    except FileExistsError:
        if os.path.isdir(d):
            return False
        raise
    return True


def _walk(version: int, rel: str, root: str) -> Iterator[tuple[str, str, str]]:
    """(hierarchy, parent, dir) for every directory of ``rel``, parents first, in each
    hierarchy this host has; lazy, so :meth:`PodCgroup.ensure` can make each in turn."""
    for top in _hierarchies(version, root):
        if not os.path.isdir(top):
            continue
        cur = top
        for part in [p for p in rel.split("/") if p]:
            parent, cur = cur, os.path.join(cur, part)
            yield top, parent, cur


def _inherit(version: int, top: str, parent: str, child: str) -> None:
    """A new v1 cpuset cgroup is empty and takes no process; copy the parent's sets."""
    if version == 1 and os.path.basename(top) == "cpuset":
        for name in ("cpuset.cpus", "cpuset.mems"):
            with contextlib.suppress(OSError):
                Path(child, name).write_text(Path(parent, name).read_text().strip() or "\n")
    if version == 2:
        want = {"cpu", "memory", "pids", "cpuset"}
        with contextlib.suppress(OSError):
            have = set(Path(parent, "cgroup.controllers").read_text().split())
            enable = " ".join(f"+{c}" for c in sorted(want & have))
            if enable:
                Path(parent, "cgroup.subtree_control").write_text(enable)


def remove_dirs(dirs: list[str]) -> None:
    """rmdir deepest first; a cgroup still holding processes is logged and left."""
    with TREE_LOCK:
        for d in sorted(dirs, key=len, reverse=True):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove cgroup %s: %s", d, exc.strerror)

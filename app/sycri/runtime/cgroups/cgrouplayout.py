"""Where a container's cgroup lives: the mounted hierarchies (from mountinfo) and the
directory of a runc ``cgroupsPath`` under each, for the cgroupfs and systemd drivers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class CgroupLayout:
    """Where the hierarchies are mounted: ``v1`` maps a controller to (mountpoint, root)."""

    version: int
    v1: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    v2: tuple[str, str] | None = None  # (mountpoint, root) of the unified hierarchy


def _unescape(field_: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 4 <= len(field_) and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> CgroupLayout:
    """The cgroup layout from ``/proc/self/mountinfo``.

    A host with v1 controllers mounted (hybrid included: its ``unified`` mount holds no
    controllers) is version 1; a host with only a cgroup2 mount is version 2.
    """
    v1: dict[str, tuple[str, str]] = {}
    v2: tuple[str, str] | None = None
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 3:
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        fstype, superopts = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
        if fstype == "cgroup2":
            if v2 is None or mountpoint == CGROUP_ROOT:
                v2 = (mountpoint, root)
        elif fstype == "cgroup":
            for opt in superopts.split(","):
                if opt in ("rw", "ro") or "=" in opt:
                    continue
                v1.setdefault(opt, (mountpoint, root))
    version = 1 if ("memory" in v1 or "cpuacct" in v1) else 2
    return CgroupLayout(version=version, v1=v1, v2=v2)


def detect_layout() -> CgroupLayout:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return parse_mountinfo(f.read())


def _slice_path(slice_name: str) -> str:
    """``a-b-c.slice`` → ``/a.slice/a-b.slice/a-b-c.slice`` (systemd's expansion)."""
    if slice_name in ("", "-.slice"):
        return ""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise ValueError(f"not a systemd slice name: {slice_name[:80]!r}")
    stem = slice_name[: -len(".slice")]
    parts = stem.split("-")
    if "" in parts:
        raise ValueError(f"not a valid systemd slice name: {slice_name[:80]!r}")
    return "".join("/" + "-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def hierarchy_path(cgroups_path: str, driver: str) -> str:
    """A cgroup's path from the hierarchy root, from what runc was given.

    cgroupfs: ``/kubepods/pod1/sycri-<id>`` stays as it is; systemd:
    ``slice:prefix:name`` (runc's form) becomes ``/<expanded slice>/prefix-name.scope``,
    and a bare slice name is expanded. Paths never climb out of the hierarchy.
    """
    if driver == "systemd" and not cgroups_path.startswith("/"):
        if cgroups_path.count(":") == 2:
            slice_, prefix, name = cgroups_path.split(":")
            unit = f"{prefix}-{name}.scope" if prefix else name
            if not unit.endswith((".scope", ".slice")):
                unit += ".scope"
            return _slice_path(slice_ or "system.slice") + "/" + unit
        return _slice_path(cgroups_path) or "/"
    parts = [p for p in cgroups_path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"cgroup path climbs out of the hierarchy: {cgroups_path[:80]!r}")
    return "/" + "/".join(parts)


def _under(mount: tuple[str, str], rel: str) -> str:
    mountpoint, root = mount
    rel = "/" + rel.strip("/")
    root = root.rstrip("/")
    if root and (rel == root or rel.startswith(root + "/")):
        rel = rel[len(root) :] or "/"
    return os.path.join(mountpoint, rel.lstrip("/"))


def cgroup_dirs(layout: CgroupLayout, rel: str) -> dict[str, str]:
    """Directory per controller (v1: ``cpuacct``, ``memory``, ``pids``; v2: ``unified``)."""
    if layout.version == 2:
        return {"unified": _under(layout.v2, rel)} if layout.v2 else {}
    out = {}
    for ctl in ("cpuacct", "memory", "pids"):
        if ctl in layout.v1:
            out[ctl] = _under(layout.v1[ctl], rel)
    return out

"""Container resource usage from cgroup files, for cgroup v1 and v2.

The parsers (``cgroupusage``, which says how each figure is computed) are pure, and so
is locating a cgroup (``cgrouplayout``); :func:`read_cgroup` here is the thin edge that
reads a cgroup's files.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable

from sycri.runtime.cgroups.cgrouplayout import (
    CGROUP_ROOT,
    CgroupLayout,
    cgroup_dirs,
    detect_layout,
    hierarchy_path,
    parse_mountinfo,
)
from sycri.runtime.cgroups.cgroupusage import (
    V1_UNLIMITED,
    CgroupParseError,
    CgroupSample,
    CpuRates,
    MemoryStats,
    Pressure,
    PsiData,
    cpu_v1,
    cpu_v2,
    memory_v1,
    memory_v2,
    parse_int,
    parse_keyed,
    parse_limit_v1,
    parse_limit_v2,
    parse_pressure,
    working_set,
)

# The parsers and the layout are named through this module by the stats collector.
__all__ = [
    "CGROUP_ROOT",
    "CgroupLayout",
    "CgroupParseError",
    "CgroupSample",
    "CpuRates",
    "MemoryStats",
    "Pressure",
    "PsiData",
    "cgroup_dirs",
    "cpu_v1",
    "cpu_v2",
    "detect_layout",
    "hierarchy_path",
    "memory_v1",
    "memory_v2",
    "parse_int",
    "parse_keyed",
    "parse_limit_v1",
    "parse_limit_v2",
    "parse_mountinfo",
    "parse_pressure",
    "read_cgroup",
    "working_set",
]


def _read(path: str) -> str | None:
    # os.open/os.read: a text-mode open() costs a third more per small sysfs file, and a
    # stats call reads several thousand of them.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
    except OSError as exc:
        # ENODEV: the cgroup was being removed while we read it.
        if exc.errno == errno.ENODEV:
            return None
        raise
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


def _pressure(text: str | None, name: str) -> Pressure | None:
    # An empty file: PSI is compiled in but disabled (psi=0 on the kernel command line).
    return parse_pressure(text, name) if text and text.strip() else None


def _read_all(d: str, names: Iterable[str]) -> dict[str, str | None]:
    return {n: _read(os.path.join(d, n)) for n in names}


def read_cgroup(layout: CgroupLayout, rel: str, now_ns: int | None = None) -> CgroupSample:
    """Read a cgroup (blocking). A cgroup that is gone yields a sample with no figures."""
    ts = time.time_ns() if now_ns is None else now_ns
    dirs = cgroup_dirs(layout, rel)
    if layout.version == 2:
        d = dirs.get("unified")
        if d is None:
            return CgroupSample(ts)
        f = _read_all(
            d,
            (
                "cpu.stat",
                "memory.current",
                "memory.stat",
                "memory.max",
                "memory.events",
                "memory.swap.current",
                "pids.current",
                "cpu.pressure",
                "memory.pressure",
                "io.pressure",
            ),
        )
        mem = None
        if f["memory.current"] is not None and f["memory.stat"] is not None:
            mem = memory_v2(
                f["memory.current"],
                f["memory.stat"],
                f["memory.max"] or "max",
                f["memory.events"] or "",
                f["memory.swap.current"],
            )
        return CgroupSample(
            ts,
            cpu_usage_ns=cpu_v2(f["cpu.stat"]) if f["cpu.stat"] is not None else None,
            memory=mem,
            pids=parse_int(f["pids.current"], "pids.current") if f["pids.current"] else None,
            cpu_pressure=_pressure(f["cpu.pressure"], "cpu.pressure"),
            memory_pressure=_pressure(f["memory.pressure"], "memory.pressure"),
            io_pressure=_pressure(f["io.pressure"], "io.pressure"),
        )
    cpu = mem = pids = None
    if "cpuacct" in dirs:
        text = _read(os.path.join(dirs["cpuacct"], "cpuacct.usage"))
        cpu = cpu_v1(text) if text is not None else None
    if "memory" in dirs:
        f = _read_all(
            dirs["memory"],
            (
                "memory.usage_in_bytes",
                "memory.stat",
                "memory.limit_in_bytes",
                "memory.failcnt",
                "memory.oom_control",
            ),
        )
        if f["memory.usage_in_bytes"] is not None and f["memory.stat"] is not None:
            mem = memory_v1(
                f["memory.usage_in_bytes"],
                f["memory.stat"],
                f["memory.limit_in_bytes"] or str(V1_UNLIMITED),
                f["memory.failcnt"] or "0",
                f["memory.oom_control"] or "",
            )
    if "pids" in dirs:
        text = _read(os.path.join(dirs["pids"], "pids.current"))
        pids = parse_int(text, "pids.current") if text is not None else None
    return CgroupSample(ts, cpu_usage_ns=cpu, memory=mem, pids=pids)

"""Container resource usage from cgroup files, for cgroup v1 and v2.

The parsers are pure (file text in, typed figures out) so both versions are tested with
recorded files on any machine; :func:`read_cgroup` is the thin edge that reads a cgroup's
files. Figures follow what kubelet and cAdvisor compute, because kubelet compares them
with its own eviction thresholds:

- working set = usage - inactive file pages, floored at 0 (v1: ``total_inactive_file``
  of ``memory.stat``, v2: ``inactive_file``);
- RSS = v1 ``total_rss``, v2 ``anon``;
- available = limit - working set, only when the cgroup has a memory limit;
- CPU nano-cores come from two samples of the cumulative usage (:class:`CpuRates`).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CGROUP_ROOT = "/sys/fs/cgroup"

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB
# pages); anything at or above 2**62 cannot be a real limit on any machine.
_V1_UNLIMITED = 1 << 62


class CgroupParseError(ValueError):
    """A cgroup file did not have the kernel's format; the message names the file."""


# ---------------------------------------------------------------- pure parsers


def parse_int(text: str, name: str = "value") -> int:
    """A file holding one integer (``memory.current``, ``cpuacct.usage``...)."""
    s = text.strip()
    try:
        return int(s)
    except ValueError:
        raise CgroupParseError(f"{name}: expected an integer, got {s[:40]!r}") from None


def parse_keyed(text: str, name: str = "file") -> dict[str, int]:
    """A flat-keyed file, ``key value`` per line (``memory.stat``, ``cpu.stat``, ...)."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CgroupParseError(f"{name} line {lineno}: expected 'key value', got {line[:60]!r}")
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            raise CgroupParseError(
                f"{name} line {lineno}: {parts[0]} is not an integer: {parts[1][:40]!r}"
            ) from None
    return out


def parse_limit_v1(text: str) -> int | None:
    """``memory.limit_in_bytes``: None when unlimited."""
    value = parse_int(text, "memory.limit_in_bytes")
    return None if value >= _V1_UNLIMITED else value


def parse_limit_v2(text: str, name: str = "memory.max") -> int | None:
    """``memory.max`` / ``pids.max`` style: ``max`` means unlimited (None)."""
    s = text.strip()
    return None if s == "max" else parse_int(s, name)


def working_set(usage: int, inactive_file: int) -> int:
    """kubelet's working set: usage minus inactive file cache, never below zero."""
    return usage - inactive_file if inactive_file < usage else 0


@dataclass(frozen=True)
class MemoryStats:
    usage_bytes: int
    working_set_bytes: int
    rss_bytes: int
    cache_bytes: int
    page_faults: int
    major_page_faults: int
    limit_bytes: int | None  # None: no limit
    failcnt: int = 0  # v1: times usage hit the limit; v2: memory.events "max"
    oom_kills: int = 0
    swap_bytes: int | None = None

    @property
    def available_bytes(self) -> int | None:
        """How much more the cgroup may use before reclaim/OOM; None without a limit."""
        if self.limit_bytes is None:
            return None
        return max(self.limit_bytes - self.working_set_bytes, 0)


def memory_v1(
    usage: str, stat: str, limit: str, failcnt: str = "0", oom_control: str = ""
) -> MemoryStats:
    """Memory figures of a v1 memory cgroup from its files' text."""
    used = parse_int(usage, "memory.usage_in_bytes")
    st = parse_keyed(stat, "memory.stat")
    oom = _oom_control(oom_control)
    return MemoryStats(
        usage_bytes=used,
        working_set_bytes=working_set(used, st.get("total_inactive_file", 0)),
        rss_bytes=st.get("total_rss", 0),
        cache_bytes=st.get("total_cache", 0),
        page_faults=st.get("total_pgfault", 0),
        major_page_faults=st.get("total_pgmajfault", 0),
        limit_bytes=parse_limit_v1(limit),
        failcnt=parse_int(failcnt, "memory.failcnt"),
        oom_kills=oom,
        swap_bytes=st.get("total_swap"),
    )


def _oom_control(text: str) -> int:
    # memory.oom_control is "key value" lines too; oom_kill appeared in Linux 4.13.
    if not text.strip():
        return 0
    return parse_keyed(text, "memory.oom_control").get("oom_kill", 0)


def memory_v2(
    current: str, stat: str, limit: str, events: str = "", swap: str | None = None
) -> MemoryStats:
    """Memory figures of a v2 cgroup from its files' text."""
    used = parse_int(current, "memory.current")
    st = parse_keyed(stat, "memory.stat")
    ev = parse_keyed(events, "memory.events") if events.strip() else {}
    return MemoryStats(
        usage_bytes=used,
        working_set_bytes=working_set(used, st.get("inactive_file", 0)),
        rss_bytes=st.get("anon", 0),
        cache_bytes=st.get("file", 0),
        page_faults=st.get("pgfault", 0),
        major_page_faults=st.get("pgmajfault", 0),
        limit_bytes=parse_limit_v2(limit),
        failcnt=ev.get("max", 0),
        oom_kills=ev.get("oom_kill", 0),
        swap_bytes=parse_int(swap, "memory.swap.current") if swap is not None else None,
    )


def cpu_v1(usage: str) -> int:
    """Cumulative CPU time in nanoseconds from ``cpuacct.usage``."""
    return parse_int(usage, "cpuacct.usage")


def cpu_v2(stat: str) -> int:
    """Cumulative CPU time in nanoseconds from ``cpu.stat`` (``usage_usec``)."""
    st = parse_keyed(stat, "cpu.stat")
    if "usage_usec" not in st:
        raise CgroupParseError("cpu.stat: no usage_usec line")
    return st["usage_usec"] * 1000


@dataclass(frozen=True)
class PsiData:
    total_us: int  # cumulative stall time, microseconds, as the kernel reports it
    avg10: float
    avg60: float
    avg300: float


@dataclass(frozen=True)
class Pressure:
    """One ``*.pressure`` file (cgroup v2): ``some`` and, where the kernel has it, ``full``."""

    some: PsiData
    full: PsiData | None = None


def parse_pressure(text: str, name: str = "pressure") -> Pressure:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` (+ a ``full`` line)."""
    lines: dict[str, PsiData] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        kind, *pairs = line.split()
        try:
            kv = dict(p.split("=", 1) for p in pairs)
            lines[kind] = PsiData(
                total_us=int(kv["total"]),
                avg10=float(kv["avg10"]),
                avg60=float(kv["avg60"]),
                avg300=float(kv["avg300"]),
            )
        except (KeyError, ValueError):
            raise CgroupParseError(f"{name} line {lineno}: not a PSI line: {line[:80]!r}") from None
    if "some" not in lines:
        raise CgroupParseError(f"{name}: no 'some' line")
    return Pressure(lines["some"], lines.get("full"))


@dataclass(frozen=True)
class CgroupSample:
    """One reading of a cgroup; a field is None when its controller is absent."""

    timestamp_ns: int
    cpu_usage_ns: int | None = None
    memory: MemoryStats | None = None
    pids: int | None = None
    cpu_pressure: Pressure | None = None  # v2 only
    memory_pressure: Pressure | None = None
    io_pressure: Pressure | None = None

    @property
    def exists(self) -> bool:
        return self.cpu_usage_ns is not None or self.memory is not None or self.pids is not None


# ---------------------------------------------------------------- CPU rate


@dataclass
class _Last:
    timestamp_ns: int
    usage_ns: int
    rate: int | None


@dataclass
class CpuRates:
    """Nano-cores from consecutive samples, one baseline per key (container or pod id).

    Two callers asking within ``min_interval_ns`` of each other (kubelet's summary and
    its eviction manager) get the last rate instead of a noisy one from a tiny window.
    """

    min_interval_ns: int = 500_000_000
    _last: dict[str, _Last] = field(default_factory=dict)

    def update(self, key: str, timestamp_ns: int, usage_ns: int) -> int | None:
        """The usage rate in nano-cores since the previous sample of ``key``, if any."""
        prev = self._last.get(key)
        if prev is None or usage_ns < prev.usage_ns or timestamp_ns <= prev.timestamp_ns:
            self._last[key] = _Last(timestamp_ns, usage_ns, None)
            return None
        dt = timestamp_ns - prev.timestamp_ns
        if dt < self.min_interval_ns:
            return prev.rate
        rate = (usage_ns - prev.usage_ns) * 1_000_000_000 // dt
        self._last[key] = _Last(timestamp_ns, usage_ns, rate)
        return rate

    def forget(self, key: str) -> None:
        self._last.pop(key, None)

    def retain(self, keys: Iterable[str]) -> None:
        """Drop baselines of keys no longer present (removed containers)."""
        keep = set(keys)
        for k in [k for k in self._last if k not in keep]:
            del self._last[k]

    def __len__(self) -> int:
        return len(self._last)


# ---------------------------------------------------------------- locating cgroups


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


# ---------------------------------------------------------------- the reading edge


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
                f["memory.limit_in_bytes"] or str(_V1_UNLIMITED),
                f["memory.failcnt"] or "0",
                f["memory.oom_control"] or "",
            )
    if "pids" in dirs:
        text = _read(os.path.join(dirs["pids"], "pids.current"))
        pids = parse_int(text, "pids.current") if text is not None else None
    return CgroupSample(ts, cpu_usage_ns=cpu, memory=mem, pids=pids)

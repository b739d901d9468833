"""cgroup usage files parsed: file text in, typed figures out, for cgroup v1 and v2.

Pure, so both versions are tested with recorded files on any machine. Figures follow
what kubelet and cAdvisor compute, because kubelet compares them with its own eviction
thresholds:

- working set = usage - inactive file pages, floored at 0 (v1: ``total_inactive_file``
  of ``memory.stat``, v2: ``inactive_file``);
- RSS = v1 ``total_rss``, v2 ``anon``;
- available = limit - working set, only when the cgroup has a memory limit;
- CPU nano-cores come from two samples of the cumulative usage (:class:`CpuRates`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB
# pages); anything at or above 2**62 cannot be a real limit on any machine.
V1_UNLIMITED = 1 << 62


class CgroupParseError(ValueError):
    """A cgroup file did not have the kernel's format; the message names the file."""


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
    return None if value >= V1_UNLIMITED else value


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

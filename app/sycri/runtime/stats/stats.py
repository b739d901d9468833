"""Usage of containers and pods: cgroups, writable layers, pod network namespaces.

What the collector needs from the container and pod stores is two small Protocols
(:class:`ContainerSource`, :class:`PodSource`) returning plain records, so the stores
stay free of stats code and the collector can be tested with real cgroups and
namespaces but without runc. All blocking reads run in worker threads, one hop per
request (not one per container).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sycri.runtime.cgroups import cgroupstats
from sycri.runtime.cgroups.cgroupstats import CgroupLayout, CgroupSample, CpuRates, MemoryStats
from sycri.runtime.stats import diskusage, netstats


@dataclass(frozen=True)
class ContainerInfo:
    """What stats need to know about one container."""

    id: str
    pod_sandbox_id: str
    name: str
    attempt: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    # As given to runc: a cgroupfs path, or systemd's "slice:prefix:name"; "" = unknown.
    cgroup_path: str = ""
    upper_dir: str = ""  # the overlay upper directory (writable layer); "" = none
    running: bool = False
    image: str = ""  # image reference, for metric labels


@dataclass(frozen=True)
class PodInfo:
    """What stats need to know about one pod sandbox."""

    id: str
    name: str
    namespace: str
    uid: str
    attempt: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    netns_path: str | None = None  # the pinned network namespace; None = host network
    cgroup_path: str = ""  # the pod cgroup parent's path from the hierarchy root; "" = none
    ready: bool = True


class ContainerSource(Protocol):
    """``node.containers`` as stats see it."""

    def stats_containers(self) -> Iterable[ContainerInfo]: ...


class PodSource(Protocol):
    """``node.sandboxes`` as stats see it."""

    def stats_pods(self) -> Iterable[PodInfo]: ...


@dataclass(frozen=True)
class ContainerUsage:
    info: ContainerInfo
    sample: CgroupSample
    nano_cores: int | None
    disk: diskusage.DiskUsage | None
    disk_timestamp_ns: int = 0
    disk_mountpoint: str = ""


@dataclass(frozen=True)
class NetworkUsage:
    timestamp_ns: int
    interfaces: tuple[netstats.InterfaceStats, ...]
    default: str | None


@dataclass(frozen=True)
class PodUsage:
    info: PodInfo
    sample: CgroupSample
    nano_cores: int | None
    network: NetworkUsage | None
    containers: tuple[ContainerUsage, ...]


def sum_samples(samples: Sequence[CgroupSample], timestamp_ns: int) -> CgroupSample:
    """A pod's figures from its containers' when the pod has no cgroup of its own."""
    cpu = [s.cpu_usage_ns for s in samples if s.cpu_usage_ns is not None]
    mems = [s.memory for s in samples if s.memory is not None]
    pids = [s.pids for s in samples if s.pids is not None]
    mem = None
    if mems:
        mem = MemoryStats(
            usage_bytes=sum(m.usage_bytes for m in mems),
            working_set_bytes=sum(m.working_set_bytes for m in mems),
            rss_bytes=sum(m.rss_bytes for m in mems),
            cache_bytes=sum(m.cache_bytes for m in mems),
            page_faults=sum(m.page_faults for m in mems),
            major_page_faults=sum(m.major_page_faults for m in mems),
            limit_bytes=None,
            failcnt=sum(m.failcnt for m in mems),
            oom_kills=sum(m.oom_kills for m in mems),
        )
    return CgroupSample(
        timestamp_ns,
        cpu_usage_ns=sum(cpu) if cpu else None,
        memory=mem,
        pids=sum(pids) if pids else None,
    )


@dataclass
class _Disk:
    at_ns: int
    usage: diskusage.DiskUsage


class StatsCollector:
    """Reads usage for containers and pods; keeps the CPU baselines between calls.

    ``disk_max_age`` bounds how often one writable layer is walked (a walk of a big
    upper directory is the costliest part of a stats call).
    """

    def __init__(
        self,
        driver: str,
        layout: CgroupLayout | None = None,
        disk_max_age: float = 2.0,
        cpu_min_interval: float = 0.5,
        read_threads: int = 4,
    ):
        self.driver = driver
        self.read_threads = max(1, read_threads)
        self.layout = layout or cgroupstats.detect_layout()
        self.disk_max_age_ns = int(disk_max_age * 1e9)
        self.container_cpu = CpuRates(int(cpu_min_interval * 1e9))
        self.pod_cpu = CpuRates(int(cpu_min_interval * 1e9))
        self._disk: dict[str, _Disk] = {}
        self._mountpoints: dict[str, str] = {}

    # ---- blocking part, run in a thread

    def _container_blocking(self, items: Sequence[ContainerInfo]) -> list[ContainerUsage]:
        out = []
        for c in items:
            ts = time.time_ns()
            sample = CgroupSample(ts)
            if c.cgroup_path:
                try:
                    rel = cgroupstats.hierarchy_path(c.cgroup_path, self.driver)
                except ValueError:
                    rel = ""
                if rel:
                    sample = cgroupstats.read_cgroup(self.layout, rel, ts)
            disk, disk_ts, mnt = None, 0, ""
            if c.upper_dir:
                cached = self._disk.get(c.id)
                if cached is None or ts - cached.at_ns >= self.disk_max_age_ns:
                    cached = _Disk(time.time_ns(), diskusage.dir_usage(c.upper_dir))
                    self._disk[c.id] = cached
                disk, disk_ts = cached.usage, cached.at_ns
                mnt = self._mountpoint(c.upper_dir)
            out.append(ContainerUsage(c, sample, None, disk, disk_ts, mnt))
        return out

    def _mountpoint(self, path: str) -> str:
        parent = path.rsplit("/", 2)[0] if path.count("/") >= 2 else path
        mnt = self._mountpoints.get(parent)
        if mnt is None:
            mnt = diskusage.mountpoint_of(path)
            if len(self._mountpoints) < 4096:
                self._mountpoints[parent] = mnt
        return mnt

    def _pod_blocking(self, pods: Sequence[PodInfo]) -> list[CgroupSample | None]:
        out: list[CgroupSample | None] = []
        for p in pods:
            if not p.cgroup_path:
                out.append(None)
                continue
            try:
                rel = cgroupstats.hierarchy_path(p.cgroup_path, "cgroupfs")
            except ValueError:
                out.append(None)
                continue
            s = cgroupstats.read_cgroup(self.layout, rel)
            out.append(s if s.exists else None)
        return out

    # ---- async API

    async def containers(self, items: Iterable[ContainerInfo]) -> list[ContainerUsage]:
        """Usage of each container (stopped ones: attributes, writable layer, no cgroup)."""
        items = list(items)
        if not items:
            return []
        # sysfs reads release the GIL: a few threads overlap their system calls.
        n = min(self.read_threads, max(1, len(items) // 64))
        parts = [items[i::n] for i in range(n)]
        done = await asyncio.gather(
            *(asyncio.to_thread(self._container_blocking, p) for p in parts)
        )
        order = {c.id: i for i, c in enumerate(items)}
        raw = sorted((u for part in done for u in part), key=lambda u: order[u.info.id])
        out = []
        for u in raw:
            rate = None
            if u.sample.cpu_usage_ns is not None:
                rate = self.container_cpu.update(
                    u.info.id, u.sample.timestamp_ns, u.sample.cpu_usage_ns
                )
            out.append(
                ContainerUsage(
                    u.info, u.sample, rate, u.disk, u.disk_timestamp_ns, u.disk_mountpoint
                )
            )
        return out

    async def pods(
        self, pods: Iterable[PodInfo], containers: Iterable[ContainerInfo]
    ) -> list[PodUsage]:
        """Usage of each pod: its cgroup (else the sum of its containers) and network."""
        pods = list(pods)
        if not pods:
            return []
        wanted = {p.id for p in pods}
        members = [c for c in containers if c.pod_sandbox_id in wanted]
        by_pod: dict[str, list[ContainerUsage]] = {p.id: [] for p in pods}
        for u in await self.containers(members):
            by_pod[u.info.pod_sandbox_id].append(u)
        cg, nets = await asyncio.gather(
            asyncio.to_thread(self._pod_blocking, pods),
            asyncio.to_thread(
                netstats.read_netns_many, [p.netns_path for p in pods if p.netns_path]
            ),
        )
        out = []
        for p, sample in zip(pods, cg, strict=True):
            now = time.time_ns()
            if sample is None:
                sample = sum_samples([u.sample for u in by_pod[p.id]], now)
            rate = None
            if sample.cpu_usage_ns is not None:
                rate = self.pod_cpu.update(p.id, sample.timestamp_ns, sample.cpu_usage_ns)
            net = None
            got = nets.get(p.netns_path) if p.netns_path else None
            if isinstance(got, list):
                net = NetworkUsage(now, tuple(got), netstats.default_interface(got))
            out.append(PodUsage(p, sample, rate, net, tuple(by_pod[p.id])))
        return out

    def forget_missing(self, container_ids: Iterable[str], pod_ids: Iterable[str]) -> None:
        """Drop baselines and cached disk figures of objects that no longer exist."""
        cids = set(container_ids)
        self.container_cpu.retain(cids)
        self.pod_cpu.retain(pod_ids)
        for k in [k for k in self._disk if k not in cids]:
            del self._disk[k]

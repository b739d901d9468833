"""CRI resources as OCI ``linux.resources``, refused here when runc or the kernel would."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.oci.inputs import CgroupFacts

log = logging.getLogger("sycri.ocispec")

_HUGEPAGE = re.compile(r"^\d+(KB|MB|GB)$")
_CPU_ITEM = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")
# A cgroup v2 interface file of a resource controller ("memory.high", "io.weight");
# never a core file such as cgroup.procs, which would move processes.
_UNIFIED_KEY = re.compile(r"^[a-z][a-z0-9_]*\.[a-z0-9_]+(\.[a-z0-9_]+)*$")

# The kernel's CFS bandwidth bounds (kernel/sched/core.c), in microseconds.
MIN_CFS = 1000
MAX_CFS_PERIOD = 1_000_000
MAX_CFS_QUOTA = (1 << 44) - 1
# cgroup v1 cpu.shares range; runc maps it onto v2's cpu.weight 1-10000.
MIN_SHARES, MAX_SHARES = 2, 262144
# Below this runc's own init cannot start in the cgroup (CRI-O refuses the same).
MIN_MEMORY = 12 * 1024 * 1024

# What a node that was not looked at can take: anything.
_ANY_NODE = CgroupFacts()


def cpu_list(value: str, field_name: str, online: frozenset[int] | None) -> set[int]:
    """The CPUs (or memory nodes) of a cpuset list such as ``0-3,8``; InvalidArgument
    when it is not one or names one the node does not have."""
    out: set[int] = set()
    for item in value.split(","):
        m = _CPU_ITEM.match(item.strip())
        if not m:
            raise InvalidArgument(f"{field_name}: {excerpt(value)} is not a CPU list like 0-3,8")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InvalidArgument(f"{field_name}: {excerpt(value)} has a range that runs backwards")
        if online is not None and not set(range(lo, hi + 1)) <= online:
            missing = min(set(range(lo, hi + 1)) - online)
            raise InvalidArgument(f"{field_name}: {missing} is not online on this node")
        out.update(range(lo, min(hi, lo + 65536) + 1))
    return out


def ranged(value: int, name: str, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name}: {value} is out of the range {lo}-{hi} the kernel takes")
    return value


def cgroup_resources(
    res: api_pb2.LinuxContainerResources,
    cgroup_v2: bool,
    hugetlb_sizes: frozenset[str] | None = None,
    node: CgroupFacts = _ANY_NODE,
) -> dict[str, Any]:
    """CRI resources as OCI ``linux.resources`` (zero means unset, as in the CRI).

    Every value runc or the kernel would refuse is refused here first, naming its field:
    a refusal inside ``runc update`` can leave some files written and others not.
    """
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if res.cpu_shares:
        cpu["shares"] = ranged(res.cpu_shares, "cpu_shares", MIN_SHARES, MAX_SHARES)
    if res.cpu_quota:
        cpu["quota"] = (
            res.cpu_quota
            if res.cpu_quota == -1
            else ranged(res.cpu_quota, "cpu_quota", MIN_CFS, MAX_CFS_QUOTA)
        )
    if res.cpu_period:
        cpu["period"] = ranged(res.cpu_period, "cpu_period", MIN_CFS, MAX_CFS_PERIOD)
    for field_name, key, online in (
        ("cpuset_cpus", "cpus", node.cpus),
        ("cpuset_mems", "mems", node.mems),
    ):
        value = getattr(res, field_name)
        if value:
            cpu_list(value, field_name, online)
            cpu[key] = value
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if res.memory_limit_in_bytes:
        limit = _positive(res.memory_limit_in_bytes, "memory_limit_in_bytes")
        if limit < MIN_MEMORY:
            raise InvalidArgument(
                f"memory_limit_in_bytes: {limit} is below the minimum of {MIN_MEMORY} bytes"
            )
        memory["limit"] = limit
    if res.memory_swap_limit_in_bytes:
        swap = res.memory_swap_limit_in_bytes
        if swap != -1:
            _positive(swap, "memory_swap_limit_in_bytes")
            if "limit" not in memory:
                raise InvalidArgument(
                    "memory_swap_limit_in_bytes: a swap limit needs memory_limit_in_bytes"
                )
            if memory["limit"] > swap:
                raise InvalidArgument("memory_swap_limit_in_bytes: below memory_limit_in_bytes")
        memory["swap"] = swap
    if memory:
        out["memory"] = memory
    pages = hugepage_limits(res.hugepage_limits, hugetlb_sizes)
    if pages:
        out["hugepageLimits"] = pages
    if res.unified:
        if not cgroup_v2:
            raise InvalidArgument("unified: cgroup v2 settings on a cgroup v1 host")
        for key, value in res.unified.items():
            controller = key.split(".", 1)[0]
            if not _UNIFIED_KEY.match(key) or controller == "cgroup":
                raise InvalidArgument(f"unified: bad cgroup file {excerpt(key)}")
            if node.controllers is not None and controller not in node.controllers:
                raise InvalidArgument(
                    f"unified: {excerpt(key)}: the node has no {excerpt(controller)} controller"
                )
            if "\n" in value or not value.strip():
                raise InvalidArgument(f"unified: bad value {excerpt(value)} for {excerpt(key)}")
        out["unified"] = dict(res.unified)
    return out


def hugepage_limits(
    limits: Iterable[api_pb2.HugepageLimit], sizes: frozenset[str] | None
) -> list[dict[str, Any]]:
    """The limits the node can apply (``sizes``; None: all of them).

    kubelet sends a limit (often 0) for every size under /sys/kernel/mm/hugepages, even
    where no hugetlb cgroup controller is mounted; runc then fails the whole container.
    Like containerd and CRI-O, limits the node cannot apply are left out.
    """
    pages = []
    for hp in limits:
        if not _HUGEPAGE.match(hp.page_size):
            raise InvalidArgument(f"hugepage_limits: bad page size {excerpt(hp.page_size)}")
        if sizes is not None and hp.page_size not in sizes:
            log.debug(
                "hugepage limit for %s left out: the node has no hugetlb cgroup for it",
                hp.page_size,
            )
            continue
        pages.append({"pageSize": hp.page_size, "limit": hp.limit})
    return pages


def _positive(value: int, name: str) -> int:
    if value < 0:
        raise InvalidArgument(f"{name}: {value} is negative")
    return value

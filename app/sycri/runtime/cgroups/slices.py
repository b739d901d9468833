"""Pod slices under systemd on cgroup v2: made, resized and stopped through systemd.

With the systemd driver systemd owns the cgroup tree: a directory made behind its back
is unknown to it, its controllers are not enabled for it, and the scopes runc asks for
below it fail. So a pod slice kubelet did not make is started as a transient unit
(what kubelet's own systemd cgroup manager does) with the pod's limits as unit
properties, resized with ``SetUnitProperties`` and stopped on removal, which leaves
nothing in ``systemctl list-units``. ``busctl`` talks to systemd over D-Bus; the
property lists are pure.
"""

from __future__ import annotations

import os
import subprocess
import time

from sycri.errors import Internal, InvalidArgument
from sycri.runtime.cgroups import cgroups

INFINITY = 18446744073709551615  # systemd's "no limit" for a uint64 property
_DEST = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
         "org.freedesktop.systemd1.Manager")  # fmt: skip


def cpu_mask(spec: str) -> list[int]:
    """A cpuset list (``0-3,8``) as systemd's D-Bus CPU set: bytes of a bitmask, CPU n in
    bit n % 8 of byte n // 8 (what ``AllowedCPUs``/``AllowedMemoryNodes`` take)."""
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise InvalidArgument(f"cpuset {spec!r} is not a list such as 0-3,8")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    out = [0] * (max(cpus) // 8 + 1)
    for n in cpus:
        out[n // 8] |= 1 << (n % 8)
    return out


def _bytes(mask: list[int]) -> str:
    """An ``ay`` value as busctl takes it: the count, then each byte."""
    return " ".join(str(x) for x in (len(mask), *mask))


def properties(limits: cgroups.Limits, *, update: bool = False) -> list[tuple[str, str, str]]:
    """(name, D-Bus signature, value) of the unit properties for ``limits``; ``update``
    also resets what is now unlimited."""
    out = [("CPUAccounting", "b", "true"), ("MemoryAccounting", "b", "true"),
           ("TasksAccounting", "b", "true")]  # fmt: skip
    period = limits.cpu_period or 100000
    if limits.cpu_quota > 0:
        out.append(("CPUQuotaPerSecUSec", "t", str(limits.cpu_quota * 1_000_000 // period)))
        out.append(("CPUQuotaPeriodUSec", "t", str(period)))
    elif update:
        out.append(("CPUQuotaPerSecUSec", "t", str(INFINITY)))
    if limits.cpu_shares > 0:
        out.append(("CPUWeight", "t", str(cgroups.shares_to_weight(limits.cpu_shares))))
    if limits.memory > 0:
        out.append(("MemoryMax", "t", str(limits.memory)))
    elif update:
        out.append(("MemoryMax", "t", str(INFINITY)))
    # A cpuset not given is left as it is, as the cgroupfs driver leaves cpuset.cpus.
    if limits.cpuset_cpus:
        out.append(("AllowedCPUs", "ay", _bytes(cpu_mask(limits.cpuset_cpus))))
    if limits.cpuset_mems:
        out.append(("AllowedMemoryNodes", "ay", _bytes(cpu_mask(limits.cpuset_mems))))
    return out


def _flat(props: list[tuple[str, str, str]]) -> list[str]:
    """busctl's arguments for ``a(sv)``: an array value (``ay``) is several arguments."""
    out = [str(len(props))]
    for name, sig, value in props:
        out += [name, sig, *(value.split() if sig.startswith("a") else [value])]
    return out


def start_argv(name: str, limits: cgroups.Limits) -> list[str]:
    return ["busctl", "call", *_DEST, "StartTransientUnit", "ssa(sv)a(sa(sv))", name, "fail",
            *_flat([("Description", "s", f"sycri pod slice {name}"), *properties(limits)]),
            "0"]  # fmt: skip


def set_argv(name: str, limits: cgroups.Limits) -> list[str]:
    return ["busctl", "call", *_DEST, "SetUnitProperties", "sba(sv)", name, "true",
            *_flat(properties(limits, update=True))]  # fmt: skip


def stop_argv(name: str) -> list[str]:
    return ["busctl", "call", *_DEST, "StopUnit", "ss", name, "replace"]


def _call(argv: list[str], what: str, error: type[Exception] = Internal) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise error(f"{what}: {proc.stderr.strip() or proc.stdout.strip()}")


def _wait(path: str, exists: bool, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.isdir(path) != exists:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def start(name: str, limits: cgroups.Limits, root: str = cgroups.CGROUP_ROOT) -> str:
    """Start pod slice ``name`` with ``limits``; its cgroup directory once it exists
    (blocking)."""
    path = os.path.join(root, cgroups.systemd_slice_path(name).strip("/"))
    _call(start_argv(name, limits), f"cannot start systemd slice {name}")
    if not _wait(path, True):
        raise Internal(f"systemd started slice {name} but its cgroup {path} did not appear")
    return path


def resize(name: str, limits: cgroups.Limits) -> None:
    """New limits for a pod slice sycri started (blocking)."""
    _call(set_argv(name, limits), f"pod slice {name}: cannot set {limits}", InvalidArgument)


def stop(name: str, root: str = cgroups.CGROUP_ROOT) -> None:
    """Stop the pod slice (and whatever is left in it); blocking until its cgroup is gone.
    A slice that is not loaded any more is already stopped."""
    path = os.path.join(root, cgroups.systemd_slice_path(name).strip("/"))
    if not os.path.isdir(path):
        return
    proc = subprocess.run(stop_argv(name), capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and "not loaded" not in proc.stderr:
        raise Internal(f"cannot stop systemd slice {name}: {proc.stderr.strip()}")
    _wait(path, False)

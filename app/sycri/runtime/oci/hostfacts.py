"""The edge of ``ocispec``: read from the host exactly what a request's spec depends on."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.oci import argv, cdi
from sycri.runtime.oci.capabilities import ALL_CAPS
from sycri.runtime.oci.inputs import CgroupFacts, DeviceNode, HostFacts

MAX_PROFILE_BYTES = 1024 * 1024


def _kind(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def device(path: str) -> DeviceNode | None:
    """The device node at ``path`` (symlinks followed), or None if it is not one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return DeviceNode(
        path, kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode),
        st.st_uid, st.st_gid,
    )  # fmt: skip


def host_devices(root: str = "/dev") -> tuple[DeviceNode, ...]:
    """Every device node under /dev for privileged containers (not /dev/pts, /dev/shm...)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue", "fd")]
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or p == "/dev/console":
                continue
            d = device(p)
            if d is not None:
                out.append(d)
    return tuple(out)


def own_oom_score_adj() -> int:
    try:
        return int(Path("/proc/self/oom_score_adj").read_text().strip())
    except (OSError, ValueError):
        return 0


def bounding_caps(status: str | None = None) -> frozenset[str]:
    """sycri's own capability bounding set (CapBnd of /proc/self/status), by name.

    A privileged container gets exactly these: in a container or under a restricted
    service manager some (here CAP_SYS_RESOURCE) are missing, and runc cannot add them.
    """
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return frozenset(ALL_CAPS)
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            try:
                mask = int(line.split(":", 1)[1].strip(), 16)
            except ValueError:
                break
            return frozenset(c for i, c in enumerate(ALL_CAPS) if mask >> i & 1)
    return frozenset(ALL_CAPS)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def propagation_of(path: str, mountinfo: str) -> tuple[str, str]:
    """(mount point, 'shared' | 'slave' | 'private') of the mount that holds ``path``
    (an already resolved path), from the text of /proc/self/mountinfo."""
    best, kind = "", "private"
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        target = _unescape(fields[4])
        inside = path == target or path.startswith(target.rstrip("/") + "/")
        # Later lines are mounted over earlier ones at the same place: >= keeps the last.
        if inside and len(target) >= len(best):
            tags = fields[6 : fields.index("-", 6)]
            best = target
            if any(t.startswith("shared:") for t in tags):
                kind = "shared"
            elif any(t.startswith("master:") for t in tags):
                kind = "slave"
            else:
                kind = "private"
    return best, kind


def cgroup_v2() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


_UNITS = ("KB", "MB", "GB", "TB", "PB")


def page_size_name(kib: int) -> str:
    """A kernel hugepage size in KiB as kubelet and runc name it: 2048 -> "2MB"."""
    unit = 0
    while kib >= 1024 and kib % 1024 == 0 and unit < len(_UNITS) - 1:
        kib //= 1024
        unit += 1
    return f"{kib}{_UNITS[unit]}"


def hugetlb_controller(mountinfo: str, v2_controllers: str | None) -> bool:
    """Whether the node has a hugetlb cgroup controller runc can use: on cgroup v2 listed
    in the root's cgroup.controllers, on v1 a mounted hierarchy with it."""
    if v2_controllers is not None:
        return "hugetlb" in v2_controllers.split()
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        tail = fields[fields.index("-", 6) + 1 :]
        if len(tail) >= 3 and tail[0] == "cgroup" and "hugetlb" in tail[2].split(","):
            return True
    return False


def hugetlb_sizes(
    hugepages_dir: str = "/sys/kernel/mm/hugepages", cgroup_root: str = "/sys/fs/cgroup"
) -> frozenset[str]:
    """Hugepage sizes whose limits this node's cgroups can apply: the kernel's sizes when
    a hugetlb controller is there, none otherwise."""
    try:
        controllers: str | None = Path(cgroup_root, "cgroup.controllers").read_text()
    except OSError:
        controllers = None
    try:
        mountinfo = "" if controllers is not None else Path("/proc/self/mountinfo").read_text()
    except OSError:
        mountinfo = ""
    if not hugetlb_controller(mountinfo, controllers):
        return frozenset()
    sizes = set()
    with contextlib.suppress(OSError):
        for name in os.listdir(hugepages_dir):
            m = re.fullmatch(r"hugepages-(\d+)kB", name)
            if m:
                sizes.add(page_size_name(int(m.group(1))))
    return frozenset(sizes)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def id_set(text: str | None) -> frozenset[int] | None:
    """The ids of a kernel list such as ``0-3,8`` (``/sys/.../online``); None if unknown."""
    if text is None or not text.strip():
        return None
    out: set[int] = set()
    for item in text.strip().split(","):
        lo, _, hi = item.partition("-")
        try:
            out.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            return None
    return frozenset(out)


def cgroup_facts() -> CgroupFacts:
    """Online CPUs and memory nodes, and the root's cgroup v2 controllers."""
    controllers = _read("/sys/fs/cgroup/cgroup.controllers") if cgroup_v2() else None
    return CgroupFacts(
        cpus=id_set(_read("/sys/devices/system/cpu/online")),
        mems=id_set(_read("/sys/devices/system/node/online") or "0"),
        controllers=frozenset(controllers.split()) if controllers is not None else None,
    )


# /proc/self/limits row titles of the rlimits ocispec knows.
_LIMIT_ROWS = {
    "Max cpu time": "cpu", "Max file size": "fsize", "Max data size": "data",
    "Max stack size": "stack", "Max core file size": "core", "Max resident set": "rss",
    "Max processes": "nproc", "Max open files": "nofile", "Max locked memory": "memlock",
    "Max address space": "as", "Max file locks": "locks", "Max pending signals": "sigpending",
    "Max msgqueue size": "msgqueue", "Max nice priority": "nice",
    "Max realtime priority": "rtprio", "Max realtime timeout": "rttime",
}  # fmt: skip
_UNLIMITED = 2**64 - 1


def own_rlimits(text: str | None = None) -> dict[str, tuple[int, int]]:
    """sycri's own (soft, hard) rlimits by name, from ``/proc/self/limits``."""
    text = _read("/proc/self/limits") if text is None else text
    out: dict[str, tuple[int, int]] = {}
    for line in (text or "").splitlines():
        for title, name in _LIMIT_ROWS.items():
            if line.startswith(title + " "):
                fields = line[len(title) :].split()
                if len(fields) >= 2:
                    vals = [_UNLIMITED if f == "unlimited" else f for f in fields[:2]]
                    with contextlib.suppress(ValueError):
                        out[name] = (int(vals[0]), int(vals[1]))
    return out


def apparmor_enabled() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


def cdi_host_paths(
    names: list[str], specs: tuple[cdi.Spec, ...], resolve: Callable[[str], str] | None
) -> dict[str, str]:
    """Where sycri reaches the host paths the requested CDI edits mount or run.
    ``resolve`` maps a host path to sycri's view (under ``host_root`` in the node image,
    symlinks resolved there, as for hostPath volumes); None: the host is sycri's ``/``.
    A path that cannot be resolved is refused naming it, before anything is created."""
    if not names or resolve is None:
        return {}
    try:
        edits = cdi.edits_for(names, list(specs))
    except InvalidArgument:
        return {}  # the spec builder refuses the request, naming it
    out: dict[str, str] = {}
    for path in cdi.host_paths(edits):
        try:
            out[path] = resolve(path)
        except OSError as exc:
            raise InvalidArgument(
                f"CDI devices: host path {excerpt(path)} cannot be used: {exc.strerror}"
            ) from None
    return out


def gather(
    cfg: api_pb2.ContainerConfig,
    cgroup_driver: str,
    cdi_dirs: tuple[str, ...] = cdi.SPEC_DIRS,
    recursive_read_only: bool = False,
    resolve: Callable[[str], str] | None = None,
) -> HostFacts:
    """Facts for one container: its host paths, devices, CDI specs and seccomp file."""
    sc = cfg.linux.security_context
    paths = {m.host_path: _kind(m.host_path) for m in cfg.mounts if m.host_path.startswith("/")}
    propagation: dict[str, tuple[str, str]] = {}
    wanted = [
        m.host_path
        for m in cfg.mounts
        if m.propagation != api_pb2.PROPAGATION_PRIVATE and m.host_path.startswith("/")
    ]
    if wanted:
        try:
            info = Path("/proc/self/mountinfo").read_text(errors="replace")
        except OSError:
            info = ""
        for hp in wanted:
            propagation[hp] = propagation_of(os.path.realpath(hp), info)
    devices = {d.host_path: device(d.host_path) for d in cfg.devices}
    wanted_cdi = cdi.requested(cfg)
    specs = tuple(cdi.load(cdi_dirs)) if wanted_cdi else ()
    cdi_sources = cdi_host_paths(wanted_cdi, specs, resolve)
    for spec in specs:
        for dev in [spec.edits, *(d.get("containerEdits") or {} for d in spec.devices.values())]:
            for node in (dev or {}).get("deviceNodes") or []:
                if isinstance(node, dict):
                    node_path = node.get("hostPath") or node.get("path")
                    if isinstance(node_path, str):
                        devices[node_path] = device(node_path)
    profiles: dict[str, str] = {}
    ref = ""
    if sc.HasField("seccomp") and sc.seccomp.profile_type == api_pb2.SecurityProfile.Localhost:
        ref = sc.seccomp.localhost_ref
    elif sc.seccomp_profile_path.startswith("localhost/"):
        ref = sc.seccomp_profile_path.removeprefix("localhost/")
    if ref.startswith("/"):
        try:
            with open(ref, "rb") as f:
                profiles[ref] = f.read(MAX_PROFILE_BYTES).decode(errors="replace")
        except OSError:
            pass
    return HostFacts(
        paths=paths,
        devices=devices,
        all_devices=host_devices() if sc.privileged else (),
        cdi_specs=specs,
        cdi_sources=cdi_sources,
        seccomp_profiles=profiles,
        apparmor=apparmor_enabled(),
        own_oom_score_adj=own_oom_score_adj(),
        cgroup_driver=cgroup_driver,
        cgroup_v2=cgroup_v2(),
        bounding_caps=bounding_caps(),
        machine=os.uname().machine,
        recursive_read_only=recursive_read_only,
        propagation=propagation,
        hugetlb_sizes=hugetlb_sizes() if cfg.linux.resources.hugepage_limits else frozenset(),
        cgroups=cgroup_facts(),
        arg_max=argv.arg_max(),
        own_rlimits=own_rlimits(),
    )

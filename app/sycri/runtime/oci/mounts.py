"""The container's mounts: default filesystems, the pod's files, volumes, CDI mounts."""

from __future__ import annotations

import posixpath
from typing import Any

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.oci import cdi
from sycri.runtime.oci.inputs import HostFacts, Sandbox

_PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}


def _container_path(path: str, what: str) -> str:
    if not path.startswith("/") or "\x00" in path:
        raise InvalidArgument(f"{what}: container path {excerpt(path)} is not absolute")
    return posixpath.normpath(path)


def _check_rro(m: api_pb2.Mount, target: str, host: HostFacts) -> None:
    """kubelet's rules for recursive read-only: read-only, private, and a runtime that can."""
    if not m.readonly:
        raise InvalidArgument(f"mounts: {excerpt(target)} is recursive_read_only but not readonly")
    if m.propagation != api_pb2.PROPAGATION_PRIVATE:
        raise InvalidArgument(
            f"mounts: {excerpt(target)} is recursive_read_only, which needs private propagation"
        )
    if not host.recursive_read_only:
        raise InvalidArgument(
            f"mounts: {excerpt(target)} is recursive_read_only, which this runtime handler "
            "cannot do on this node"
        )


def _check_propagation(m: api_pb2.Mount, target: str, host: HostFacts) -> None:
    """As containerd: Bidirectional needs a shared host mount, HostToContainer a shared or
    slave one; otherwise the volume would silently propagate nothing."""
    if m.host_path not in host.propagation:
        return
    point, kind = host.propagation[m.host_path]
    if m.propagation == api_pb2.PROPAGATION_BIDIRECTIONAL and kind != "shared":
        need = "a shared mount (Bidirectional)"
    elif m.propagation == api_pb2.PROPAGATION_HOST_TO_CONTAINER and kind == "private":
        need = "a shared or slave mount (HostToContainer)"
    else:
        return
    raise InvalidArgument(
        f"mounts: host path {excerpt(m.host_path)} for {excerpt(target)} is on the {kind} "
        f"mount {excerpt(point)}, but its propagation needs {need}"
    )


def rootfs_propagation(cfg: api_pb2.ContainerConfig) -> str:
    """``rshared`` when a mount is Bidirectional, else ``rslave`` for HostToContainer.

    runc turns the container's whole mount tree slave by default, so a mount made
    inside a Bidirectional volume would never reach the host; containerd does the same.
    """
    kinds = {m.propagation for m in cfg.mounts}
    if api_pb2.PROPAGATION_BIDIRECTIONAL in kinds:
        return "rshared"
    if api_pb2.PROPAGATION_HOST_TO_CONTAINER in kinds:
        return "rslave"
    return ""


def mounts(
    cfg: api_pb2.ContainerConfig,
    sandbox: Sandbox,
    host: HostFacts,
    privileged: bool,
    readonly_rootfs: bool,
    edits: cdi.Edits,
) -> list[dict[str, Any]]:
    """Default filesystems, the pod's files, then the request's mounts (parents first)."""
    user: list[dict[str, Any]] = []
    for m in cfg.mounts:
        target = _container_path(m.container_path, "mounts")
        if m.HasField("image") and m.image.image:
            raise InvalidArgument(f"mounts: image volume at {excerpt(target)} is not supported")
        if not m.host_path.startswith("/"):
            raise InvalidArgument(
                f"mounts: host path {excerpt(m.host_path)} for {excerpt(target)} is not absolute"
            )
        kind = host.paths.get(m.host_path, "missing")
        if kind == "missing":
            raise InvalidArgument(
                f"mounts: host path {excerpt(m.host_path)} for {excerpt(target)} does not exist"
            )
        if m.recursive_read_only:
            _check_rro(m, target, host)
        _check_propagation(m, target, host)
        opts = ["rbind", _PROPAGATION.get(m.propagation, "rprivate")]
        opts.append("ro" if m.readonly else "rw")
        if m.recursive_read_only:
            opts.append("rro")
        user.append({"destination": target, "type": "bind", "source": m.host_path, "options": opts})
    cdi_mounts = cdi.mount_entries(edits, host.cdi_sources)
    # A CDI mount replaces a request's mount at the same path, as containerd's and CRI-O's
    # CDI libraries apply their edits over the finished spec.
    over = {m["destination"] for m in cdi_mounts}
    user = [m for m in user if m["destination"] not in over] + cdi_mounts
    taken = {m["destination"] for m in user}
    ro = "ro" if readonly_rootfs else "rw"
    defaults: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"]},
    ]  # fmt: skip
    if sandbox.shm:
        defaults.append({"destination": "/dev/shm", "type": "bind", "source": sandbox.shm, "options": ["rbind", "rprivate", "rw"]})  # fmt: skip
    else:
        defaults.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})  # fmt: skip
    for source, dest in (
        (sandbox.hosts, "/etc/hosts"),
        (sandbox.resolv, "/etc/resolv.conf"),
        (sandbox.hostname_file, "/etc/hostname"),
    ):
        if source:
            defaults.append({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "rprivate", ro]})  # fmt: skip
    out = [m for m in defaults if m["destination"] not in taken]
    # Parents before children: a mount at /a/b must come after one at /a.
    user.sort(key=lambda m: len([p for p in m["destination"].split("/") if p]))
    return out + user

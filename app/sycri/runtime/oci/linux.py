"""The container's namespaces, sysctls and cgroup path."""

from __future__ import annotations

import posixpath

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.oci import users
from sycri.runtime.oci.inputs import Sandbox, SpecInput
from sycri.runtime.pod import idmaps

_IPC_SYSCTLS = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")


def sysctls(pod: api_pb2.PodSandboxConfig) -> dict[str, str]:
    """The pod's sysctls; only namespaced ones, and not for a namespace shared with the host."""
    ns = pod.linux.security_context.namespace_options
    out = {}
    for key, value in pod.linux.sysctls.items():
        name = key.replace("/", ".")
        if name.startswith(_IPC_SYSCTLS):
            if ns.ipc == api_pb2.NODE:
                raise InvalidArgument(f"sysctls: {excerpt(key)} needs the pod's own IPC namespace")
        elif name.startswith("net."):
            if ns.network == api_pb2.NODE:
                raise InvalidArgument(
                    f"sysctls: {excerpt(key)} needs the pod's own network namespace"
                )
        elif name not in ("kernel.domainname", "kernel.hostname"):
            raise InvalidArgument(f"sysctls: {excerpt(key)} is not a namespaced sysctl")
        if "\x00" in value or "\n" in value:
            raise InvalidArgument(f"sysctls: bad value for {excerpt(key)}")
        out[name] = value
    return out


# --- namespaces, cgroups ---------------------------------------------------------------


def namespaces(
    pod: api_pb2.PodSandboxConfig,
    sc: api_pb2.LinuxContainerSecurityContext,
    sandbox: Sandbox,
    cgroup_v2: bool,
) -> list[dict[str, str]]:
    """Join the pod's pinned namespaces by path; NODE modes use the host's."""
    ns = sc.namespace_options if sc.HasField("namespace_options") else None
    pod_ns = pod.linux.security_context.namespace_options
    out: list[dict[str, str]] = [{"type": "mount"}]
    network = ns.network if ns else pod_ns.network
    ipc = ns.ipc if ns else pod_ns.ipc
    pid = ns.pid if ns else pod_ns.pid
    if sandbox.userns:
        for kind, mode in (("network", network), ("ipc", ipc), ("pid", pid)):
            if mode == api_pb2.NODE:
                raise InvalidArgument(
                    f"namespace_options.{kind}: a container in a pod user namespace "
                    "cannot use the host's"
                )
        out.append({"type": "user", "path": sandbox.userns})
    if network != api_pb2.NODE:
        out.append(_ns("network", sandbox.netns))
    if ipc != api_pb2.NODE:
        out.append(_ns("ipc", sandbox.ipcns))
    if network != api_pb2.NODE or sandbox.utsns:
        out.append(_ns("uts", sandbox.utsns))
    if pid == api_pb2.POD and sandbox.pidns:
        out.append({"type": "pid", "path": sandbox.pidns})
    elif pid == api_pb2.TARGET:
        raise InvalidArgument("namespace_options.pid: TARGET is not supported")
    elif pid != api_pb2.NODE:
        out.append({"type": "pid"})
    if cgroup_v2:
        out.append({"type": "cgroup"})
    return out


def check_mapped(user: users.ResolvedUser, maps: idmaps.Mappings) -> None:
    """The process's ids must exist in the pod's user namespace (runc fails late otherwise)."""
    if not 0 <= user.uid < maps.uids.size:
        raise InvalidArgument(
            f"user {user.uid} is not mapped in the pod's user namespace (uids 0-{maps.uids.size - 1})"
        )
    for gid in (user.gid, *user.additional_gids):
        if not 0 <= gid < maps.gids.size:
            raise InvalidArgument(
                f"group {gid} is not mapped in the pod's user namespace "
                f"(gids 0-{maps.gids.size - 1})"
            )


def _ns(kind: str, path: str) -> dict[str, str]:
    return {"type": kind, "path": path} if path else {"type": kind}


def cgroup_path(inp: SpecInput) -> str:
    parent = (
        inp.sandbox.cgroup_parent
        or inp.sandbox_config.linux.cgroup_parent
        or inp.settings.default_cgroup_parent
    )
    if inp.host.cgroup_driver == "systemd":
        slice_ = parent if parent.endswith(".slice") else "system.slice"
        return f"{posixpath.basename(slice_)}:sycri:{inp.container_id}"
    if not parent.startswith("/"):
        parent = "/" + parent
    if ".." in parent.split("/"):
        raise InvalidArgument(f"cgroup_parent: {excerpt(parent)} climbs out of the hierarchy")
    return posixpath.join(parent, "sycri-" + inp.container_id)

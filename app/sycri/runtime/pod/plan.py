"""RunPodSandbox's request, validated and turned into a pod's metadata before anything
is created: names, runtime handler, namespace modes, user namespace, sysctls, shm size,
port mappings, bandwidth, DNS, cgroup parent, log directory and the CNI network."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sycri.api import api_pb2
from sycri.config import Config
from sycri.errors import InvalidArgument, excerpt
from sycri.network import cni
from sycri.runtime import idindex
from sycri.runtime.cgroups import cgroups
from sycri.runtime.pod import podfiles, sysctls, userns
from sycri.runtime.pod.sandbox import Sandbox, SandboxStatus, encode_config

_MODES = {api_pb2.POD: "POD", api_pb2.CONTAINER: "CONTAINER", api_pb2.NODE: "NODE"}
_MAX_NAME = 253
_PROTOCOLS = {api_pb2.TCP: "tcp", api_pb2.UDP: "udp", api_pb2.SCTP: "sctp"}


@dataclass
class Plan:
    """What a RunPodSandbox request asks for beyond the metadata, validated."""

    sysctls: list[sysctls.Sysctl]
    shm_bytes: int
    ports: list[dict[str, Any]]
    bandwidth: dict[str, int]
    limits: cgroups.Limits
    resolv: str = ""
    builtin: bool = False  # the built-in network (needs IP forwarding on the host)


def check_name(kind: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidArgument(f"pod sandbox metadata.{kind} is required")
        return
    ok = (
        len(value) <= _MAX_NAME
        and value.isascii()
        and all(c.isalnum() or c in "-._" for c in value)
    )
    if not ok:
        raise InvalidArgument(
            f"pod sandbox metadata.{kind} {excerpt(value)} must be at most {_MAX_NAME} "
            "letters, digits, '-', '.' or '_'"
        )


def port_mappings(cfg: api_pb2.PodSandboxConfig) -> list[dict[str, Any]]:
    """The CNI ``portMappings`` capability (only mappings with a host port)."""
    out: list[dict[str, Any]] = []
    for pm in cfg.port_mappings:
        if not 0 < pm.container_port <= 65535 or not 0 <= pm.host_port <= 65535:
            raise InvalidArgument(
                f"port mapping {pm.host_port}->{pm.container_port}: ports must be 1-65535"
            )
        if pm.protocol not in _PROTOCOLS:
            raise InvalidArgument(f"port mapping: unknown protocol {pm.protocol}")
        if pm.host_ip:
            try:
                ipaddress.ip_address(pm.host_ip)
            except ValueError:
                raise InvalidArgument(
                    f"port mapping: host_ip {excerpt(pm.host_ip)} is not an IP"
                ) from None
        if pm.host_port:
            entry: dict[str, Any] = {
                "hostPort": pm.host_port,
                "containerPort": pm.container_port,
                "protocol": _PROTOCOLS[pm.protocol],
            }
            if pm.host_ip:
                entry["hostIP"] = pm.host_ip
            out.append(entry)
    return out


def _resources(res: api_pb2.LinuxContainerResources) -> cgroups.Limits:
    return cgroups.Limits(
        cpu_period=max(res.cpu_period, 0),
        cpu_quota=max(res.cpu_quota, 0),
        cpu_shares=max(res.cpu_shares, 0),
        memory=max(res.memory_limit_in_bytes, 0),
        cpuset_cpus=res.cpuset_cpus,
        cpuset_mems=res.cpuset_mems,
    )


def pod_limits(cfg: api_pb2.PodSandboxConfig) -> cgroups.Limits:
    """The pod cgroup's limits: the pod's resources plus its overhead."""
    return _resources(cfg.linux.resources).plus_overhead(_resources(cfg.linux.overhead))


def plan(
    config: Config,
    cfg: api_pb2.PodSandboxConfig,
    handler: str,
    *,
    cgroup_driver: str,
    cgroup_version: int,
    pods_run: Path,
    network: Callable[[bool], cni.Network],
) -> tuple[Sandbox, Plan]:
    """The new pod (state "creating") and the rest of what it asks for; InvalidArgument
    naming the field for anything wrong. ``network(bandwidth)`` picks the CNI network."""
    if not cfg.HasField("metadata"):
        raise InvalidArgument("pod sandbox config has no metadata")
    md = cfg.metadata
    check_name("name", md.name)
    check_name("namespace", md.namespace)
    check_name("uid", md.uid)
    handler = handler or config.default_runtime
    if handler not in config.runtimes:
        raise InvalidArgument(
            f"unknown runtime handler {excerpt(handler)}; known handlers: "
            + ", ".join(sorted(config.runtimes))
        )
    nsopt = cfg.linux.security_context.namespace_options
    modes = {}
    for kind, value in (("network", nsopt.network), ("pid", nsopt.pid), ("ipc", nsopt.ipc)):
        if value not in _MODES or (kind != "pid" and value == api_pb2.CONTAINER):
            raise InvalidArgument(f"namespace mode {value} is not supported for {kind}")
        modes[kind] = _MODES[value]
    id_maps = userns.plan(nsopt)
    host_net = modes["network"] == "NODE"
    host_ipc = modes["ipc"] == "NODE"
    if host_net:
        hostname = socket.gethostname()
    else:
        hostname = podfiles.check_hostname(cfg.hostname or podfiles.default_hostname(md.name))
    bandwidth = podfiles.bandwidth(dict(cfg.annotations))
    want = Plan(
        sysctls=sysctls.plan(dict(cfg.linux.sysctls), host_net, host_ipc),
        shm_bytes=podfiles.shm_size(dict(cfg.annotations)) if not host_ipc else 0,
        ports=port_mappings(cfg),
        bandwidth=bandwidth,
        limits=pod_limits(cfg),
        resolv=podfiles.resolv_conf(
            list(cfg.dns_config.servers),
            list(cfg.dns_config.searches),
            list(cfg.dns_config.options),
        ),
    )
    cgroup_path = ""
    if cfg.linux.cgroup_parent:
        cgroup_path = cgroups.relative_path(cgroup_driver, cfg.linux.cgroup_parent)
    log_dir = cfg.log_directory
    if log_dir and not os.path.isabs(log_dir):
        raise InvalidArgument(f"log_directory {excerpt(log_dir)} must be an absolute path")
    net = network(bool(bandwidth)) if modes["network"] == "POD" else None
    want.builtin = net is not None and net.source == "built-in"
    sandbox_id = idindex.new_id()
    run_dir = pods_run / sandbox_id
    ns_dir = run_dir / "ns"
    pod_net = modes["network"] == "POD"
    pod_ipc = modes["ipc"] == "POD"
    sb = Sandbox(
        id=sandbox_id,
        name=md.name,
        namespace=md.namespace,
        uid=md.uid,
        attempt=md.attempt,
        created_at=time.time_ns(),
        runtime_handler=handler,
        config_bytes=encode_config(cfg),
        run_dir=str(run_dir),
        hostname=hostname,
        net_mode=modes["network"],
        ipc_mode=modes["ipc"],
        pid_mode=modes["pid"],
        cgroup_parent=cfg.linux.cgroup_parent,
        cgroup_path=cgroup_path,
        cgroup_version=cgroup_version,
        hosts_path=str(run_dir / "hosts"),
        resolv_path=str(run_dir / "resolv.conf"),
        hostname_path=str(run_dir / "hostname"),
        shm_path="/dev/shm" if host_ipc else str(run_dir / "shm"),
        log_directory=log_dir,
        netns_path=str(ns_dir / "net") if pod_net else None,
        uts_ns_path=str(ns_dir / "uts") if pod_net else None,
        ipc_ns_path=str(ns_dir / "ipc") if pod_ipc else None,
        pid_ns_path=str(ns_dir / "pid") if modes["pid"] == "POD" else None,
        userns_path=str(ns_dir / "user") if id_maps else None,
        userns_maps=id_maps.to_json() if id_maps else None,
        network=net.document() if net is not None else None,
        # Saved with the first record: a crash at any later point still owes a DEL
        # and an unmount.
        status=SandboxStatus(network_up=net is not None, shm_mounted=pod_ipc),
    )
    return sb, want

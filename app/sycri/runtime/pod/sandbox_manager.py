"""Pod sandboxes: create, stop, remove, look up. The domain half of the pod RPCs.

A pod is its pinned namespaces (no pause process), its shared files (hosts,
resolv.conf, hostname, /dev/shm), its CNI attachment and, with a shared PID
namespace, catatonit as PID 1. Every change is saved before the caller gets an
answer; a failed creation undoes what it did and leaves no record. The container
manager hooks in with ``on_stop`` / ``on_remove`` callbacks.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import ipaddress
import logging
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sycri import crashpoint
from sycri.api import api_pb2
from sycri.config import Config
from sycri.errors import FailedPrecondition, InvalidArgument, NotFound, excerpt
from sycri.fsutil import atomic_write
from sycri.network import cni
from sycri.runtime import idindex, linux
from sycri.runtime.cgroups import cgroups, conmon_cgroup, slices
from sycri.runtime.oci import features
from sycri.runtime.pod import namespaces, pod_init, podfiles, sysctls, userns
from sycri.runtime.pod.sandbox import (
    CREATING,
    NOTREADY,
    READY,
    Sandbox,
    SandboxStore,
    encode_config,
)

if TYPE_CHECKING:
    from sycri.runtime.stats.stats import PodInfo

log = logging.getLogger("sycri.sandboxes")

Hook = Callable[[str], Awaitable[None]]

_MODES = {api_pb2.POD: "POD", api_pb2.CONTAINER: "CONTAINER", api_pb2.NODE: "NODE"}
_MAX_NAME = 253
_PROTOCOLS = {api_pb2.TCP: "tcp", api_pb2.UDP: "udp", api_pb2.SCTP: "sctp"}


def _check_name(kind: str, value: str, *, required: bool = True) -> None:
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
    out = []
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
            entry = {
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


@dataclass
class SandboxManager:
    """Owns every pod sandbox of this node."""

    config: Config
    cgroup_driver: str
    on_stop: list[Hook] = field(default_factory=list)
    on_remove: list[Hook] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = SandboxStore(Path(self.config.root_dir) / "sandboxes")
        self.pods_run = Path(self.config.run_dir) / "pods"
        self.ipam_dir = str(Path(self.config.root_dir) / "cni" / "ipam")
        self.cidr_file = Path(self.config.root_dir) / "cni" / "pod-cidr"
        self.cni = cni.Runner(tuple(self.config.cni.bin_dirs))
        self.cgroup_version = cgroups.detect_version()
        self._locks: dict[str, asyncio.Lock] = {}
        self._shared = False
        self.store.load()

    # ----- lookup -------------------------------------------------------------

    def get(self, id_or_prefix: str) -> Sandbox:
        """The sandbox with this id or unique id prefix (NotFound / InvalidArgument)."""
        return self.store.resolve(id_or_prefix)

    def list(self) -> list[Sandbox]:
        return [sb for sb in self.store.all() if sb.state != CREATING]

    def stats_pods(self) -> builtins.list[PodInfo]:
        """Every pod as stats see it (the PodSource protocol of ``runtime.stats``)."""
        from sycri.runtime.stats import statsview

        return statsview.pod_infos(self.list())

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # ----- pod CIDR -----------------------------------------------------------

    def pod_subnets(self) -> builtins.list[str]:
        try:
            text = self.cidr_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        return [s for s in text.split(",") if s] or [self.config.cni.default_subnet]

    def set_pod_cidr(self, cidr: str) -> None:
        """UpdateRuntimeConfig: the built-in network's subnets for pods created from now on."""
        parts = [p.strip() for p in cidr.split(",") if p.strip()]
        if not parts:
            return
        nets = []
        for p in parts:
            try:
                nets.append(ipaddress.ip_network(p, strict=False))
            except ValueError:
                raise InvalidArgument(f"pod CIDR {excerpt(p)} is not a network") from None
            if nets[-1].num_addresses < 4:
                raise InvalidArgument(f"pod CIDR {p} is too small for pods")
        atomic_write(self.cidr_file, ",".join(str(n) for n in nets).encode())

    def network(self, bandwidth: bool = False) -> cni.Network:
        """The lexically first config in the conf dir, else the built-in network."""
        found = cni.load_first(self.config.cni.conf_dir)
        if found is not None:
            return found
        return cni.default_network(
            self.pod_subnets(), self.config.cni.default_bridge, self.ipam_dir, bandwidth=bandwidth
        )

    # ----- create -------------------------------------------------------------

    async def run(self, cfg: api_pb2.PodSandboxConfig, handler: str) -> Sandbox:
        sb, plan = self._plan(cfg, handler)
        if sb.userns_maps:
            binary = self.config.runtimes[sb.runtime_handler].binary
            if not (await features.probe(binary)).user_namespaces:
                raise InvalidArgument(
                    f"runtime handler {excerpt(sb.runtime_handler)} cannot run pods in a "
                    "user namespace on this node"
                )
        self.store.reserve(sb.name_key, sb.id)
        try:
            self.store.save(sb)  # state "creating": a crash now is cleaned up at start
            crashpoint.reach("pod.run.saved")
        except BaseException:
            self.store.release(sb.name_key, sb.id)
            raise
        async with self._lock(sb.id):
            try:
                await self._create(sb, cfg, plan)
                sb.state = READY
                self.store.save(sb)
                crashpoint.reach("pod.run.ready")
                log.info(
                    "pod sandbox %s (%s/%s) ready, ips %s",
                    sb.id[:12],
                    sb.namespace,
                    sb.name,
                    ",".join(sb.ips) or "-",
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._teardown(sb)
                self.store.delete(sb)
                self._locks.pop(sb.id, None)
                raise
        return sb

    def _plan(self, cfg: api_pb2.PodSandboxConfig, handler: str) -> tuple[Sandbox, _Plan]:
        if not cfg.HasField("metadata"):
            raise InvalidArgument("pod sandbox config has no metadata")
        md = cfg.metadata
        _check_name("name", md.name)
        _check_name("namespace", md.namespace)
        _check_name("uid", md.uid)
        handler = handler or self.config.default_runtime
        if handler not in self.config.runtimes:
            raise InvalidArgument(
                f"unknown runtime handler {excerpt(handler)}; known handlers: "
                + ", ".join(sorted(self.config.runtimes))
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
        plan = _Plan(
            sysctls=sysctls.plan(dict(cfg.linux.sysctls), host_net, host_ipc),
            shm_bytes=podfiles.shm_size(dict(cfg.annotations)) if not host_ipc else 0,
            ports=port_mappings(cfg),
            bandwidth=podfiles.bandwidth(dict(cfg.annotations)),
            limits=pod_limits(cfg),
        )
        resolv = podfiles.resolv_conf(
            list(cfg.dns_config.servers),
            list(cfg.dns_config.searches),
            list(cfg.dns_config.options),
        )
        plan.resolv = resolv
        cgroup_path = ""
        if cfg.linux.cgroup_parent:
            cgroup_path = cgroups.relative_path(self.cgroup_driver, cfg.linux.cgroup_parent)
        log_dir = cfg.log_directory
        if log_dir and not os.path.isabs(log_dir):
            raise InvalidArgument(f"log_directory {excerpt(log_dir)} must be an absolute path")
        net = self.network(bool(plan.bandwidth)) if modes["network"] == "POD" else None
        plan.builtin = net is not None and net.source == "built-in"
        sandbox_id = idindex.new_id()
        run_dir = self.pods_run / sandbox_id
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
            state=CREATING,
            runtime_handler=handler,
            config_bytes=encode_config(cfg),
            run_dir=str(run_dir),
            hostname=hostname,
            net_mode=modes["network"],
            ipc_mode=modes["ipc"],
            pid_mode=modes["pid"],
            cgroup_parent=cfg.linux.cgroup_parent,
            cgroup_path=cgroup_path,
            cgroup_version=self.cgroup_version,
            hosts_path=str(run_dir / "hosts"),
            resolv_path=str(run_dir / "resolv.conf"),
            hostname_path=str(run_dir / "hostname"),
            shm_path="/dev/shm" if host_ipc else str(run_dir / "shm"),
            shm_mounted=pod_ipc,
            log_directory=log_dir,
            netns_path=str(ns_dir / "net") if pod_net else None,
            uts_ns_path=str(ns_dir / "uts") if pod_net else None,
            ipc_ns_path=str(ns_dir / "ipc") if pod_ipc else None,
            userns_path=str(ns_dir / "user") if id_maps else None,
            userns_maps=id_maps.to_json() if id_maps else None,
            # Saved with the first record: a crash at any later point still owes a DEL.
            network=net.document() if net is not None else None,
            network_up=net is not None,
        )
        return sb, plan

    def _ensure_shared(self) -> None:
        if not self._shared:
            # Done at the first pod, not at start-up: a node that never runs a pod
            # (and every test server) leaves the host's mount table alone.
            namespaces.ensure_shared(Path(self.config.run_dir))
            self.pods_run.mkdir(mode=0o711, exist_ok=True)
            self._shared = True

    async def _create(self, sb: Sandbox, cfg: api_pb2.PodSandboxConfig, plan: _Plan) -> None:
        self._ensure_shared()
        run_dir = Path(sb.run_dir)
        run_dir.mkdir(mode=0o711, exist_ok=True)
        targets = {
            kind: Path(path)
            for kind, path in (
                ("net", sb.netns_path),
                ("uts", sb.uts_ns_path),
                ("ipc", sb.ipc_ns_path),
            )
            if path
        }
        if sb.userns_path and sb.userns_maps:
            # userns.plan made net, ipc and uts the pod's own: all are owned by its userns.
            targets["user"] = Path(sb.userns_path)
            await userns.create_pinned(userns.Mappings.from_json(sb.userns_maps), targets)
            uts, name = {"uts": str(targets["uts"])}, sb.hostname

            def set_hostname() -> None:
                namespaces.enter(uts)
                socket.sethostname(name)

            await linux.in_fresh_thread(set_hostname)
            crashpoint.reach("pod.run.namespaces")
        elif targets:
            hostname = sb.hostname if "uts" in targets else None
            await linux.in_fresh_thread(lambda: namespaces.create_pinned(targets, hostname))
            crashpoint.reach("pod.run.namespaces")
        if plan.sysctls and sb.userns_path:
            kinds = {"user", *(s.namespace for s in plan.sysctls)}
            await sysctls.apply_as_namespace_root(
                plan.sysctls, {k: str(targets[k]) for k in sorted(kinds)}
            )
        elif plan.sysctls:
            entered = {s.namespace: str(targets[s.namespace]) for s in plan.sysctls}
            items = plan.sysctls

            def apply() -> None:
                namespaces.enter(entered)
                sysctls.apply_here(items)

            await linux.in_fresh_thread(apply)
        if sb.cgroup_path and self._systemd_slices(sb):
            path = os.path.join(cgroups.CGROUP_ROOT, sb.cgroup_path.strip("/"))
            if not os.path.isdir(path):
                # Recorded before the start, so a crash in between leaks no slice.
                sb.cgroup_created = [path]
                self.store.save(sb)
                await asyncio.to_thread(slices.start, self._slice(sb), plan.limits)
        elif sb.cgroup_path:
            # Recorded before the mkdirs, so a crash in between leaks no cgroup.
            sb.cgroup_created = cgroups.PodCgroup.missing(sb.cgroup_version, sb.cgroup_path)
            if sb.cgroup_created:
                self.store.save(sb)
            pc = await asyncio.to_thread(
                cgroups.PodCgroup.ensure, sb.cgroup_version, sb.cgroup_path
            )
            sb.cgroup_created = sorted(set(sb.cgroup_created) | set(pc.created))
            leaf_created = any(
                d.rstrip("/").endswith(sb.cgroup_path.rstrip("/")) for d in pc.created
            )
            if leaf_created:
                await asyncio.to_thread(pc.apply, plan.limits)
        if sb.ipc_mode == "POD":
            shm = Path(sb.shm_path)
            shm.mkdir(mode=0o1777, exist_ok=True)
            linux.mount(
                "shm",
                shm,
                "tmpfs",
                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                f"mode=1777,size={plan.shm_bytes}",
            )
            crashpoint.reach("pod.run.shm")
        if sb.pid_mode == "POD":
            await self._start_init(sb, targets)
        if sb.net_mode == "POD":
            await self._network_up(sb, plan)
        self._write_files(sb, plan)

    async def _start_init(self, sb: Sandbox, targets: dict[str, Path]) -> None:
        prefix = None
        if sb.cgroup_path:
            # A leaf of the pod's cgroup, joined before the init starts: in the pod's
            # cgroup itself it would make every container's cgroup invalid on v2.
            parent = self._slice(sb) if self.cgroup_driver == "systemd" else sb.cgroup_path
            place = conmon_cgroup.init_placement(self.cgroup_driver, parent, sb.id)
            dirs = await asyncio.to_thread(
                conmon_cgroup.prepare,
                Path(sb.run_dir) / conmon_cgroup.INIT_RECORD,
                place,
                sb.cgroup_version,
            )
            prefix = conmon_cgroup.prefix(place, dirs)
        init = await pod_init.start(
            {k: str(v) for k, v in targets.items()},
            Path(sb.run_dir) / "init.log",
            owner=sb.id,
            prefix=prefix,
        )
        crashpoint.reach("pod.run.init")
        sb.init_pid, sb.init_start = init.pid, init.start
        sb.holder_pid, sb.holder_start = init.holder_pid, init.holder_start
        self.store.save(sb)
        target = Path(sb.run_dir) / "ns" / "pid"
        namespaces.pin_process(init.pid, "pid", target)
        sb.pid_ns_path = str(target)
        self.store.save(sb)

    def _attachment(
        self, sb: Sandbox, ifname: str, caps: dict[str, Any] | None = None
    ) -> cni.Attachment:
        return cni.Attachment(
            container_id=sb.id,
            netns=sb.netns_path or "",
            ifname=ifname,
            args=(
                ("K8S_POD_NAMESPACE", sb.namespace),
                ("K8S_POD_NAME", sb.name),
                ("K8S_POD_INFRA_CONTAINER_ID", sb.id),
                ("K8S_POD_UID", sb.uid),
            ),
            capabilities=caps or {},
        )

    async def _network_up(self, sb: Sandbox, plan: _Plan) -> None:
        assert sb.network is not None
        net = cni.parse(sb.network, f"sandbox {sb.id[:12]}")
        caps: dict[str, Any] = {}
        if plan.ports:
            caps["portMappings"] = plan.ports
        if plan.bandwidth:
            caps["bandwidth"] = plan.bandwidth
        if plan.builtin:
            _enable_forwarding(net)
        await self.cni.add(cni.LOOPBACK, self._attachment(sb, "lo"))
        result = await self.cni.add(net, self._attachment(sb, "eth0", caps))
        crashpoint.reach("pod.run.network")
        sb.cni_result = result
        sb.ips = cni.result_ips(result)

    def _write_files(self, sb: Sandbox, plan: _Plan) -> None:
        if sb.net_mode == "NODE":
            hosts_text = _read_or("/etc/hosts", podfiles.HOSTS_HEADER)
        else:
            hosts_text = podfiles.hosts(sb.hostname, sb.ips)
        resolv = plan.resolv if plan.resolv else _read_or("/etc/resolv.conf", "")
        # Run-dir files die with the node, so they skip fsync (a pod start pays ~4 ms each).
        _replace(sb.hosts_path, hosts_text)
        _replace(sb.resolv_path, resolv)
        _replace(sb.hostname_path, sb.hostname + "\n")
        if sb.log_directory:
            log_root = Path(self.config.pod_log_dir).resolve()
            target = Path(sb.log_directory).resolve()
            if target == log_root or log_root in target.parents:
                target.mkdir(parents=True, exist_ok=True, mode=0o755)

    async def check_network(self, sb: Sandbox) -> str:
        """CNI CHECK of a pod's attachment: "ok", "not attached", or the plugin's error."""
        if not (sb.ready and sb.network_up and sb.network and sb.cni_result):
            return "not attached"
        net = cni.parse(sb.network, f"sandbox {sb.id[:12]}")
        try:
            await self.cni.check(
                net, self._attachment(sb, "eth0", self._caps_of(sb)), sb.cni_result
            )
        except cni.CniError as exc:
            return exc.message
        return "ok"

    # ----- resize -------------------------------------------------------------

    async def update_resources(
        self,
        id_or_prefix: str,
        resources: api_pb2.LinuxContainerResources | None,
        overhead: api_pb2.LinuxContainerResources | None,
    ) -> Sandbox:
        """New pod-level resources after an in-place resize (None keeps the recorded one).

        The limits go to the pod's cgroup only where RunPodSandbox set them: when sycri
        made the cgroup itself. A cgroup kubelet made is kubelet's to size, so then only
        the record changes. The record is saved after the cgroup is written, so a failed
        write (memory below what the pod uses) leaves record and cgroup as they were.
        """
        if not id_or_prefix:
            raise InvalidArgument("UpdatePodSandboxResources needs a pod_sandbox_id")
        sb = self.get(id_or_prefix)
        async with self._lock(sb.id):
            if self.store.find(sb.id) is None or sb.removing:
                raise NotFound(f"pod sandbox {sb.id} is being removed")
            cfg = api_pb2.PodSandboxConfig()
            cfg.CopyFrom(sb.config)  # the record's is shared; it changes only once saved
            old = pod_limits(cfg)
            if resources is not None:
                cfg.linux.resources.CopyFrom(resources)
            if overhead is not None:
                cfg.linux.overhead.CopyFrom(overhead)
            new = pod_limits(cfg)
            if self._owns_cgroup(sb) and new != old and self._systemd_slices(sb):
                await asyncio.to_thread(slices.resize, self._slice(sb), new)
            elif self._owns_cgroup(sb) and new != old:
                pc = cgroups.PodCgroup(sb.cgroup_version, sb.cgroup_path, [])
                try:
                    await asyncio.to_thread(pc.apply, new, update=True)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(pc.apply, old, update=True)
                    raise
            sb.config_bytes = encode_config(cfg)
            self.store.save(sb)
            log.info("pod sandbox %s resources now %s", sb.id[:12], new)
        return sb

    def _systemd_slices(self, sb: Sandbox) -> bool:
        """Whether the pod's slice is systemd's to make (systemd driver, cgroup v2)."""
        return self.cgroup_driver == "systemd" and sb.cgroup_version == 2

    @staticmethod
    def _slice(sb: Sandbox) -> str:
        return sb.cgroup_parent.split(":", 1)[0]

    @staticmethod
    def _owns_cgroup(sb: Sandbox) -> bool:
        """Whether sycri made the pod's cgroup (then it also set its limits)."""
        leaf = sb.cgroup_path.rstrip("/")
        return bool(leaf) and any(d.rstrip("/").endswith(leaf) for d in sb.cgroup_created)

    # ----- stop and remove ----------------------------------------------------

    async def stop(self, id_or_prefix: str) -> None:
        sb = self.get(id_or_prefix)
        async with self._lock(sb.id):
            await self._stop(sb)

    async def _stop(self, sb: Sandbox) -> None:
        if sb.state != NOTREADY:
            # First: a stop cut short by a crash leaves a pod that says NOTREADY (and
            # takes no new containers) rather than READY without its network.
            sb.state = NOTREADY
            self.store.save(sb)
        for hook in list(self.on_stop):
            await hook(sb.id)
        crashpoint.reach("pod.stop.containers")
        await pod_init.stop(sb.init_pid, sb.init_start, sb.holder_pid, sb.holder_start)
        await self._network_down(sb)
        crashpoint.reach("pod.stop.network")

    async def _network_down(self, sb: Sandbox) -> None:
        if sb.network_up and sb.network is not None:
            net = cni.parse(sb.network, f"sandbox {sb.id[:12]}")
            att = self._attachment(sb, "eth0", self._caps_of(sb))
            if att.netns and not linux.is_mountpoint(att.netns):
                # The namespace is gone (its pin was undone): the CNI spec's DEL then
                # gets no CNI_NETNS and still releases the address; the bridge
                # plugin's NAT rules need the namespace, so they go here.
                await self.cni.delete(net, dataclasses.replace(att, netns=""), sb.cni_result)
                await cni.drop_masquerade(net, sb.id)
            else:
                await self.cni.delete(net, att, sb.cni_result)
        if sb.network_up:
            sb.network_up = False
            sb.ips = []
            if sb.state != CREATING:
                self.store.save(sb)

    def _caps_of(self, sb: Sandbox) -> dict[str, Any]:
        cfg = sb.config
        caps: dict[str, Any] = {}
        with contextlib.suppress(InvalidArgument):
            ports = port_mappings(cfg)
            if ports:
                caps["portMappings"] = ports
            bw = podfiles.bandwidth(dict(cfg.annotations))
            if bw:
                caps["bandwidth"] = bw
        return caps

    async def remove(self, id_or_prefix: str) -> bool:
        """Stop if needed, then remove everything; False when no such pod existed."""
        try:
            sb = self.get(id_or_prefix)
        except NotFound:
            return False
        async with self._lock(sb.id):
            if self.store.find(sb.id) is not sb:
                return False  # removed while we waited
            await self._stop(sb)
            if not sb.removing:
                sb.removing = True  # a crash from here on: the next start finishes it
                self.store.save(sb)
            for hook in list(self.on_remove):
                await hook(sb.id)
            crashpoint.reach("pod.remove.containers")
            await self._teardown(sb)
            crashpoint.reach("pod.remove.teardown")
            self.store.delete(sb)
        self._locks.pop(sb.id, None)
        log.info("pod sandbox %s (%s/%s) removed", sb.id[:12], sb.namespace, sb.name)
        return True

    async def _teardown(self, sb: Sandbox) -> None:
        """Undo everything a (possibly half-made) sandbox holds; each step is idempotent."""
        await pod_init.stop(sb.init_pid, sb.init_start, sb.holder_pid, sb.holder_start)
        await self._network_down(sb)
        run_dir = Path(sb.run_dir)
        if sb.shm_mounted:
            with contextlib.suppress(OSError):
                linux.umount(sb.shm_path, linux.MNT_DETACH)
        for kind in ("pid", "net", "ipc", "uts", "user"):
            namespaces.release(run_dir / "ns" / kind)
        await asyncio.to_thread(conmon_cgroup.release, run_dir / conmon_cgroup.INIT_RECORD)
        if sb.cgroup_created and self._systemd_slices(sb):
            await asyncio.to_thread(slices.stop, self._slice(sb))
        if sb.cgroup_created:
            await asyncio.to_thread(cgroups.remove_dirs, sb.cgroup_created)
        # Anything still mounted below the pod dir is ours; never delete through a mount.
        for target in sorted(linux.mount_targets_under(run_dir), key=len, reverse=True):
            with contextlib.suppress(OSError):
                linux.umount(target, linux.MNT_DETACH)
        if run_dir.exists() and not linux.mount_targets_under(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)

    # ----- start-up -----------------------------------------------------------

    async def recover(self) -> None:
        """Finish what a crash interrupted: half-created pods are undone, half-removed
        ones removed (their containers too: recover the containers first); pods whose
        namespaces or init are gone are NOTREADY."""
        mounted = set(linux.mount_targets_under("/"))  # once, not once per pin
        for sb in self.store.all():
            if sb.state == CREATING:
                log.warning("removing pod sandbox %s left half-created by a crash", sb.id[:12])
                try:
                    if sb.pid_mode == "POD":
                        await pod_init.kill_marked(sb.id)
                    await self._teardown(sb)
                except Exception:
                    log.exception("cleaning up sandbox %s", sb.id[:12])
                self.store.delete(sb)
                continue
            if sb.removing:
                log.warning("finishing the removal of pod sandbox %s", sb.id[:12])
                try:
                    await self.remove(sb.id)
                except Exception:
                    log.exception("removing sandbox %s", sb.id[:12])
                continue
            if sb.state == READY and not self._alive(sb, mounted):
                log.warning("pod sandbox %s lost its namespaces or init: NOTREADY", sb.id[:12])
                sb.state = NOTREADY
                self.store.save(sb)

    def check_alive(self, sb: Sandbox) -> Sandbox:
        """Mark a READY pod NOTREADY when its init died (kubelet then replaces the pod)."""
        if sb.ready and sb.pid_mode == "POD" and not pod_init.alive(sb.init_pid, sb.init_start):
            log.warning("pod sandbox %s lost its init process: NOTREADY", sb.id[:12])
            sb.state = NOTREADY
            self.store.save(sb)
        return sb

    def _alive(self, sb: Sandbox, mounted: set[str]) -> bool:
        for p in (sb.netns_path, sb.ipc_ns_path, sb.uts_ns_path, sb.userns_path):
            if p and os.path.realpath(p) not in mounted:
                return False
        return not (sb.pid_mode == "POD" and not pod_init.alive(sb.init_pid, sb.init_start))


@dataclass
class _Plan:
    """What a RunPodSandbox request asks for, validated before anything is created."""

    sysctls: list[sysctls.Sysctl]
    shm_bytes: int
    ports: list[dict[str, Any]]
    bandwidth: dict[str, int]
    limits: cgroups.Limits
    resolv: str = ""
    builtin: bool = False  # the built-in network (needs IP forwarding on the host)


def _replace(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _read_or(path: str, default: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return default


def _enable_forwarding(net: cni.Network) -> None:
    """The built-in bridge routes pod traffic through the host: turn IP forwarding on."""
    keys = ["/proc/sys/net/ipv4/ip_forward"]
    for p in net.plugins:
        for r in (p.get("ipam") or {}).get("ranges") or []:
            if r and ":" in str(r[0].get("subnet", "")):
                keys.append("/proc/sys/net/ipv6/conf/all/forwarding")
    for k in keys:
        try:
            if Path(k).read_text().strip() != "1":
                Path(k).write_text("1")
        except OSError as exc:
            raise FailedPrecondition(f"cannot enable IP forwarding ({k}): {exc.strerror}") from None

"""Making a planned pod, step by step: namespaces (pinned), sysctls, cgroup, /dev/shm,
the init (catatonit) for a shared PID namespace, the CNI attachment, and the files
(hosts, resolv.conf, hostname) its containers mount.

Each step that makes something the status must name for a teardown is recorded
(``save``) before the step, or is idempotent to undo from the metadata alone."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from sycri import crashpoint
from sycri.config import Config
from sycri.runtime import linux
from sycri.runtime.cgroups import conmon_cgroup
from sycri.runtime.pod import namespaces, pod_init, podcgroup, podfiles, sysctls, userns
from sycri.runtime.pod.network import PodNetwork
from sycri.runtime.pod.plan import Plan
from sycri.runtime.pod.sandbox import Sandbox

Save = Callable[[], Awaitable[None]]


class PodBuilder:
    """Builds pods from plans; what it makes goes to the pod's status."""

    def __init__(
        self, config: Config, cgroup_driver: str, network: PodNetwork, pods_run: Path
    ) -> None:
        self.config = config
        self.cgroup_driver = cgroup_driver
        self.network = network
        self.pods_run = pods_run
        self._shared = False

    def _ensure_shared(self) -> None:
        if not self._shared:
            # Done at the first pod, not at start-up: a node that never runs a pod
            # (and every test server) leaves the host's mount table alone.
            namespaces.ensure_shared(Path(self.config.run_dir))
            self.pods_run.mkdir(mode=0o711, exist_ok=True)
            self._shared = True

    async def build(self, sb: Sandbox, plan: Plan, save: Save) -> None:
        await asyncio.to_thread(self._ensure_shared)
        run_dir = Path(sb.run_dir)
        await asyncio.to_thread(run_dir.mkdir, 0o711, False, True)
        targets = {
            kind: Path(path)
            for kind, path in (
                ("net", sb.netns_path),
                ("uts", sb.uts_ns_path),
                ("ipc", sb.ipc_ns_path),
            )
            if path
        }
        await self._namespaces(sb, targets)
        await self._sysctls(sb, plan, targets)
        await podcgroup.make(sb, self.cgroup_driver, plan.limits, save)
        if sb.ipc_mode == "POD":
            await asyncio.to_thread(_mount_shm, Path(sb.shm_path), plan.shm_bytes)
            crashpoint.reach("pod.run.shm")
        if sb.pid_mode == "POD":
            await self._start_init(sb, targets, save)
        if sb.net_mode == "POD":
            await self.network.up(sb, plan)
        await asyncio.to_thread(self._write_files, sb, plan)

    async def _namespaces(self, sb: Sandbox, targets: dict[str, Path]) -> None:
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

    @staticmethod
    async def _sysctls(sb: Sandbox, plan: Plan, targets: dict[str, Path]) -> None:
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

    async def _start_init(self, sb: Sandbox, targets: dict[str, Path], save: Save) -> None:
        prefix = None
        if sb.cgroup_path:
            # A leaf of the pod's cgroup, joined before the init starts: in the pod's
            # cgroup itself it would make every container's cgroup invalid on v2.
            systemd = self.cgroup_driver == "systemd"
            parent = podcgroup.slice_name(sb) if systemd else sb.cgroup_path
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
        st = sb.status
        st.init_pid, st.init_start = init.pid, init.start
        st.holder_pid, st.holder_start = init.holder_pid, init.holder_start
        await save()
        assert sb.pid_ns_path is not None
        await asyncio.to_thread(namespaces.pin_process, init.pid, "pid", Path(sb.pid_ns_path))

    def _write_files(self, sb: Sandbox, plan: Plan) -> None:
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


def _mount_shm(shm: Path, size: int) -> None:
    shm.mkdir(mode=0o1777, exist_ok=True)
    linux.mount(
        "shm",
        shm,
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
        f"mode=1777,size={size}",
    )


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

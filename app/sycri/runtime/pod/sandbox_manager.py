"""Pod sandboxes: run, stop, remove, resize, look up. The domain half of the pod RPCs.

A pod is its pinned namespaces (no pause process), its shared files, its CNI attachment
and, with a shared PID namespace, catatonit as PID 1 (:mod:`.plan` validates, :mod:`.create`
makes, :mod:`.teardown` undoes, :mod:`.network` attaches, :mod:`.recovery` finishes what a
crash or a failure left). A pod's status changes here only, in the lifecycle calls and
when its init exits (:mod:`.watch`), and is saved before the caller gets an answer;
lookups answer from memory. The container manager hooks in with ``on_stop`` /
``on_remove``; ``on_exit`` hears of a pod that went NOTREADY on its own.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sycri import crashpoint
from sycri.api import api_pb2
from sycri.config import Config
from sycri.errors import Internal, InvalidArgument, NotFound, excerpt
from sycri.network import cni
from sycri.runtime.cgroups import cgroups
from sycri.runtime.oci import features
from sycri.runtime.pod import plan as planning
from sycri.runtime.pod import podcgroup, recovery
from sycri.runtime.pod.create import PodBuilder
from sycri.runtime.pod.netcheck import NetCheck, NetworkChecks
from sycri.runtime.pod.network import PodNetwork
from sycri.runtime.pod.plan import pod_limits, port_mappings
from sycri.runtime.pod.sandbox import CREATING, NOTREADY, READY, Sandbox, encode_config
from sycri.runtime.pod.store import SandboxStore
from sycri.runtime.pod.teardown import stop_init, teardown
from sycri.runtime.pod.watch import InitWatch

if TYPE_CHECKING:
    from sycri.runtime.stats.stats import PodInfo

__all__ = ["SandboxManager", "pod_limits", "port_mappings"]

log = logging.getLogger("sycri.sandboxes")

Hook = Callable[[str], Awaitable[None]]

# How often teardowns that failed are tried again while sycri runs.
RETRY_INTERVAL = 30.0


@dataclass
class SandboxManager:
    """Owns every pod sandbox of this node."""

    config: Config
    cgroup_driver: str
    on_stop: builtins.list[Hook] = field(default_factory=list)
    on_remove: builtins.list[Hook] = field(default_factory=list)
    on_exit: builtins.list[Callable[[Sandbox], None]] = field(default_factory=list)
    retry_interval: float = RETRY_INTERVAL

    def __post_init__(self) -> None:
        self.store = SandboxStore(Path(self.config.root_dir) / "sandboxes")
        self.pods_run = Path(self.config.run_dir) / "pods"
        self.net = PodNetwork(self.config)
        self.checks = NetworkChecks(self.net.check)
        self.builder = PodBuilder(self.config, self.cgroup_driver, self.net, self.pods_run)
        self.cgroup_version = cgroups.detect_version()
        self.watch = InitWatch(self._init_exited)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.store.load()

    # ----- lookup (memory only) -------------------------------------------------

    def get(self, id_or_prefix: str) -> Sandbox:
        """The sandbox with this id or unique id prefix (NotFound / InvalidArgument)."""
        return self.store.resolve(id_or_prefix)

    def list(self) -> builtins.list[Sandbox]:
        """Every pod kubelet may see: all but those being created (a pod whose creation
        failed stays, NOTREADY, until its teardown has finished)."""
        return [sb for sb in self.store.all() if sb.state != CREATING]

    def stats_pods(self) -> builtins.list[PodInfo]:
        """Every pod as stats see it (the PodSource protocol of ``runtime.stats``)."""
        from sycri.runtime.stats import statsview

        return statsview.pod_infos(self.list())

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # ----- network --------------------------------------------------------------

    def pod_subnets(self) -> builtins.list[str]:
        return self.net.pod_subnets()

    async def set_pod_cidr(self, cidr: str) -> None:
        """UpdateRuntimeConfig: validated, then written (fsynced) in a worker thread."""
        await asyncio.to_thread(self.net.set_pod_cidr, cidr)

    def network(self, bandwidth: bool = False) -> cni.Network:
        return self.net.network(bandwidth)

    async def check_network(self, sb: Sandbox) -> str:
        """A CNI CHECK of the pod's attachment now (kept for :meth:`network_check`)."""
        return (await self.checks.refresh(sb)).result

    def network_check(self, sb: Sandbox) -> NetCheck:
        """The pod's last CNI CHECK, from memory; an old one is refreshed in the
        background (:mod:`.netcheck`)."""
        return self.checks.report(sb)

    # ----- run ------------------------------------------------------------------

    async def run(self, cfg: api_pb2.PodSandboxConfig, handler: str) -> Sandbox:
        # Validation reads the CNI conf dir: in a worker thread, like every file access.
        sb, plan = await asyncio.to_thread(
            planning.plan,
            self.config,
            cfg,
            handler,
            cgroup_driver=self.cgroup_driver,
            cgroup_version=self.cgroup_version,
            pods_run=self.pods_run,
            network=self.net.network,
        )
        if sb.userns_maps:
            binary = self.config.runtimes[sb.runtime_handler].binary
            if not (await features.probe(binary)).user_namespaces:
                raise InvalidArgument(
                    f"runtime handler {excerpt(sb.runtime_handler)} cannot run pods in a "
                    "user namespace on this node"
                )
        self.store.reserve(sb.name_key, sb.id)
        try:
            await self.store.create(sb)  # "creating": a crash now is undone at start
            crashpoint.reach("pod.run.saved")
        except BaseException:
            self.store.release(sb.name_key, sb.id)
            raise
        async with self.lock(sb.id):
            built = self.checks.clock()
            try:
                await self.builder.build(sb, plan, lambda: self.store.save_status(sb))
                sb.status.state = READY
                await self.store.save_status(sb)
                crashpoint.reach("pod.run.ready")
            except BaseException as exc:
                await self._abandon(sb, exc)
                raise
            self.checks.added(sb, built)
            if sb.pid_mode == "POD":
                self.watch.watch(sb.id, sb.status.init_pid, sb.status.init_start)
        log.info(
            "pod sandbox %s (%s/%s) ready, ips %s",
            sb.id[:12],
            sb.namespace,
            sb.name,
            ",".join(sb.ips) or "-",
        )
        return sb

    async def _abandon(self, sb: Sandbox, exc: BaseException) -> None:
        """RunPodSandbox failed: the pod is NOTREADY and owes a teardown. Its name is
        free again; its record stays until the teardown has finished (now, or at a
        retry), so nothing it made is ever forgotten."""
        sb.status.state = NOTREADY
        sb.status.failed = True
        sb.status.reason = f"RunPodSandbox failed: {getattr(exc, 'message', None) or exc!r}"
        self.store.release(sb.name_key, sb.id)
        await self.store.save_status(sb)
        try:
            await self.finish_teardown(sb)
        except Exception:  # a bug in the teardown must not hide why the run failed
            log.exception("tearing down pod sandbox %s after its failed run", sb.id[:12])

    # ----- stop and remove --------------------------------------------------------

    async def stop(self, id_or_prefix: str) -> None:
        sb = self.get(id_or_prefix)
        async with self.lock(sb.id):
            current = self.store.find(sb.id)
            if current is None:
                return
            await self._stop(current)
            if current.status.failed:
                await self.finish_teardown(current)

    async def _stop(self, sb: Sandbox) -> None:
        if sb.state != NOTREADY:
            # First: a stop cut short by a crash leaves a pod that says NOTREADY (and
            # takes no new containers) rather than READY without its network.
            sb.status.state = NOTREADY
            sb.status.reason = "stopped"
            await self.store.save_status(sb)
        self.watch.unwatch(sb.id)
        for hook in list(self.on_stop):
            await hook(sb.id)
        crashpoint.reach("pod.stop.containers")
        await stop_init(sb)  # one still alive is logged; the teardown reports it
        owed = sb.status.network_up
        await self.net.down(sb)
        crashpoint.reach("pod.stop.network")
        if owed:
            await self.store.save_status(sb)

    async def remove(self, id_or_prefix: str) -> bool:
        """Stop if needed, then remove everything; False when no such pod existed.
        A teardown that leaves something keeps the record (NOTREADY, with what is left)
        and fails; the next RemovePodSandbox, a restart or the periodic retry finish it."""
        try:
            sb = self.get(id_or_prefix)
        except NotFound:
            return False
        async with self.lock(sb.id):
            current = self.store.find(sb.id)
            if current is None:
                return False  # removed while we waited
            sb = current
            await self._stop(sb)
            if not sb.status.removing:
                sb.status.removing = True  # a crash from here on: the next start finishes it
                await self.store.save_status(sb)
            for hook in list(self.on_remove):
                await hook(sb.id)
            crashpoint.reach("pod.remove.containers")
            if not await self.finish_teardown(sb, "pod.remove.teardown"):
                raise Internal(
                    f"pod sandbox {sb.id} is not fully removed; still held: "
                    + "; ".join(sb.status.left)
                )
        self._locks.pop(sb.id, None)
        log.info("pod sandbox %s (%s/%s) removed", sb.id[:12], sb.namespace, sb.name)
        return True

    async def finish_teardown(self, sb: Sandbox, point: str = "") -> bool:
        """Tear the pod down; delete its record when nothing is left (True), else keep it
        with what is left. The caller holds the pod's lock."""
        left = await teardown(sb, self.net, self.cgroup_driver)
        if not left:
            if point:
                crashpoint.reach(point)
            await self.store.delete(sb)
            self.watch.unwatch(sb.id)
            self.checks.forget(sb.id)
            return True
        sb.status.left = left
        await self.store.save_status(sb)
        return False

    # ----- resize -----------------------------------------------------------------

    async def update_resources(
        self,
        id_or_prefix: str,
        resources: api_pb2.LinuxContainerResources | None,
        overhead: api_pb2.LinuxContainerResources | None,
    ) -> Sandbox:
        """New pod-level resources after an in-place resize (None keeps the recorded one).

        The limits go to the pod's cgroup only where RunPodSandbox set them: when sycri
        made the cgroup itself. A cgroup kubelet made is kubelet's to size, so then only
        the record changes. The metadata is replaced after the cgroup is written, so a
        failed write (memory below what the pod uses) leaves record and cgroup as they were.
        """
        if not id_or_prefix:
            raise InvalidArgument("UpdatePodSandboxResources needs a pod_sandbox_id")
        sb = self.get(id_or_prefix)
        async with self.lock(sb.id):
            current = self.store.find(sb.id)
            if current is None or current.removing or current.status.failed:
                raise NotFound(f"pod sandbox {sb.id} is being removed")
            cfg = api_pb2.PodSandboxConfig()
            cfg.CopyFrom(current.config)  # the record's is shared; it changes only once saved
            old = pod_limits(cfg)
            if resources is not None:
                cfg.linux.resources.CopyFrom(resources)
            if overhead is not None:
                cfg.linux.overhead.CopyFrom(overhead)
            new = pod_limits(cfg)
            await podcgroup.resize(current, self.cgroup_driver, old, new)
            sb = dataclasses.replace(current, config_bytes=encode_config(cfg))
            await self.store.replace_metadata(sb)
            log.info("pod sandbox %s resources now %s", sb.id[:12], new)
        return sb

    # ----- the init's exit ----------------------------------------------------------

    def _init_exited(self, pod_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.init_exited(pod_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def init_exited(self, pod_id: str) -> None:
        """The pod's init is gone: a READY pod becomes NOTREADY (kubelet then replaces
        it), saved, and ``on_exit`` hears of it. A stop in progress already made it
        NOTREADY; then this is nothing."""
        async with self.lock(pod_id):
            sb = self.store.find(pod_id)
            if sb is None or not sb.ready:
                return
            log.warning("pod sandbox %s lost its init process: NOTREADY", pod_id[:12])
            sb.status.state = NOTREADY
            sb.status.reason = "the pod's init process exited"
            await self.store.save_status(sb)
        for hook in list(self.on_exit):
            hook(sb)

    # ----- start-up and retries -------------------------------------------------------

    async def recover(self) -> None:
        """Finish what a crash interrupted (containers first: see :mod:`.recovery`), then
        retry owed teardowns every ``retry_interval`` seconds while sycri runs."""
        await recovery.recover(self)
        task = asyncio.get_running_loop().create_task(recovery.retry_forever(self))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Stop watching and retrying (the pods themselves are left as they are)."""
        self.watch.close()
        self.checks.close()
        for task in list(self._tasks):
            task.cancel()

"""Many pods created and removed at once through sycri's socket, and what they leave.

Used by the e2e load test (CI size) and bench/load.py (200 pods). Each pod runs one
busybox container; a round creates every pod concurrently, then removes every pod
concurrently. The caller compares :func:`leftovers` before and after.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sycri.api import api_pb2

from tests.support.pods import PodNet, footprint, pod_config
from tests.support.server import SycriServer


@dataclass(frozen=True)
class Leftovers:
    mounts: int
    ns_files: int
    veths: int
    iptables_rules: int
    cgroups: int
    pod_dirs: int
    conmons: int
    run_files: int
    container_dirs: int


def _conmons(base: Path) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"conmon") and any(str(base).encode() in a for a in args):
            n += 1
    return n


def leftovers(server: SycriServer, net: PodNet, cgroup_rel: str) -> Leftovers:
    run_dir = server.base / "run"
    fp = footprint(run_dir, net, set(), cgroup_rel)
    containers = server.base / "root" / "containers"
    return Leftovers(
        mounts=fp.mounts,
        ns_files=fp.ns_files,
        veths=fp.veths,
        iptables_rules=fp.iptables_rules,
        cgroups=fp.cgroups,
        pod_dirs=fp.pod_dirs,
        conmons=_conmons(server.base),
        run_files=sum(len(files) for _, _, files in os.walk(run_dir)),
        container_dirs=sum(1 for _ in containers.iterdir()) if containers.exists() else 0,
    )


@dataclass
class RoundResult:
    seconds_create: float
    seconds_remove: float
    failures: list[tuple[str, str]] = field(default_factory=list)  # (call, status code)


@dataclass
class EventCounter:
    """Counts container events per container, read in a thread from GetContainerEvents."""

    server: SycriServer
    seen: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    q: queue.Queue = field(default_factory=queue.Queue)

    def start(self) -> EventCounter:
        self.call = self.server.runtime().GetContainerEvents(api_pb2.GetEventsRequest())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.3)
        return self

    def _read(self) -> None:
        try:
            for ev in self.call:
                self.seen[ev.container_id].append(ev.container_event_type)
        except grpc.RpcError:
            pass

    def stop(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def run_round(
    server: SycriServer, image: str, pods: int, workers: int, cgroup_root: str, tag: str
) -> tuple[RoundResult, list[str]]:
    """Create ``pods`` pods (one running container each) at once, then remove them all."""
    rt = server.runtime()
    result = RoundResult(0.0, 0.0)
    lock = threading.Lock()
    made: list[tuple[str, str]] = []

    def fail(call: str, exc: grpc.RpcError) -> None:
        with lock:
            result.failures.append((call, exc.code().name))

    def one(i: int) -> None:
        cfg = pod_config(f"load-{tag}-{i}", cgroup_parent=f"/{cgroup_root}/pod-{tag}-{i}")
        cfg.log_directory = str(server.base / "logs" / f"{tag}-{i}")
        try:
            pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        except grpc.RpcError as exc:
            return fail("RunPodSandbox", exc)
        ccfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="main"),
            image=api_pb2.ImageSpec(image=image),
            args=["exec sleep 3600"],
            log_path="main.log",
        )
        try:
            cid = rt.CreateContainer(
                api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg)
            ).container_id
            rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        except grpc.RpcError as exc:
            fail("Create/StartContainer", exc)
            cid = ""
        with lock:
            made.append((pod, cid))

    def remove(pod: str) -> None:
        try:
            rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
            rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
        except grpc.RpcError as exc:
            fail("Stop/RemovePodSandbox", exc)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, range(pods)))
    result.seconds_create = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(remove, [p for p, _ in made]))
    result.seconds_remove = time.perf_counter() - t0
    return result, [c for _, c in made if c]

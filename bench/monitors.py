"""conmon in a cgroup of its own, and dead conmons noticed while sycri runs.

Prints what placing conmon costs (making and removing its leaf cgroup; the /bin/sh
wrapper that joins it before exec, beside a bare exec), CreateContainer+StartContainer
latency with it, and how long sycri takes to notice a SIGKILLed conmon (kill to the
container's status saying it is unmonitored), and what the exit monitor's once-a-second
look at every running container's conmon holds the event loop for: reading each one's
pid file and cmdline, against one poll of kept pidfds (stand-in conmons: shells whose
command line names conmon and the container). Run as root from the repository root:
``.venv/bin/python bench/monitors.py [N] [--looks-only [M]]`` (M stand-ins, 500 by default).
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]

from sycri.api import api_pb2  # noqa: E402
from sycri.runtime.cgroups import cgroups, conmon_cgroup  # noqa: E402
from sycri.runtime.container import conmon  # noqa: E402
from sycri.runtime.container.conmonwatch import ConmonWatch  # noqa: E402
from sycri.runtime.container.containers import UNMONITORED  # noqa: E402

from bench.containers import show, sleeper  # noqa: E402
from tests.support import oci, registry  # noqa: E402
from tests.support.conmons import StandInConmon  # noqa: E402
from tests.support.node import remove_cgroups  # noqa: E402
from tests.support.pods import PodNet, pod_config, unmount_all  # noqa: E402
from tests.support.server import SycriServer  # noqa: E402


def placement_cost(n: int, work: Path) -> None:
    version = cgroups.detect_version()
    top = f"sycri-bench-{secrets.token_hex(4)}"
    prep, wrapped, bare = [], [], []
    try:
        for i in range(n):
            bundle = work / f"b{i}"
            bundle.mkdir(parents=True)
            place = conmon_cgroup.placement("pod", "cgroupfs", f"/{top}/sycri-{i}", f"{i:064x}")
            t0 = time.monotonic()
            dirs = conmon_cgroup.prepare(bundle, place, version)
            t1 = time.monotonic()
            subprocess.run([*conmon_cgroup.prefix(place, dirs), "/bin/true"], check=True)
            t2 = time.monotonic()
            subprocess.run(["/bin/true"], check=True)
            t3 = time.monotonic()
            conmon_cgroup.release(bundle)
            t4 = time.monotonic()
            prep.append((t1 - t0) + (t4 - t3))
            wrapped.append(t2 - t1)
            bare.append(t3 - t2)
    finally:
        remove_cgroups(top)
    show("conmon leaf: make + remove", prep)
    show("/bin/sh join wrapper + exec /bin/true", wrapped)
    show("exec /bin/true (floor)", bare)


def look_cost(m: int, work: Path, looks: int = 50) -> None:
    """One look at ``m`` live conmons, by their files and by pidfds (ms, median)."""
    stand_ins: list[StandInConmon] = []
    try:
        for i in range(m):
            cid = f"{i:08x}" + "c" * 56
            stand_ins.append(StandInConmon(work / cid, cid))
        running = [(s.cid, s.bundle) for s in stand_ins]
        by_files, by_pidfd = [], []
        watch = ConmonWatch()
        t0 = time.perf_counter()
        assert watch.dead(running) == []
        first = time.perf_counter() - t0
        for _ in range(looks):
            t0 = time.perf_counter()
            assert all(conmon.monitors_container(b, c) for c, b in running)
            by_files.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert watch.dead(running) == []
            by_pidfd.append(time.perf_counter() - t0)
        watch.close()
        print(f"\n## A look at {m} running containers' conmons ({looks} looks, median)\n")
        print(f"pid file + cmdline of each: {statistics.median(by_files) * 1000:.2f} ms")
        print(f"one poll of kept pidfds:    {statistics.median(by_pidfd) * 1000:.3f} ms")
        print(f"(taking the pidfds, once:   {first * 1000:.2f} ms)")
    finally:
        for s in stand_ins:
            s.kill()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    work = Path(tempfile.mkdtemp(prefix="symonb-", dir="/tmp"))
    if "--looks-only" in sys.argv:
        rest = sys.argv[sys.argv.index("--looks-only") + 1 :]
        try:
            look_cost(int(rest[0]) if rest else 500, work / "l")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    look_cost(500, work / "l")
    placement_cost(n, work / "p")
    reg = registry.start(work / "registry")
    net = PodNet.new()
    server = SycriServer(work / "s", flags=net.flags())
    cg_root = f"sycri-bench-{secrets.token_hex(4)}"
    try:
        oci.push(reg, "bench/busybox", "v1", oci.busybox_image())
        image = f"{reg.host}/bench/busybox:v1"
        server.start()
        rt = server.runtime()
        server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        pod_cfg = pod_config("bench", cgroup_parent=f"/{cg_root}/pod")
        pod_cfg.log_directory = str(work / "logs")
        pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
        starts, notice, ids = [], [], []
        for i in range(n):
            cfg = sleeper(i, image)
            t0 = time.monotonic()
            req = api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg
            )
            cid = rt.CreateContainer(req).container_id
            rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
            starts.append(time.monotonic() - t0)
            ids.append(cid)
        show("CreateContainer+StartContainer", starts)
        for cid in ids:
            pid = int((server.base / "root/containers" / cid / "conmon.pid").read_text())
            t0 = time.monotonic()
            os.kill(pid, 9)
            while (
                rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status.message
                != UNMONITORED
            ):
                time.sleep(0.01)
            notice.append(time.monotonic() - t0)
        show("SIGKILLed conmon noticed (unmonitored)", notice)
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    finally:
        server.stop()
        reg.stop()
        unmount_all(work)
        net.cleanup()
        remove_cgroups(cg_root)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root")
    main()

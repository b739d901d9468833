"""Container lifecycle through sycri's socket, beside bare ``runc run`` as the floor.

Prints CreateContainer+StartContainer latency (median, p95) over N containers, the
same for ``runc run -d`` of an equivalent bundle, StopContainer+RemoveContainer
latency, conmon's RSS per running container and sycri's RSS with M containers running.
Run as root from the repository root: ``.venv/bin/python bench/containers.py [N] [M]``.
"""

from __future__ import annotations

import json
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

from bench.report import percentile  # noqa: E402
from tests.support import oci, registry  # noqa: E402
from tests.support.containers import busybox_rootfs  # noqa: E402
from tests.support.pods import PodNet, pod_config, unmount_all  # noqa: E402
from tests.support.server import SycriServer  # noqa: E402


def sleeper(i: int, image: str) -> api_pb2.ContainerConfig:
    """Container ``c<i>`` of ``image`` sleeping an hour, logging to ``c<i>.log``."""
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=f"c{i}"),
        image=api_pb2.ImageSpec(image=image),
        command=["/bin/sleep", "3600"],
        log_path=f"c{i}.log",
    )


def show(label: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"{label:42s} n={len(ms):3d}  median {statistics.median(ms):7.1f} ms"
        f"  p95 {percentile(ms, 95):7.1f} ms"
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def conmon_pids(bundle_root: Path) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"conmon") and str(bundle_root).encode() in b" ".join(cmd):
            out.append(int(entry.name))
    return out


def bare_runc(n: int, work: Path) -> list[float]:
    """``runc run -d`` of a bundle on a plain directory rootfs: the floor."""
    rootfs = busybox_rootfs(work / "rootfs")
    spec_dir = work / "bundle"
    spec_dir.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(spec_dir)], check=True)
    spec = json.loads((spec_dir / "config.json").read_text())
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/sleep", "3600"]
    (spec_dir / "config.json").write_text(json.dumps(spec))
    root = work / "runc-root"
    times, ids = [], []
    for i in range(n):
        cid = f"bench-{secrets.token_hex(4)}-{i}"
        t0 = time.monotonic()
        subprocess.run(
            ["runc", "--root", str(root), "run", "-d", "--bundle", str(spec_dir), cid],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        times.append(time.monotonic() - t0)
        ids.append(cid)
    for cid in ids:
        subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], check=False)
    return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    work = Path(tempfile.mkdtemp(prefix="sybench-", dir="/tmp"))
    reg = registry.start(work / "registry")
    net = PodNet.new()
    server = SycriServer(work / "s", flags=net.flags())
    try:
        repo = "bench/busybox"
        oci.push(reg, repo, "v1", oci.busybox_image())
        image = f"{reg.host}/{repo}:v1"
        server.start()
        rt = server.runtime()
        server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        pod_cfg = pod_config("bench")
        pod_cfg.log_directory = str(work / "logs")
        pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id

        start_times, ids = [], []
        for i in range(max(n, m)):
            t0 = time.monotonic()
            cid = rt.CreateContainer(
                api_pb2.CreateContainerRequest(
                    pod_sandbox_id=pod, config=sleeper(i, image), sandbox_config=pod_cfg
                )
            ).container_id
            rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
            if i < n:
                start_times.append(time.monotonic() - t0)
            ids.append(cid)
        show("sycri CreateContainer+StartContainer", start_times)
        floor = bare_runc(n, work / "runc")
        show("bare runc run -d (floor)", floor)
        print(
            f"{'ratio sycri / runc (median)':42s} "
            f"{statistics.median(start_times) / statistics.median(floor):.2f}x"
        )
        conmons = conmon_pids(work / "s")
        rss = [rss_kib(p) for p in conmons]
        print(f"{'conmon RSS per running container':42s} median {statistics.median(rss):.0f} KiB"
              f" (n={len(rss)})")  # fmt: skip
        assert server.proc is not None
        print(
            f"{f'sycri RSS with {len(ids)} running containers':42s} {rss_kib(server.proc.pid)} KiB"
        )
        t_list = []
        for _ in range(20):
            t0 = time.monotonic()
            rt.ListContainers(api_pb2.ListContainersRequest())
            t_list.append(time.monotonic() - t0)
        show(f"ListContainers ({len(ids)} containers)", t_list)
        stop_times = []
        for cid in ids:
            t0 = time.monotonic()
            rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
            rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
            stop_times.append(time.monotonic() - t0)
        show("StopContainer(timeout 0)+RemoveContainer", stop_times)
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    finally:
        server.stop()
        reg.stop()
        unmount_all(work)
        net.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root")
    main()

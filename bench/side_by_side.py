"""sycri beside Debian's containerd (1.6, CRI plugin + runc), the same CRI requests to
both in one run, each on its own socket, root, bridge and subnet.

Phases (each can be skipped):
  calls  — N pod+container lifecycles, alternating runtimes per iteration; per call
           median and p99 (ms) and the ratio sycri/containerd; CPU of each daemon
           per lifecycle (its own + reaped children; containerd's shims not included).
  scale  — P pods with C containers each on both; status/list calls at that size;
           RSS of sycri (+conmons) and containerd (+shims).
  pulls  — a small busybox image and the realistic images of bench/realistic_images.py,
           cold each time (the image is removed afterwards); seconds, CPU (the daemon's
           own and its reaped children's: tar2sqfs for sycri) and disk used
           (containerd: content + overlay snapshots + metadata; sycri: SIF + kept layers
           + index, not the pull's work dir, which goes after the reply).
With ``--profile DIR``, py-spy samples sycri during each phase (raw collapsed stacks
plus a top-frames summary in DIR). Nothing here asserts on time.

Run as root from the repository root:
  .venv/bin/python bench/side_by_side.py [--iterations 30] [--pods 100 --containers 5]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]

import grpc  # noqa: E402
from sycri.api import api_pb2, api_pb2_grpc  # noqa: E402

from bench.report import ratio_table  # noqa: E402
from tests.support import oci, registry  # noqa: E402
from tests.support.containerd import BINARY as CONTAINERD  # noqa: E402
from tests.support.containerd import containerd  # noqa: E402
from tests.support.node import served  # noqa: E402
from tests.support.pods import pod_config  # noqa: E402

BUSYBOX_REPO = "bench/busybox"
# Exits on SIGTERM (a shell as pid 1 with a trap), so StopContainer measures the stop path.
WORKLOAD = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    channel: grpc.Channel
    pid: int
    cgroup: str
    logs: Path
    disk: list[Path]
    helpers: Callable[[], list[int]]  # pids of its per-container/pod helper processes
    rt: api_pb2_grpc.RuntimeServiceStub = field(init=False)
    img: api_pb2_grpc.ImageServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.img = api_pb2_grpc.ImageServiceStub(self.channel)


class Timings:
    def __init__(self) -> None:
        self.ms: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        self.order: list[str] = []

    def call(self, op: str, target: Target, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        self.add(op, target.name, time.perf_counter() - t0)
        return out

    def add(self, op: str, runtime: str, seconds: float) -> None:
        if op not in self.order:
            self.order.append(op)
        self.ms[(op, runtime)].append(seconds * 1000)

    def table(self, title: str) -> None:
        print(f"\n## {title}\n")
        ratio_table(
            (op, self.ms.get((op, "containerd"), []), self.ms.get((op, "sycri"), []))
            for op in self.order
        )


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own utime+stime, reaped children's) of ``pid``, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    return own, children


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def du_bytes(paths: list[Path]) -> int:
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return 0
    # Not check=True: a file deleted while du walks makes it exit 1 with a good total.
    out = subprocess.run(["du", "-sbc", *existing], capture_output=True, text=True)
    return int(out.stdout.splitlines()[-1].split()[0])


def conmon_pids(base: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"conmon .*{base}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


# -- requests (identical for both runtimes) -------------------------------------------------


def pod_request(target: Target, name: str) -> api_pb2.RunPodSandboxRequest:
    cfg = pod_config(name, cgroup_parent=target.cgroup)
    cfg.log_directory = str(target.logs / name)
    return api_pb2.RunPodSandboxRequest(config=cfg)


def container_request(
    pod_id: str, pod: api_pb2.RunPodSandboxRequest, name: str, image: str
) -> api_pb2.CreateContainerRequest:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        command=WORKLOAD,
        log_path=f"{name}.log",
    )
    return api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod.config
    )


def lifecycle(t: Target, tm: Timings, image: str, name: str, status_calls: int = 5) -> None:
    """One pod with one container, kubelet's calls in kubelet's order, each timed."""
    rt, img = t.rt, t.img
    tm.call("Version (gRPC floor)", t, rt.Version, api_pb2.VersionRequest())
    t0 = time.perf_counter()
    req = pod_request(t, name)
    pod = tm.call("RunPodSandbox", t, rt.RunPodSandbox, req).pod_sandbox_id
    creq = container_request(pod, req, "c", image)
    t1 = time.perf_counter()
    cid = rt.CreateContainer(creq).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    tm.add("CreateContainer+StartContainer", t.name, time.perf_counter() - t1)
    tm.add("pod+container running", t.name, time.perf_counter() - t0)
    for _ in range(status_calls):
        tm.call(
            "PodSandboxStatus",
            t,
            rt.PodSandboxStatus,
            api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod),
        )
        tm.call(
            "ContainerStatus",
            t,
            rt.ContainerStatus,
            api_pb2.ContainerStatusRequest(container_id=cid),
        )
    verbose = ("PodSandboxStatus verbose", rt.PodSandboxStatus, api_pb2.PodSandboxStatusRequest)
    tm.call(verbose[0], t, verbose[1], verbose[2](pod_sandbox_id=pod, verbose=True))
    tm.call(
        "ContainerStatus verbose",
        t,
        rt.ContainerStatus,
        api_pb2.ContainerStatusRequest(container_id=cid, verbose=True),
    )
    tm.call("ListPodSandbox", t, rt.ListPodSandbox, api_pb2.ListPodSandboxRequest())
    tm.call("ListContainers", t, rt.ListContainers, api_pb2.ListContainersRequest())
    tm.call(
        "ImageStatus",
        t,
        img.ImageStatus,
        api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image)),
    )
    tm.call("ListImages", t, img.ListImages, api_pb2.ListImagesRequest())
    tm.call(
        "StopContainer",
        t,
        rt.StopContainer,
        api_pb2.StopContainerRequest(container_id=cid, timeout=10),
    )
    tm.call(
        "RemoveContainer", t, rt.RemoveContainer, api_pb2.RemoveContainerRequest(container_id=cid)
    )
    tm.call(
        "StopPodSandbox", t, rt.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod)
    )
    tm.call(
        "RemovePodSandbox",
        t,
        rt.RemovePodSandbox,
        api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod),
    )


# -- profiling -------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled(pid: int, out_dir: Path | None, phase: str) -> Iterator[None]:
    """py-spy sampling ``pid`` (sycri) for the body; writes ``phase.txt`` (raw stacks)
    and ``phase.top.txt`` (functions by share of samples, inclusive and self)."""
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{phase}.txt"
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "-p",
            str(pid),
            "-r",
            "250",
            "--format",
            "raw",
            "-o",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        if raw.exists():
            (out_dir / f"{phase}.top.txt").write_text(top_frames(raw))


def top_frames(raw: Path, n: int = 40) -> str:
    """Share of samples per function: inclusive (anywhere on the stack) and self (leaf)."""
    incl: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        total += k
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")") for f in stack.split(";")]
        for f in set(frames):
            incl[f] += k
        leaf[frames[-1]] += k
    lines = [f"samples: {total}", "", "inclusive:"]
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(n)]
    lines += ["", "self:"] + [f"{100 * c / total:5.1f}%  {f}" for f, c in leaf.most_common(n)]
    return "\n".join(lines) + "\n"


# -- phases ----------------------------------------------------------------------------------


def phase_calls(targets: list[Target], image: str, iterations: int, prof: Path | None) -> None:
    tm = Timings()
    for t in targets:  # warm-up: bridges, iptables chains, imports, first mounts
        for i in range(2):
            lifecycle(t, tm, image, f"warm{i}")
    tm = Timings()
    cpu0 = {t.name: cpu_seconds(t.pid) for t in targets}
    with profiled(targets[-1].pid, prof, "calls"):
        for i in range(iterations):
            for t in targets if i % 2 else reversed(targets):
                lifecycle(t, tm, image, f"p{i}")
    tm.table(f"CRI calls, {iterations} pod+container lifecycles each, interleaved")
    print("\nCPU per pod lifecycle (daemon's own + reaped children; shims/conmon not counted):")
    for t in targets:
        own0, ch0 = cpu0[t.name]
        own1, ch1 = cpu_seconds(t.pid)
        print(
            f"  {t.name:10s} own {1000 * (own1 - own0) / iterations:6.1f} ms"
            f"  children {1000 * (ch1 - ch0) / iterations:6.1f} ms"
        )


def phase_scale(
    targets: list[Target], image: str, pods: int, containers: int, samples: int, prof: Path | None
) -> None:
    tm = Timings()
    ids: dict[str, tuple[list[str], list[str]]] = {}
    for t in targets:
        t0 = time.perf_counter()
        pod_ids, cids = [], []
        for p in range(pods):
            req = pod_request(t, f"s{p}")
            pod = t.rt.RunPodSandbox(req).pod_sandbox_id
            pod_ids.append(pod)
            for c in range(containers):
                cid = t.rt.CreateContainer(container_request(pod, req, f"c{c}", image)).container_id
                t.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
                cids.append(cid)
        ids[t.name] = (pod_ids, cids)
        print(
            f"{t.name}: {pods} pods, {len(cids)} containers started in {time.perf_counter() - t0:.1f} s"
        )
    rng = random.Random(1)
    with profiled(targets[-1].pid, prof, "scale-status"):
        for _ in range(samples):
            for t in targets:
                pod_ids, cids = ids[t.name]
                tm.call(
                    "PodSandboxStatus",
                    t,
                    t.rt.PodSandboxStatus,
                    api_pb2.PodSandboxStatusRequest(pod_sandbox_id=rng.choice(pod_ids)),
                )
                tm.call(
                    "ContainerStatus",
                    t,
                    t.rt.ContainerStatus,
                    api_pb2.ContainerStatusRequest(container_id=rng.choice(cids)),
                )
        for _ in range(max(10, samples // 5)):
            for t in targets:
                tm.call("ListPodSandbox", t, t.rt.ListPodSandbox, api_pb2.ListPodSandboxRequest())
                tm.call("ListContainers", t, t.rt.ListContainers, api_pb2.ListContainersRequest())
    with profiled(targets[-1].pid, prof, "scale-stats"):
        for _ in range(max(5, samples // 20)):
            for t in targets:
                tm.call(
                    "ListPodSandboxStats",
                    t,
                    t.rt.ListPodSandboxStats,
                    api_pb2.ListPodSandboxStatsRequest(),
                )
    tm.table(f"status and list at {pods} pods / {pods * containers} containers")
    print("\nRSS with all of them running:")
    for t in targets:
        helpers = t.helpers()
        print(
            f"  {t.name:10s} daemon {rss_mib([t.pid]):7.1f} MiB"
            f"  + {len(helpers)} helpers {rss_mib(helpers):8.1f} MiB"
        )
    teardown = Timings()
    with profiled(targets[-1].pid, prof, "scale-teardown"):
        for t in targets:
            pod_ids, cids = ids[t.name]
            for cid in cids:
                teardown.call(
                    "StopContainer",
                    t,
                    t.rt.StopContainer,
                    api_pb2.StopContainerRequest(container_id=cid, timeout=10),
                )
                teardown.call(
                    "RemoveContainer",
                    t,
                    t.rt.RemoveContainer,
                    api_pb2.RemoveContainerRequest(container_id=cid),
                )
            for pod in pod_ids:
                teardown.call(
                    "StopPodSandbox",
                    t,
                    t.rt.StopPodSandbox,
                    api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod),
                )
                teardown.call(
                    "RemovePodSandbox",
                    t,
                    t.rt.RemovePodSandbox,
                    api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod),
                )
    teardown.table(
        f"teardown of {pods} pods / {pods * containers} containers (each call from that size down)"
    )


def phase_pulls(
    targets: list[Target], reg, images: dict[str, oci.Image], runs: int, prof: Path | None
) -> None:
    tm = Timings()
    disk: dict[tuple[str, str], int] = {}
    cpu: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for name in images:
        ref = f"{reg.host}/bench/{name}:v1"
        for run in range(runs):
            for t in targets if run % 2 else reversed(targets):
                before = du_bytes(t.disk)
                cpu0 = sum(cpu_seconds(t.pid))
                spec = api_pb2.ImageSpec(image=ref)
                with profiled(t.pid, prof if t.name == "sycri" else None, f"pull-{name}-{run}"):
                    tm.call(
                        f"PullImage {name}",
                        t,
                        t.img.PullImage,
                        api_pb2.PullImageRequest(image=spec),
                        timeout=1800,
                    )
                used = sum(cpu_seconds(t.pid)) - cpu0
                cpu[(name, t.name)].append(used)
                disk[(name, t.name)] = du_bytes(t.disk) - before
                took = tm.ms[(f"PullImage {name}", t.name)][-1] / 1000
                print(f"pulled {name} with {t.name} in {took:.2f} s, CPU {used:.2f} s", flush=True)
                t.img.RemoveImage(api_pb2.RemoveImageRequest(image=spec))
    tm.table(f"pulls, cold ({runs} run(s) each, image removed after each)")
    # CPU moves far less than wall time on a machine shared with other work.
    print("\n| image | containerd CPU (median, range) | sycri CPU | ratio |")
    print("| --- | --- | --- | --- |")
    for name in images:
        c, s_ = cpu[(name, "containerd")], cpu[(name, "sycri")]
        mc, ms = statistics.median(c), statistics.median(s_)
        print(
            f"| {name} | {mc:.2f} s ({min(c):.2f}-{max(c):.2f}) | {ms:.2f} s "
            f"({min(s_):.2f}-{max(s_):.2f}) | {ms / mc:.2f}x |"
        )
    print("\n| image | compressed | containerd disk | sycri disk | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name, image in images.items():
        c, s = disk[(name, "containerd")], disk[(name, "sycri")]
        size = sum(len(layer.blob) for layer in image.layers)
        print(
            f"| {name} | {size / 1e6:.1f} MB | {c / 1e6:.1f} MB | {s / 1e6:.1f} MB | {s / c:.2f}x |"
        )


def small_images(count: int) -> dict[str, oci.Image]:
    """busybox images with a layer of their own each, so every pull fetches a layer."""
    out = {}
    for i in range(count):
        entries = [*oci.busybox_entries(), oci.file("etc/bench-id", secrets.token_hex(16))]
        out[f"busybox{i}"] = oci.Image(layers=[oci.layer(entries)])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--containers", type=int, default=5, help="per pod in the scale phase")
    ap.add_argument("--samples", type=int, default=200, help="status calls per runtime at scale")
    ap.add_argument("--pull-runs", type=int, default=1)
    ap.add_argument("--small-pulls", type=int, default=5)
    ap.add_argument(
        "--skip", action="append", default=[], choices=["calls", "scale", "pulls", "realistic"]
    )
    ap.add_argument(
        "--images",
        default=",".join(realistic_names()),
        help="realistic images to pull, comma-separated (of: %(default)s)",
    )
    ap.add_argument("--profile", type=Path, help="py-spy sycri during each phase, into this dir")
    ap.add_argument("--sycri-flag", action="append", default=[], help="extra sycri serve flag")
    args = ap.parse_args()

    tag = secrets.token_hex(3)
    work = Path(f"/tmp/sybb-{tag}")  # short: conmon socket paths
    work.mkdir()
    reg = registry.start(work / "registry")
    try:
        oci.push(reg, BUSYBOX_REPO, "v1", oci.busybox_image())
        busybox = f"{reg.host}/{BUSYBOX_REPO}:v1"
        pulls = small_images(args.small_pulls) if args.small_pulls else {}
        if "pulls" not in args.skip and "realistic" not in args.skip:
            from bench.realistic_images import images as realistic

            pulls.update(realistic(tuple(n for n in args.images.split(",") if n)))
        for name, image in pulls.items():
            oci.push(reg, f"bench/{name}", "v1", image)
        sy_cg, ct_cg = f"sybench-s{tag}", f"sybench-c{tag}"
        flags = ["--log-level", "info", *args.sycri_flag]
        with (
            containerd(work / "c", reg, ct_cg, ip_masq=True) as ctrd,
            served(work / "s", flags=flags, cgroup_root=sy_cg) as (server, _net),
            grpc.insecure_channel(ctrd.endpoint) as cch,
        ):
            assert server.proc is not None
            sy_base = work / "s"
            targets = [
                Target("containerd", cch, ctrd.pid(), f"/{ct_cg}", work / "c-logs", ctrd.disk_paths(), ctrd.shim_pids),
                Target("sycri", server.channel(), server.proc.pid, f"/{sy_cg}", sy_base / "pods",
                       [sy_base / "root/images" / d for d in ("sif", "blobs", "index.db")], lambda: conmon_pids(sy_base)),
            ]  # fmt: skip
            for t in targets:
                t.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=busybox)))
            print(
                f"# sycri vs containerd {subprocess.run([CONTAINERD, '--version'], capture_output=True, text=True).stdout.split()[2]}"
            )
            print(f"host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start")
            if "calls" not in args.skip:
                phase_calls(targets, busybox, args.iterations, args.profile)
            if "scale" not in args.skip:
                phase_scale(
                    targets, busybox, args.pods, args.containers, args.samples, args.profile
                )
            if "pulls" not in args.skip:
                phase_pulls(targets, reg, pulls, args.pull_runs, args.profile)
            print(f"\nload {os.getloadavg()[0]:.2f} at end")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def realistic_names() -> tuple[str, ...]:
    from bench.realistic_images import NAMES

    return NAMES


if __name__ == "__main__":
    raise SystemExit(main())

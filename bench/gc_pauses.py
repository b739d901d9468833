"""Python's garbage collector in a served sycri: how often it runs and how long each
collection holds the event loop, with N running containers and a stream of kubelet's
read calls, with start-up's objects frozen (what sycri does) and without (``gc.freeze``
made a no-op in that sycri). Prints each variant's collections by generation (count,
longest, total ms) while the calls ran, and the calls' latency.

A ``sitecustomize`` module in a temporary directory (on the served sycri's
``PYTHONPATH``) records each collection's duration with ``gc.callbacks``; sycri itself
is unchanged. Run as root from the repository root:
``.venv/bin/python bench/gc_pauses.py [--containers 100] [--rounds 1500]``.
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]

from sycri.api import api_pb2  # noqa: E402

from bench.containers import sleeper  # noqa: E402
from bench.report import percentile  # noqa: E402
from tests.support import oci, registry  # noqa: E402
from tests.support.node import served  # noqa: E402
from tests.support.pods import pod_config  # noqa: E402

HOOK = """\
import gc, os, time
_out = os.environ["BENCH_GC_OUT"]
if os.environ.get("BENCH_GC_NO_FREEZE"):
    gc.freeze = lambda: None
_start = [0.0]
def _timed(phase, info):
    if phase == "start":
        _start[0] = time.perf_counter()
        return
    with open(_out, "a") as f:
        f.write(f"{info['generation']} {(time.perf_counter() - _start[0]) * 1000:.3f}\\n")
gc.callbacks.append(_timed)
"""
MARK = "calls\n"


def collections_in(path: Path) -> dict[int, list[float]]:
    """Each generation's collection durations (ms) after the mark."""
    text = path.read_text() if path.exists() else ""
    by: dict[int, list[float]] = collections.defaultdict(list)
    for line in text.split(MARK, 1)[-1].splitlines():
        gen, ms = line.split()
        by[int(gen)].append(float(ms))
    return by


def run_variant(name: str, work: Path, image: str, n: int, rounds: int, freeze: bool) -> None:
    out = work / f"{name}.gc"
    env = {
        "PYTHONPATH": f"{ROOT / 'app'}{os.pathsep}{work / 'hook'}",
        "BENCH_GC_OUT": str(out),
    }
    if not freeze:
        env["BENCH_GC_NO_FREEZE"] = "1"
    with served(work / name, flags=["--log-level", "info"], env=env) as (server, _net):
        rt = server.runtime()
        server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        pod_cfg = pod_config(f"gc-{name}")
        pod_cfg.log_directory = str(work / f"{name}-logs")
        pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
        cid = ""
        for i in range(n):
            cfg = sleeper(i, image)
            req = api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg
            )
            cid = rt.CreateContainer(req).container_id
            rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        with out.open("a") as f:
            f.write(MARK)
        calls = {
            "ListContainers": lambda: rt.ListContainers(api_pb2.ListContainersRequest()),
            "PodSandboxStatus": lambda: rt.PodSandboxStatus(
                api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod)
            ),
            "ContainerStatus": lambda: rt.ContainerStatus(
                api_pb2.ContainerStatusRequest(container_id=cid)
            ),
            "ListPodSandbox": lambda: rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()),
        }
        ms: dict[str, list[float]] = {c: [] for c in calls}
        for _ in range(rounds):
            for call, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                ms[call].append((time.perf_counter() - t0) * 1000)
    print(f"\n## {name}: {n} containers, {rounds} rounds of 4 calls\n")
    print("| generation | collections | longest | total |")
    print("| --- | --- | --- | --- |")
    for gen, values in sorted(collections_in(out).items()):
        print(f"| {gen} | {len(values)} | {max(values):.2f} ms | {sum(values):.1f} ms |")
    print("\n| call | median | p99 | max |")
    print("| --- | --- | --- | --- |")
    for call, values in ms.items():
        values.sort()
        print(
            f"| {call} | {percentile(values, 50):.2f} ms | {percentile(values, 99):.2f} ms "
            f"| {values[-1]:.2f} ms |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1500)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sygc-", dir="/tmp"))
    reg = registry.start(work / "registry")
    try:
        (work / "hook").mkdir()
        (work / "hook" / "sitecustomize.py").write_text(HOOK)
        oci.push(reg, "bench/busybox", "v1", oci.busybox_image())
        image = f"{reg.host}/bench/busybox:v1"
        for name, freeze in (("frozen", True), ("not-frozen", False)):
            run_variant(name, work, image, args.containers, args.rounds, freeze)
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root")
    sys.exit(main())

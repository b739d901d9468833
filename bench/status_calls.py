"""critest's status calls in critest's order, over gRPC, and each once more: ImageStatus
right after PullImage (critest's StatusImage), ContainerStatus verbose right after
StartContainer (critest's StatusContainer), then the same calls again with nothing
before them, ListImages and Version (the gRPC floor). The difference between "after"
and "again" is what the previous call left running (work after its reply); the
difference between "again" and Version is the handler's own.

Several sycris side by side (``--variant NAME:K=V`` adds one with ``K=V`` in its
environment, e.g. main's code: ``--variant "main:PYTHONPATH=/work/main/app"``), the
same Python client, iterations interleaved. Then the handlers in process (no gRPC), in
µs per call. Nothing here asserts on time.

Run as root from the repository root:
  .venv/bin/python bench/status_calls.py [--iterations 30] [--variant ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]

from sycri.api import api_pb2  # noqa: E402

from tests.support import oci, registry  # noqa: E402
from tests.support.node import served  # noqa: E402
from tests.support.pods import pod_config  # noqa: E402

WORKLOAD = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


class Timings:
    def __init__(self) -> None:
        self.ms: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        self.ops: list[str] = []

    def call(self, op: str, who: str, fn: Callable[..., Any], req: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(req)
        self.ms[(op, who)].append((time.perf_counter() - t0) * 1000)
        if op not in self.ops:
            self.ops.append(op)
        return out

    def table(self, names: list[str]) -> None:
        first = names[0]
        head = " | ".join(f"{n} median | {n} p90" for n in names)
        ratios = " | ".join(f"{first}/{n}" for n in names[1:])
        print(f"| call | {head} | {ratios} |".replace("|  |", "|"))
        print("|" + " --- |" * (1 + 2 * len(names) + len(names) - 1))
        for op in self.ops:
            cells, meds = [], []
            for n in names:
                v = sorted(self.ms[(op, n)])
                meds.append(statistics.median(v))
                cells.append(f"{meds[-1]:.3f} ms | {v[int(len(v) * 0.9)]:.3f} ms")
            rs = [f"{meds[0] / m:.2f}x" for m in meds[1:]]
            print(f"| {op} | {' | '.join(cells)} |" + (f" {' | '.join(rs)} |" if rs else ""))


def image_round(tm: Timings, who: str, img: Any, name: str) -> None:
    spec = api_pb2.ImageSpec(image=name)
    img.PullImage(api_pb2.PullImageRequest(image=spec))
    tm.call(
        "ImageStatus after PullImage", who, img.ImageStatus, api_pb2.ImageStatusRequest(image=spec)
    )
    tm.call("ImageStatus again", who, img.ImageStatus, api_pb2.ImageStatusRequest(image=spec))
    tm.call("ListImages", who, img.ListImages, api_pb2.ListImagesRequest())
    img.RemoveImage(api_pb2.RemoveImageRequest(image=spec))


def container_round(tm: Timings, who: str, rt: Any, image: str, logs: Path) -> None:
    cfg = pod_config(f"sc{secrets.token_hex(3)}")
    cfg.log_directory = str(logs)
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    ccfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="c"),
        image=api_pb2.ImageSpec(image=image),
        command=WORKLOAD,
        log_path="c.log",
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg)
    cid = rt.CreateContainer(req).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    verbose = api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
    tm.call("ContainerStatus verbose after StartContainer", who, rt.ContainerStatus, verbose)
    tm.call("ContainerStatus verbose again", who, rt.ContainerStatus, verbose)
    plain = api_pb2.ContainerStatusRequest(container_id=cid)
    tm.call("ContainerStatus", who, rt.ContainerStatus, plain)
    tm.call("Version (gRPC floor)", who, rt.Version, api_pb2.VersionRequest())
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=10))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))


# -- in process --------------------------------------------------------------------------------


async def in_process(n: int) -> None:
    """The handlers awaited directly on a node of records (no runc, no gRPC)."""
    from sycri.config import Config
    from sycri.cri import container, image
    from sycri.cri.wire import as_message
    from sycri.runtime.container.record import RUNNING, ContainerRecord, Metadata, Status
    from sycri.server import assemble

    from tests.unit.test_ocispec import build_full

    tmp = Path(tempfile.mkdtemp(prefix="stc"))
    node = assemble(Config(root_dir=str(tmp / "root"), run_dir=str(tmp / "run")))
    try:
        cfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="c"), image=api_pb2.ImageSpec(image="img")
        )
        cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
        built = build_full(cfg)
        bundle = tmp / "bundle"
        bundle.mkdir()
        (bundle / "config.json").write_bytes(built.json())
        meta = Metadata(
            id="c" * 64, pod_id="p" * 64, name="c", attempt=0, image_id="sha256:" + "e" * 64,
            image_ref="127.0.0.1:5000/x@sha256:" + "f" * 64, runtime_handler="",
            bundle=str(bundle), log_path="/var/log/x.log",
            config_b64=base64.b64encode(cfg.SerializeToString()).decode(), created_at=1,
        )  # fmt: skip
        await node.containers.store.add(ContainerRecord(meta, Status(RUNNING, pid=5, started_at=2)))
        results: list[tuple[str, float]] = []

        async def measure(label: str, make: Callable[[], Any]) -> None:
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(n):
                    reply = await make()
                    data = getattr(reply, "data", None)
                    if not isinstance(data, bytes):
                        as_message(reply).SerializeToString()
                best = min(best, (time.perf_counter() - t0) / n * 1e6)
            results.append((label, best))

        for verbose in (False, True):
            req = api_pb2.ContainerStatusRequest(container_id=meta.id, verbose=verbose)
            await measure(
                f"ContainerStatus{' verbose' if verbose else ''} (spec {len(built.json())} B)",
                lambda req=req: container.container_status(node, req),
            )
        config = oci.busybox_image().config()
        iid = oci.sha256(config)
        tag = "127.0.0.1:5000/cri-bench/busybox:latest"
        rdigest = "127.0.0.1:5000/cri-bench/busybox@sha256:" + "b" * 64
        node.images.store.add(
            iid, "/nonexistent.sif", 1 << 20, config,
            tags=[tag, "docker.io/library/busybox:latest"], digests=[rdigest], user_ref=tag,
        )  # fmt: skip
        for name in (tag, "busybox", iid, iid[7:], iid[7:19], rdigest):
            ireq = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=name))
            await measure(
                f"ImageStatus {name if len(name) < 48 else name[:45] + '...'}",
                lambda ireq=ireq: image.image_status(node, ireq),
            )
        lreq = api_pb2.ListImagesRequest()
        await measure("ListImages", lambda: image.list_images(node, lreq))
        fl = api_pb2.ListImagesRequest(
            filter=api_pb2.ImageFilter(image=api_pb2.ImageSpec(image=tag))
        )
        await measure("ListImages, filter by tag", lambda: image.list_images(node, fl))
        print(f"\n## The handlers in process (best of 5 x {n} calls)\n")
        print("| call | µs per call |\n| --- | --- |")
        for label, us in results:
            print(f"| {label} | {us:.1f} |")
    finally:
        node.images.close()
        shutil.rmtree(tmp, ignore_errors=True)


def after_pauses(calls: int) -> None:
    """Version on a bare grpc.aio server (bench/call_floor.py's, no sycri) called after
    pauses of several lengths, interleaved: what waking the idle stack costs."""
    import grpc
    from sycri.api import api_pb2_grpc

    from bench.call_floor import fork_server, wait_ready

    sock = tempfile.mktemp(prefix="stc", suffix=".sock", dir="/tmp")
    pid = fork_server(sock, False, False)
    try:
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            wait_ready(stub)
            req = api_pb2.VersionRequest()
            ms: dict[float, list[float]] = {p: [] for p in (0, 0.001, 0.005, 0.02, 0.05, 0.2)}
            for _ in range(calls):
                for pause, out in ms.items():
                    time.sleep(pause)
                    t0 = time.perf_counter()
                    stub.Version(req)
                    out.append((time.perf_counter() - t0) * 1000)
        print(f"\n## Version on a bare grpc.aio server after a pause ({calls} calls each)\n")
        print("| pause before the call | median |\n| --- | --- |")
        for pause, out in ms.items():
            print(f"| {pause * 1000:.0f} ms | {statistics.median(out):.3f} ms |")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--in-process", type=int, default=2000, help="calls per block (0: skip)")
    ap.add_argument("--no-grpc", action="store_true", help="only the in-process figures")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:K=V")
    ap.add_argument("--pauses", type=int, default=0, help="calls per pause (0: skip)")
    args = ap.parse_args()
    if args.pauses:
        after_pauses(args.pauses)
    if not args.no_grpc:
        over_grpc(args.iterations, args.variant)
    if args.in_process:
        asyncio.run(in_process(args.in_process))
    return 0


def over_grpc(iterations: int, variant_args: list[str]) -> None:
    variants: list[tuple[str, dict[str, str]]] = [("sycri", {})]
    for v in variant_args:
        name, kv = v.split(":", 1)
        variants.append((name, dict([kv.split("=", 1)])))
    work = Path(f"/tmp/stc-{secrets.token_hex(3)}")  # short: conmon socket paths
    work.mkdir()
    reg = registry.start(work / "registry")
    try:
        busybox = oci.busybox_image()
        oci.push(reg, "bench/busybox", "v1", busybox)
        oci.push(reg, "cri-bench/busybox", "latest", busybox)
        run_image = f"{reg.host}/bench/busybox:v1"
        status_image = f"{reg.host}/cri-bench/busybox:latest"
        tm = Timings()
        with contextlib.ExitStack() as stack:
            targets = []
            for i, (name, env) in enumerate(variants):
                server, _net = stack.enter_context(
                    served(work / f"s{i}", flags=["--log-level", "info"], env=env)
                )
                img, rt = server.images(), server.runtime()
                img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=run_image)))
                targets.append((name, rt, img, work / f"s{i}" / "logs"))
            print(f"host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start")
            for it in range(iterations):
                order = targets if it % 2 == 0 else targets[::-1]
                for name, rt, img, logs in order:
                    image_round(tm, name, img, status_image)
                    container_round(tm, name, rt, run_image, logs)
            print(f"load {os.getloadavg()[0]:.2f} at end\n")
            print(f"## Over gRPC ({iterations} iterations, interleaved)\n")
            tm.table([name for name, *_ in targets])
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Stats for many containers from real cgroups, and container event latency.

Makes N real cgroups (cgroupfs layout: /sycri-bench-<t>/pod<i>/sycri-<i>), a few of
them with a process in them, each container with a small writable layer, and P real
network namespaces; then times, through a real gRPC socket and sycri's dispatcher:

- ListContainerStats and ListPodSandboxStats (median, p99),
- the pure cost of turning recorded cgroup text into figures (per container),
- GetContainerEvents: publish -> the client holds the event (median, p99).

Everything made is removed at the end.

    .venv/bin/python bench/stats.py [--containers 500] [--pods 50] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]  # run as a script from anywhere

import grpc  # noqa: E402
from sycri.api import api_pb2, api_pb2_grpc  # noqa: E402
from sycri.cri import events as cri_events  # noqa: E402
from sycri.cri import pod_metrics, stats  # noqa: E402
from sycri.cri.service import Dispatcher  # noqa: E402
from sycri.runtime.cgroups import cgroupstats  # noqa: E402
from sycri.runtime.events import ContainerEvent, ContainerEventType, EventBus  # noqa: E402
from sycri.runtime.stats.stats import ContainerInfo, PodInfo, StatsCollector  # noqa: E402

from bench.report import median_p99  # noqa: E402
from tests.support.stats_env import RealCgroup, RealNetns, StaticContainers, StaticPods, token  # noqa: E402


def parse_cost(rounds: int) -> float:
    d = os.path.join(
        os.path.dirname(__file__), "..", "tests", "unit", "data", "cgroup", "v1", "limited"
    )
    files = {}
    for n in os.listdir(d):
        with open(os.path.join(d, n)) as f:
            files[n] = f.read()
    t0 = time.perf_counter()
    for _ in range(rounds):
        cgroupstats.memory_v1(
            files["memory.usage_in_bytes"],
            files["memory.stat"],
            files["memory.limit_in_bytes"],
            files["memory.failcnt"],
            files["memory.oom_control"],
        )
        cgroupstats.cpu_v1(files["cpuacct.usage"])
    return (time.perf_counter() - t0) / rounds


async def main(n: int, npods: int, rounds: int) -> None:
    layout = cgroupstats.detect_layout()
    t = token()
    tmp = tempfile.mkdtemp(prefix="ntb")
    top = RealCgroup(layout, f"/sycri-bench-{t}")
    pods_cg: list[RealCgroup] = []
    ctr_cg: list[RealCgroup] = []
    nets: list[RealNetns] = []
    server = channel = None
    try:
        top.create()
        t0 = time.perf_counter()
        containers, pods = StaticContainers(), StaticPods()
        for p in range(npods):
            cg = RealCgroup(layout, f"{top.rel}/pod{p}").create()
            pods_cg.append(cg)
            ns = RealNetns.create()
            nets.append(ns)
            pid = f"{p:064x}"
            pods.items[pid] = PodInfo(pid, f"pod-{p}", "bench", f"uid-{p}",
                                      netns_path=ns.path, cgroup_path=cg.rel)  # fmt: skip
        for i in range(n):
            pod = pods_cg[i % npods]
            cg = RealCgroup(layout, f"{pod.rel}/sycri-{i}").create()
            ctr_cg.append(cg)
            if i % 50 == 0:
                cg.spawn("import time; b=bytearray(8<<20); time.sleep(600)")
            upper = os.path.join(tmp, f"u{i}")
            os.makedirs(os.path.join(upper, "etc"))
            for k in range(5):
                with open(os.path.join(upper, "etc", f"f{k}"), "wb") as f:
                    f.write(b"x" * 4096)
            cid = f"{i:064x}"
            containers.items[cid] = ContainerInfo(
                cid, f"{i % npods:064x}", f"c{i}", labels={"i": str(i)},
                cgroup_path=cg.rel, upper_dir=upper, running=True,
            )  # fmt: skip
        print(f"setup: {n} container cgroups, {npods} pods with netns in "
              f"{time.perf_counter() - t0:.1f} s ({layout.version=})")  # fmt: skip

        bus = EventBus(snapshot=cri_events.snapshotter(pods, containers))
        node = type("BenchNode", (), {})()
        node.containers, node.sandboxes, node.events = containers, pods, bus
        node.stats = StatsCollector("cgroupfs", layout, disk_max_age=0.0)
        server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
        handlers = {**stats.RPCS, **pod_metrics.RPCS, **cri_events.RPCS}
        server.add_generic_rpc_handlers(Dispatcher(node, handlers).generic_handlers())
        sock = os.path.join(tmp, "s.sock")
        server.add_insecure_port(f"unix:{sock}")
        await server.start()
        channel = grpc.aio.insecure_channel(
            f"unix:{sock}", options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        stub = api_pb2_grpc.RuntimeServiceStub(channel)

        async def timed(call, req, k: int) -> list[float]:
            out = []
            for _ in range(k):
                t1 = time.perf_counter()
                await call(req)
                out.append(time.perf_counter() - t1)
            return out

        print(f"ListContainerStats   ({n} containers, layer walk every call): "
              + median_p99(await timed(stub.ListContainerStats, api_pb2.ListContainerStatsRequest(), rounds)))  # fmt: skip
        node.stats.disk_max_age_ns = int(10e9)
        print(f"ListContainerStats   ({n} containers, layers cached 10 s):     "
              + median_p99(await timed(stub.ListContainerStats, api_pb2.ListContainerStatsRequest(), rounds)))  # fmt: skip
        print(f"ListPodSandboxStats  ({npods} pods, netns read each call):      "
              + median_p99(await timed(stub.ListPodSandboxStats, api_pb2.ListPodSandboxStatsRequest(), rounds)))  # fmt: skip
        print(f"ListPodSandboxMetrics({npods} pods / {n} containers):           "
              + median_p99(await timed(stub.ListPodSandboxMetrics, api_pb2.ListPodSandboxMetricsRequest(), rounds)))  # fmt: skip
        req = api_pb2.ContainerStatsRequest(container_id=f"{7:064x}")
        print("ContainerStats       (one container):                        "
              + median_p99(await timed(stub.ContainerStats, req, rounds * 5)))  # fmt: skip
        print(f"parsing one v1 container's cgroup text: {parse_cost(20000) * 1e6:.1f} us")

        call = stub.GetContainerEvents(api_pb2.GetEventsRequest())
        it = call.__aiter__()
        first = asyncio.ensure_future(it.__anext__())
        while bus.subscribers < 1:
            await asyncio.sleep(0.005)
        lat = []
        pid0 = next(iter(pods.items))
        for k in range(rounds * 10):
            t1 = time.perf_counter()
            bus.publish(ContainerEvent(f"{k:064x}", ContainerEventType.STOPPED, pid0))
            if k == 0:
                await first
            else:
                await it.__anext__()
            lat.append(time.perf_counter() - t1)
        call.cancel()
        print("event publish -> client has it (with pod + container statuses): " + median_p99(lat))
    finally:
        if channel is not None:
            await channel.close()
        if server is not None:
            await server.stop(0)
        for cg in ctr_cg + pods_cg + [top]:
            cg.remove()
        for ns in nets:
            ns.remove()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=500)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=30)
    a = ap.parse_args()
    asyncio.run(main(a.containers, a.pods, a.rounds))

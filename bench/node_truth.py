"""A real sycri with many real containers: list and stats latency, exit-to-event latency.

Starts docker-registry and sycri (runc, conmon, CNI bridge) on this host, runs P pods
with N sleeping busybox containers in all, then times through the socket:

- ListContainers, ListPodSandbox, ListContainerStats, ListPodSandboxStats (median, p99);
- restart: SIGTERM until the process exits, start until it serves, the first list;
- for E containers that exit on their own: conmon's exit time (the exit file's mtime,
  reported as finished_at) to the CONTAINER_STOPPED_EVENT's created_at, and to the
  moment the GetContainerEvents client holds the event.

Everything is removed at the end.

    .venv/bin/python bench/node_truth.py [--containers 100] [--pods 10] [--exits 10]
"""

from __future__ import annotations

import argparse
import queue
import secrets
import shutil
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]  # run as a script from anywhere

import grpc  # noqa: E402
from sycri.api import api_pb2  # noqa: E402

from bench.report import median_p99  # noqa: E402
from tests.support import oci  # noqa: E402
from tests.support import registry as registry_support  # noqa: E402
from tests.support.node import served  # noqa: E402
from tests.support.pods import pod_config  # noqa: E402


def timed(fn, req, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(req)
        out.append(time.perf_counter() - t0)
    return out


def main(n: int, npods: int, nexits: int, rounds: int) -> None:
    base = Path("/tmp") / f"synb-{secrets.token_hex(4)}"
    with ExitStack() as cleanup:
        reg = registry_support.start(base / "registry")
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        cleanup.callback(reg.stop)
        node = served(base / "sycri", forgiving=True)
        server, _net = cleanup.enter_context(node)
        rt = server.runtime()
        oci.push(reg, "bench/bb", "v1", oci.busybox_image(entrypoint=["/bin/sh", "-c"]))
        image = f"{reg.host}/bench/bb:v1"
        server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))

        def cfg(name: str, script: str) -> api_pb2.ContainerConfig:
            return api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name=name),
                image=api_pb2.ImageSpec(image=image),
                args=[script],
                log_path=f"{name}.log",
            )

        t0 = time.perf_counter()
        pods = []
        for p in range(npods):
            pc = pod_config(f"bench-{p}")
            pc.log_directory = str(base / "logs" / str(p))
            pods.append(
                (rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pc)).pod_sandbox_id, pc)
            )
        for i in range(n):
            pod, pc = pods[i % npods]
            req = api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod, config=cfg(f"c{i}", "exec sleep 3600"), sandbox_config=pc
            )
            cid = rt.CreateContainer(req).container_id
            rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        print(f"setup: {npods} pods, {n} running containers in {time.perf_counter() - t0:.1f} s")

        print(
            f"ListContainers       ({n}): "
            + median_p99(timed(rt.ListContainers, api_pb2.ListContainersRequest(), rounds))
        )
        print(
            f"ListPodSandbox       ({npods}): "
            + median_p99(timed(rt.ListPodSandbox, api_pb2.ListPodSandboxRequest(), rounds))
        )
        print(
            f"ListContainerStats   ({n}): "
            + median_p99(timed(rt.ListContainerStats, api_pb2.ListContainerStatsRequest(), rounds))
        )
        print(
            f"ListPodSandboxStats  ({npods}): "
            + median_p99(
                timed(rt.ListPodSandboxStats, api_pb2.ListPodSandboxStatsRequest(), rounds)
            )
        )

        # Restart: SIGTERM to serving again, then the first full list after it.
        t0 = time.perf_counter()
        server.stop()
        t1 = time.perf_counter()
        server.start(timeout=600)
        t2 = time.perf_counter()
        rt = server.runtime()
        listed = rt.ListContainers(api_pb2.ListContainersRequest()).containers
        t3 = time.perf_counter()
        running = sum(1 for c in listed if c.state == api_pb2.CONTAINER_RUNNING)
        print(f"restart with {n} containers: SIGTERM->exit {t1 - t0:.2f} s, start->serving "
              f"{t2 - t1:.2f} s, first ListContainers {1e3 * (t3 - t2):.0f} ms "
              f"({running} running)")  # fmt: skip

        events = rt.GetContainerEvents(api_pb2.GetEventsRequest())
        q: queue.Queue = queue.Queue()

        def read() -> None:
            try:
                for ev in events:
                    q.put((time.time_ns(), ev))
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        time.sleep(0.3)
        pod, pc = pods[0]
        exiters = []
        for i in range(nexits):
            req = api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod, config=cfg(f"x{i}", "sleep 1"), sandbox_config=pc
            )
            cid = rt.CreateContainer(req).container_id
            rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
            exiters.append(cid)
            time.sleep(0.15)
        stopped: dict[str, tuple[int, api_pb2.ContainerEventResponse]] = {}
        deadline = time.monotonic() + 30
        while len(stopped) < nexits and time.monotonic() < deadline:
            got_at, ev = q.get(timeout=30)
            if (
                ev.container_event_type == api_pb2.CONTAINER_STOPPED_EVENT
                and ev.container_id in exiters
            ):
                stopped[ev.container_id] = (got_at, ev)
        events.cancel()
        to_event, to_client = [], []
        for cid, (got_at, ev) in stopped.items():
            [st] = [s for s in ev.containers_statuses if s.id == cid]
            to_event.append((ev.created_at - st.finished_at) / 1e9)
            to_client.append((got_at - st.finished_at) / 1e9)
        print(f"exit -> STOPPED event created ({len(to_event)} exits): " + median_p99(to_event))
        print("exit -> event held by the client:            " + median_p99(to_client))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--exits", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    main(a.containers, a.pods, a.exits, a.rounds)

"""Streaming benchmarks: exec round-trip latency and port-forward throughput.

Run as root from the repository root: ``.venv/bin/python bench/streaming.py``.
A real ``sycri serve`` on a temporary socket running a pod with a busybox container
(image from a local registry), and a checksum server started inside the pod's
network namespace. Prints figures; asserts nothing about time.

- exec latency: ``echo`` through the Exec RPC + the WebSocket stream (Python
  kubernetes client), through crictl (Go client-go SPDY, includes crictl start-up),
  against bare ``runc exec`` (the floor).
- port-forward MB/s: crictl port-forward (client-go SPDY) carrying N MB each way on
  1 and on 10 parallel connections, against the same client run inside the
  namespace talking to the server directly (the floor).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from kubernetes.client import Configuration
from kubernetes.stream.ws_client import WSClient
from sycri.api import api_pb2

from tests.support import oci, registry, streaming_env
from tests.support.pods import PodNet, pod_config, unmount_all
from tests.support.server import SycriServer

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
MB = 1024 * 1024


def exchange(port: int, n_in: int, n_out: int) -> None:
    payload = os.urandom(min(n_in, MB))
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(f"{n_in} {n_out}\n".encode())
        sent = 0
        while sent < n_in:
            piece = payload[: min(len(payload), n_in - sent)]
            s.sendall(piece)
            sent += len(piece)
        s.shutdown(socket.SHUT_WR)
        got = 0
        while chunk := s.recv(1 << 20):
            got += len(chunk)
    if got != 128 + n_out:
        raise RuntimeError(f"short reply: {got} of {128 + n_out} bytes")


def parallel(port: int, conns: int, n: int) -> float:
    """MB/s moved (both directions together) by ``conns`` connections of n bytes each way."""
    errors: list[BaseException] = []

    def one() -> None:
        try:
            exchange(port, n, n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(conns)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return 2 * conns * n / MB / elapsed


def timed(fn, rounds: int = ROUNDS) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def show(label: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p90 = ms[int(len(ms) * 0.9) - 1] if len(ms) >= 10 else ms[-1]
    print(f"  {label:<44} median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms")


def main() -> None:
    if "--direct" in sys.argv:  # the floor, run inside the namespace
        port, conns, n = (int(x) for x in sys.argv[2:5])
        print(f"{parallel(port, conns, n):.1f}")
        return
    with tempfile.TemporaryDirectory(prefix="sycri-bench-", dir="/tmp") as tmpdir:
        tmp = Path(tmpdir)
        net = PodNet.new()
        reg = registry.start(tmp / "registry")
        sycri = SycriServer(tmp / "s", flags=net.flags()).start()
        try:
            c = start_pod(sycri, reg)
            bench_exec(sycri, c)
            with streaming_env.checksum_server(f"/proc/{c.pid}/ns/net") as port:
                bench_portforward(sycri, c, port)
        finally:
            rt = sycri.runtime()
            for pod in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
                rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id))
                rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
            sycri.stop()
            unmount_all(tmp)
            reg.stop()
            net.cleanup()


@dataclass
class Running:
    id: str
    pod: str
    pid: int
    root: str


def start_pod(sycri: SycriServer, reg) -> Running:
    oci.push(reg, "bench/busybox", "v1", oci.busybox_image(entrypoint=["/bin/sh", "-c"]))
    ref = f"{reg.host}/bench/busybox:v1"
    sycri.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)))
    rt = sycri.runtime()
    pod_cfg = pod_config("bench")
    pod_cfg.log_directory = str(sycri.base / "pods" / "bench")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="sleeper"),
        image=api_pb2.ImageSpec(image=ref),
        args=["sleep 3600"],
        log_path="sleeper/0.log",
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
    cid = rt.CreateContainer(req).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    root = str(sycri.base / "run" / "runtime" / "runc")
    state = subprocess.run(["runc", "--root", root, "state", cid], capture_output=True, check=True)
    return Running(cid, pod, json.loads(state.stdout)["pid"], root)


def bench_exec(sycri: SycriServer, c) -> None:
    rt = sycri.runtime()
    print(f"exec round trip, `echo hi`, {ROUNDS} rounds")

    def ws() -> None:
        url = rt.Exec(
            api_pb2.ExecRequest(container_id=c.id, cmd=["echo", "hi"], stdout=True, stderr=True)
        ).url
        client = WSClient(Configuration(), url.replace("http://", "ws://"), None, True)
        client.run_forever(timeout=30)
        if client.read_stdout() != "hi\n" or client.returncode != 0:
            raise RuntimeError("exec failed")

    def crictl() -> None:
        subprocess.run(
            ["crictl", "--runtime-endpoint", sycri.endpoint, "exec", c.id, "echo", "hi"],
            check=True,
            capture_output=True,
        )

    def bare() -> None:
        subprocess.run(
            ["runc", "--root", c.root, "exec", c.id, "echo", "hi"], check=True, capture_output=True
        )

    show("Exec RPC + WebSocket (python kubernetes)", timed(ws))
    show("crictl exec (client-go SPDY, with start-up)", timed(crictl))
    show("bare runc exec (floor)", timed(bare))


def bench_portforward(sycri: SycriServer, c: Running, port: int) -> None:
    local = streaming_env.free_port()
    proc = subprocess.Popen(
        ["crictl", "--runtime-endpoint", sycri.endpoint, "port-forward", c.pod,
         f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        streaming_env.wait_listening(local)
        print("port-forward throughput (MB/s, both directions together)")
        for conns, n in ((1, 100 * MB), (10, 20 * MB)):
            via = parallel(local, conns, n)
            direct = subprocess.run(
                ["nsenter", f"--net=/proc/{c.pid}/ns/net", sys.executable, __file__, "--direct",
                 str(port), str(conns), str(n)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()  # fmt: skip
            label = f"{conns} connection{'s' if conns > 1 else ''}, {n // MB} MB each way"
            print(f"  {label:<32} crictl port-forward {via:7.1f}   direct in netns {direct:>7}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()

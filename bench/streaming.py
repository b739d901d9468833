"""Streaming benchmarks: exec round-trip latency and port-forward throughput.

Run as root from the repository root: ``.venv/bin/python bench/streaming.py``.
A real ``sycri serve`` on a temporary socket running a pod with a busybox container
(image from a local registry), and a checksum server started inside the pod's
network namespace. Prints figures; asserts nothing about time.

- exec latency: ``echo`` through the Exec RPC + the WebSocket stream (Python
  kubernetes client), + SPDY (the protocol client in tests/support), through crictl
  (Go client-go SPDY, includes crictl start-up) when crictl is on PATH, against bare
  ``runc exec`` (the floor).
- port-forward MB/s: the SPDY client carrying N MB each way on 1 and on 10 parallel
  streams of one session, crictl port-forward (client-go SPDY, local TCP port) when
  crictl is on PATH, against the same TCP client run inside the namespace talking to
  the server directly (the floor).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
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

from tests.support import oci, registry, spdy_client, streaming_env
from tests.support.pods import PodNet, pod_config, unmount_all
from tests.support.server import SycriServer

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
MB = 1024 * 1024
HAVE_CRICTL = shutil.which("crictl") is not None


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

    def spdy() -> None:
        url = rt.Exec(
            api_pb2.ExecRequest(container_id=c.id, cmd=["echo", "hi"], stdout=True, stderr=True)
        ).url
        out, status = asyncio.run(spdy_exec(url))
        if out != b"hi\n" or spdy_client.exit_code(status) != 0:
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
    show("Exec RPC + SPDY (tests/support client)", timed(spdy))
    if HAVE_CRICTL:
        show("crictl exec (client-go SPDY, with start-up)", timed(crictl))
    else:
        print(f"  {'crictl exec':<44} not measured: crictl is not on PATH")
    show("bare runc exec (floor)", timed(bare))


async def spdy_exec(url: str) -> tuple[bytes, dict]:
    client, streams = await spdy_client.exec_session(
        url, stdin=False, stdout=True, stderr=True, tty=False
    )
    try:
        status = spdy_client.parse_status(await streams["error"].read_all())
        return await streams["stdout"].read_all(), status
    finally:
        await client.close()


async def spdy_parallel(url: str, port: int, conns: int, n: int) -> float:
    """MB/s moved (both directions together) by ``conns`` streams of one SPDY session."""
    client = await spdy_client.SpdyClient.connect(url, ["portforward.k8s.io"])
    try:
        pairs = []
        for rid in range(conns):
            headers = {"port": str(port), "requestid": str(rid)}
            error = await client.open_stream({"streamtype": "error", **headers})
            pairs.append((error, await client.open_stream({"streamtype": "data", **headers})))
        block = os.urandom(32 * 1024)

        async def one(data: spdy_client.ClientStream) -> None:
            await data.write(f"{n} {n}\n".encode())
            sent = 0
            while sent < n:
                piece = block[: min(len(block), n - sent)]
                await data.write(piece)
                sent += len(piece)
            await data.close()
            reply = await data.read_all(timeout=300)
            if len(reply) != 128 + n:
                raise RuntimeError(f"short reply: {len(reply)} of {128 + n} bytes")
            data.data.clear()  # a benchmark, not a test: do not keep 100 MB replies

        t0 = time.perf_counter()
        await asyncio.gather(*(one(data) for _error, data in pairs))
        elapsed = time.perf_counter() - t0
        for error, _data in pairs:
            if err := await error.read_all(timeout=10):
                raise RuntimeError(f"port-forward error: {err!r}")
        return 2 * conns * n / MB / elapsed
    finally:
        await client.close()


def bench_portforward(sycri: SycriServer, c: Running, port: int) -> None:
    rt = sycri.runtime()
    print("port-forward throughput (MB/s, both directions together)")
    proc = None
    local = 0
    if HAVE_CRICTL:
        local = streaming_env.free_port()
        proc = subprocess.Popen(
            ["crictl", "--runtime-endpoint", sycri.endpoint, "port-forward", c.pod,
             f"{local}:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        if proc:
            streaming_env.wait_listening(local)
        for conns, n in ((1, 100 * MB), (10, 20 * MB)):
            url = rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=c.pod)).url
            spdy = asyncio.run(spdy_parallel(url, port, conns, n))
            via = f"{parallel(local, conns, n):7.1f}" if proc else "not measured (no crictl)"
            direct = subprocess.run(
                ["nsenter", f"--net=/proc/{c.pid}/ns/net", sys.executable, __file__, "--direct",
                 str(port), str(conns), str(n)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()  # fmt: skip
            label = f"{conns} connection{'s' if conns > 1 else ''}, {n // MB} MB each way"
            print(
                f"  {label:<32} SPDY client {spdy:7.1f}   crictl port-forward {via}"
                f"   direct in netns {direct:>7}"
            )
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()

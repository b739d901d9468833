"""Pod sandbox start and teardown through the real server socket.

RunPodSandbox until the pod reports SANDBOX_READY, then Stop+Remove, for N pods with
the built-in CNI network and with host network; prints median and p95 (seconds).
Needs root. Usage: ``python bench/pods.py [--pods 50]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from sycri.api import api_pb2

from tests.support.pods import PodNet, pod_config, unmount_all
from tests.support.server import SycriServer


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def measure(server: SycriServer, pods: int, host_network: bool) -> tuple[list[float], list[float]]:
    rt = server.runtime()
    start, teardown = [], []
    for i in range(pods):
        cfg = pod_config(f"bench{i}", host_network=host_network)
        t0 = time.perf_counter()
        pod_id = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        st = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
        assert st.status.state == api_pb2.SANDBOX_READY
        start.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        teardown.append(time.perf_counter() - t0)
    return start, teardown


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pods", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sycri-bench-pods-") as tmp:
        base = Path(tmp)
        net = PodNet.new()
        conf = base / "net.d"
        conf.mkdir()
        server = SycriServer(
            base / "s", flags=[*net.flags(), "--cni-conf-dir", str(conf), "--log-level", "info"]
        ).start()
        try:
            print(f"pods={args.pods} (sequential, through the gRPC socket)")
            print(f"{'network':<14}{'phase':<22}{'median s':>10}{'p95 s':>10}")
            for label, host in (("default CNI", False), ("host network", True)):
                measure(server, 2, host)  # warm-up: bridge, iptables chains, imports
                run, rm = measure(server, args.pods, host)
                for phase, vals in (("RunPodSandbox→Ready", run), ("Stop+Remove", rm)):
                    print(
                        f"{label:<14}{phase:<22}{statistics.median(vals):>10.4f}{p95(vals):>10.4f}"
                    )
        finally:
            server.stop()
            unmount_all(base)
            net.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
